package store

import (
	"bytes"
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// Shadow history is an append-only log: bucketHistoryLog holds every entry
// under a global sequence number, so the entries of one group commit go to
// the same last pages whatever shadows they belong to. Each record points to
// the previous record of its shadow; the shadow's head record (in
// bucketHistory, under historyHeadKey) names its newest record, its newest
// version, its retention limit and the first record of its current
// incarnation. Reads walk the chain from the head; records past the limit
// or of an earlier incarnation are deleted in batches by trimHistoryLog.
//
// Files written before the log keep entries in bucketHistory under
// (shadow key, version, kind); such a shadow is read from there until its
// next write carries them into the log.

// historyHead is a shadow's head record.
type historyHead struct {
	seq     uint64 // newest record (0: none)
	version uint64 // its version
	limit   uint64 // versions kept (0: all)
	start   uint64 // first record of the current incarnation
}

const headLen = 32

func readHead(v []byte) (historyHead, bool) {
	if len(v) != headLen {
		return historyHead{}, false
	}
	be := binary.BigEndian
	return historyHead{seq: be.Uint64(v), version: be.Uint64(v[8:]), limit: be.Uint64(v[16:]), start: be.Uint64(v[24:])}, true
}

func (h historyHead) bytes() []byte {
	b := make([]byte, 0, headLen)
	for _, x := range []uint64{h.seq, h.version, h.limit, h.start} {
		b = binary.BigEndian.AppendUint64(b, x)
	}
	return b
}

// floor is the newest version no longer kept (0: every version is kept).
func (h historyHead) floor() uint64 {
	if h.limit > 0 && h.version > h.limit {
		return h.version - h.limit
	}
	return 0
}

// logRecord is one history entry in the log:
// kind(1) version(8) prev(8) key length(2) shadow key, entry.
type logRecord struct {
	kind          byte
	version, prev uint64
	key, entry    []byte
}

const recordHead = 19

func parseRecord(v []byte) (logRecord, bool) {
	if len(v) < recordHead {
		return logRecord{}, false
	}
	n := int(binary.BigEndian.Uint16(v[17:]))
	if len(v) < recordHead+n {
		return logRecord{}, false
	}
	return logRecord{kind: v[0], version: binary.BigEndian.Uint64(v[1:]), prev: binary.BigEndian.Uint64(v[9:]),
		key: v[recordHead : recordHead+n], entry: v[recordHead+n:]}, true
}

func (r logRecord) bytes() []byte {
	b := make([]byte, 0, recordHead+len(r.key)+len(r.entry))
	b = append(b, r.kind)
	b = binary.BigEndian.AppendUint64(b, r.version)
	b = binary.BigEndian.AppendUint64(b, r.prev)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.key)))
	b = append(b, r.key...)
	return append(b, r.entry...)
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// nextSeq is the log's next sequence number: past the bucket's sequence and
// past its last key, so that a copy of the file that lost the bucket's
// sequence (a salvage) never reuses the key of a kept entry.
func nextSeq(lb *bolt.Bucket) (uint64, error) {
	seq := lb.Sequence()
	if k, _ := lb.Cursor().Last(); len(k) == 8 {
		seq = max(seq, binary.BigEndian.Uint64(k))
	}
	seq++
	return seq, lb.SetSequence(seq)
}

// appendHistory appends w's history entry to the log and moves the shadow's
// head to it.
func appendHistory(tx *bolt.Tx, key []byte, w ShadowWrite) error {
	hb, lb := tx.Bucket(bucketHistory), tx.Bucket(bucketHistoryLog)
	lb.FillPercent = 1 // only ever appended to: fill each page
	prefix := historyPrefix(key)
	hk := historyHeadKey(prefix)
	// A version sequence starting afresh (first write, or after a tombstone
	// expired) must not show entries of an earlier incarnation.
	restart := w.Version == 1 && w.HistoryKind == HistoryUpdate
	h, ok := readHead(hb.Get(hk))
	if !ok {
		var err error
		if h, err = carryLegacy(hb, lb, prefix, key, restart, w); err != nil {
			return err
		}
	}
	seq, err := nextSeq(lb)
	if err != nil {
		return err
	}
	rec := logRecord{kind: w.HistoryKind, version: uint64(w.Version), prev: h.seq, key: key, entry: w.History}
	if restart || h.seq == 0 {
		rec.prev, h.start = 0, seq
	}
	if err := lb.Put(seqKey(seq), rec.bytes()); err != nil {
		return err
	}
	h.seq, h.version, h.limit = seq, uint64(w.Version), uint64(max(w.HistoryLimit, 0))
	return hb.Put(hk, h.bytes())
}

// carryLegacy moves a shadow's entries of the per-shadow layout (files
// written before the log) into the log, oldest first, and returns the head
// they make. Entries the write w no longer keeps are dropped.
func carryLegacy(hb, lb *bolt.Bucket, prefix, key []byte, restart bool, w ShadowWrite) (historyHead, error) {
	var h historyHead
	var floor uint64
	if w.HistoryLimit > 0 && w.Version > int64(w.HistoryLimit) {
		floor = uint64(w.Version) - uint64(w.HistoryLimit)
	}
	var old [][]byte
	c := hb.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != len(prefix)+9 {
			continue
		}
		old = append(old, bytes.Clone(k))
		version := binary.BigEndian.Uint64(k[len(prefix):])
		if restart || version <= floor {
			continue
		}
		seq, err := nextSeq(lb)
		if err != nil {
			return h, err
		}
		rec := logRecord{kind: k[len(k)-1], version: version, prev: h.seq, key: key, entry: v}
		if err := lb.Put(seqKey(seq), rec.bytes()); err != nil {
			return h, err
		}
		if h.seq == 0 {
			h.start = seq
		}
		h.seq, h.version = seq, version
	}
	for _, k := range old {
		if err := hb.Delete(k); err != nil {
			return h, err
		}
	}
	return h, nil
}

// trimHistoryLog examines up to budget records of the log from *pos on
// (wrapping at the end) and deletes those their shadow no longer keeps. It
// runs in the committer's transactions, a little with every batch, so the
// deletes of many updates share pages.
func trimHistoryLog(tx *bolt.Tx, pos *[]byte, budget int) error {
	hb, lb := tx.Bucket(bucketHistory), tx.Bucket(bucketHistoryLog)
	c := lb.Cursor()
	var k, v []byte
	if *pos != nil {
		k, v = c.Seek(*pos)
	}
	if k == nil {
		k, v = c.First()
	}
	var dead [][]byte
	var hk []byte // one head key buffer for the whole visit (bbolt's Get keeps no key)
	for n := 0; k != nil && n < budget; k, v = c.Next() {
		n++
		rec, ok := parseRecord(v)
		if !ok {
			continue // not ours to judge
		}
		hk = append(append(append(hk[:0], rec.key...), 0), 0xff) // historyHeadKey(historyPrefix(rec.key))
		h, ok := readHead(hb.Get(hk))
		if seq := binary.BigEndian.Uint64(k); !ok || seq < h.start || rec.version <= h.floor() {
			dead = append(dead, bytes.Clone(k))
		}
	}
	if k == nil {
		*pos = nil
	} else {
		*pos = bytes.Clone(k)
	}
	for _, d := range dead {
		if err := lb.Delete(d); err != nil {
			return err
		}
	}
	return nil
}

// chainHistory reads a shadow's history from the log (see ShadowHistory).
func chainHistory(hb, lb *bolt.Bucket, h historyHead, before int64, limit int) []HistoryRecord {
	var out []HistoryRecord
	floor := h.floor()
	for seq := h.seq; seq != 0 && seq >= h.start && (limit <= 0 || len(out) < limit); {
		rec, ok := parseRecord(lb.Get(seqKey(seq)))
		if !ok || rec.version <= floor {
			break
		}
		if before <= 0 || rec.version < uint64(before) {
			out = append(out, HistoryRecord{Version: int64(rec.version), Kind: rec.kind, Entry: bytes.Clone(rec.entry)})
		}
		if rec.prev >= seq {
			break // a chain only goes back
		}
		seq = rec.prev
	}
	return out
}
