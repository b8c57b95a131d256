package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ShadowKey names one shadow. Name is "" for the classic shadow. Neither part
// may contain a NUL byte (shadow names are validated long before storage).
type ShadowKey struct{ Thing, Name string }

func (k ShadowKey) bytes() []byte {
	b := make([]byte, 0, len(k.Thing)+1+len(k.Name))
	b = append(b, k.Thing...)
	b = append(b, 0)
	return append(b, k.Name...)
}

func parseShadowKey(b []byte) ShadowKey {
	t, n, _ := bytes.Cut(b, []byte{0})
	return ShadowKey{Thing: string(t), Name: string(n)}
}

// History record kinds; they order an update before a delete of the same version.
const (
	HistoryUpdate byte = 'u'
	HistoryDelete byte = 'x'
)

// ShadowWrite is one accepted shadow change.
type ShadowWrite struct {
	Key     ShadowKey
	Doc     []byte // new document; nil deletes the shadow and leaves a tombstone
	Version int64  // version of Doc, or the version at deletion
	Time    time.Time

	History      []byte // opaque history entry kept with the change; nil keeps none
	HistoryKind  byte   // HistoryUpdate or HistoryDelete
	HistoryLimit int    // versions of history kept per shadow; 0 keeps all
}

// LoadShadow returns the stored document, or when there is none the version
// of a tombstone younger than tombstoneTTL (0 when there is none).
func (db *DB) LoadShadow(k ShadowKey, tombstoneTTL time.Duration, now time.Time) (doc []byte, version int64, err error) {
	key := k.bytes()
	err = db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketShadows).Get(key); v != nil {
			doc = bytes.Clone(v)
			return nil
		}
		if v := tx.Bucket(bucketTombstones).Get(key); len(v) == 16 {
			deletedAt := time.Unix(int64(binary.BigEndian.Uint64(v[8:])), 0)
			if tombstoneTTL <= 0 || now.Sub(deletedAt) < tombstoneTTL {
				version = int64(binary.BigEndian.Uint64(v[:8]))
			}
		}
		return nil
	})
	return doc, version, err
}

// CommitShadow makes w durable (group-committed with other writes).
func (db *DB) CommitShadow(ctx context.Context, w ShadowWrite) error {
	key := w.Key.bytes()
	return db.Commit(ctx, func(tx *bolt.Tx) error {
		shadows, tombs := tx.Bucket(bucketShadows), tx.Bucket(bucketTombstones)
		if w.Doc == nil {
			if err := shadows.Delete(key); err != nil {
				return err
			}
			t := binary.BigEndian.AppendUint64(nil, uint64(w.Version))
			t = binary.BigEndian.AppendUint64(t, uint64(w.Time.Unix()))
			if err := tombs.Put(key, t); err != nil {
				return err
			}
		} else {
			if err := shadows.Put(key, w.Doc); err != nil {
				return err
			}
			if err := tombs.Delete(key); err != nil {
				return err
			}
		}
		if w.History == nil {
			return nil
		}
		return appendHistory(tx, key, w)
	})
}

func historyPrefix(key []byte) []byte { return append(append([]byte{}, key...), 0) }

// historyHeadKey is the key of a shadow's head record in bucketHistory
// (historylog.go). It sorts after the shadow's entries of the per-shadow
// layout (their keys continue the prefix with a version whose first byte is
// below 0xff).
func historyHeadKey(prefix []byte) []byte { return append(bytes.Clone(prefix), 0xff) }

// HistoryRecord is one stored history entry.
type HistoryRecord struct {
	Version int64
	Kind    byte
	Entry   []byte
}

// ShadowHistory returns up to limit entries, newest first, with a version
// below before (0 = from the newest): those the shadow's latest write kept
// (its HistoryLimit, counted back from the newest entry).
func (db *DB) ShadowHistory(k ShadowKey, before int64, limit int) ([]HistoryRecord, error) {
	prefix := historyPrefix(k.bytes())
	var out []HistoryRecord
	err := db.bolt.View(func(tx *bolt.Tx) error {
		hb := tx.Bucket(bucketHistory)
		if h, ok := readHead(hb.Get(historyHeadKey(prefix))); ok {
			out = chainHistory(hb, tx.Bucket(bucketHistoryLog), h, before, limit)
			return nil
		}
		// Not written since the log: the per-shadow layout.
		c := hb.Cursor()
		// Position on the first key past the wanted range, then step back.
		var bound []byte
		if before > 0 {
			bound = binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(before))
		} else {
			bound = append(bytes.Clone(prefix), 0xff)
		}
		key, _ := c.Seek(bound)
		var val []byte
		if key == nil {
			key, val = c.Last()
		} else {
			key, val = c.Prev()
		}
		for ; key != nil && bytes.HasPrefix(key, prefix) && (limit <= 0 || len(out) < limit); key, val = c.Prev() {
			if len(key) != len(prefix)+9 {
				continue
			}
			out = append(out, HistoryRecord{
				Version: int64(binary.BigEndian.Uint64(key[len(prefix):])),
				Kind:    key[len(key)-1],
				Entry:   bytes.Clone(val),
			})
		}
		return nil
	})
	return out, err
}

// ListNamedShadows returns up to limit named shadow names of thing (never
// the classic shadow) in name order, starting after the name after.
// next is the last name returned when more may follow.
func (db *DB) ListNamedShadows(thing, after string, limit int) (names []string, next string, err error) {
	prefix := ShadowKey{Thing: thing}.bytes()
	err = db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketShadows).Cursor()
		start := ShadowKey{Thing: thing, Name: after}.bytes()
		k, _ := c.Seek(start)
		if after != "" && k != nil && bytes.Equal(k, start) {
			k, _ = c.Next()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			name := string(k[len(prefix):])
			if name == "" {
				continue
			}
			if len(names) == limit {
				next = names[len(names)-1]
				return nil
			}
			names = append(names, name)
		}
		return nil
	})
	return names, next, err
}

// ForEachShadow calls fn for every stored shadow in key order. doc is only
// valid during the call.
func (db *DB) ForEachShadow(fn func(k ShadowKey, doc []byte) error) error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketShadows).ForEach(func(k, v []byte) error {
			if strings.IndexByte(string(k), 0) < 0 {
				return nil
			}
			return fn(parseShadowKey(k), v)
		})
	})
}
