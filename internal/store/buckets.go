package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Buckets. Each holds one kind of record; keys never mix kinds, so prefix
// scans cannot stray into another kind's keys.
var (
	bucketMeta       = []byte("meta")
	bucketShadows    = []byte("shadows")        // refKey → stored document
	bucketTombstones = []byte("tombstones")     // refKey → version(8) deletedAt(8)
	bucketHistory    = []byte("history")        // refKey 0x00 0xff → head record; before the log also refKey 0x00 version(8) kind(1) → entry
	bucketHistoryLog = []byte("history_log")    // sequence(8) → history record (historylog.go)
	bucketSecrets    = []byte("device_secrets") // thing → bcrypt hash

	// MQTT session state (write-behind).
	BucketClients       = []byte("mqtt_clients")       // client id → client record
	BucketSubscriptions = []byte("mqtt_subscriptions") // client id 0x00 filter → subscription
	BucketRetained      = []byte("mqtt_retained")      // topic → message
	BucketInflight      = []byte("mqtt_inflight")      // client id 0x00 packet id(2) → message

	// laterBuckets are created by Open in files that predate them; a check
	// of a file not opened since does not require them.
	laterBuckets = [][]byte{bucketHistoryLog}

	allBuckets = [][]byte{
		bucketMeta, bucketShadows, bucketTombstones, bucketHistory, bucketSecrets,
		BucketClients, BucketSubscriptions, BucketRetained, BucketInflight,
	}
)

// schemaVersion is the layout this code reads and writes.
const schemaVersion = 1

var keySchema = []byte("schema")

// migrate records the schema version of a new file and refuses a file
// written by a newer Umbra, whose layout this code cannot know.
func migrate(tx *bolt.Tx) error {
	b := tx.Bucket(bucketMeta)
	v := b.Get(keySchema)
	if v == nil {
		return b.Put(keySchema, binary.BigEndian.AppendUint64(nil, schemaVersion))
	}
	if len(v) != 8 {
		return fmt.Errorf("corrupt schema version record (%d bytes)", len(v))
	}
	if got := binary.BigEndian.Uint64(v); got > schemaVersion {
		return fmt.Errorf("database schema %d is newer than this Umbra understands (%d); upgrade Umbra", got, schemaVersion)
	}
	return nil
}
