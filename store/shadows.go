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
		return putHistory(tx.Bucket(bucketHistory), key, w)
	})
}

func historyPrefix(key []byte) []byte { return append(append([]byte{}, key...), 0) }

// historyLimitKey is the key of a shadow's retention record: the history
// limit of its latest write (8 bytes, big endian). It sorts after every
// entry of the shadow (entry keys continue the prefix with a version whose
// first byte is below 0xff), so it shares a leaf page with the newest
// entries, which an update writes anyway.
func historyLimitKey(prefix []byte) []byte { return append(bytes.Clone(prefix), 0xff) }

// historySlack is how many versions past its limit a shadow's history may
// keep on disk before they are deleted, all in one go: trimming a run of
// adjacent keys once per slack updates dirties about one page, where a
// delete per update dirtied the page of the oldest entry every time. Reads
// never return them (ShadowHistory applies the limit).
func historySlack(limit int) uint64 { return uint64(min(max(limit/4, 4), 64)) }

func putHistory(b *bolt.Bucket, key []byte, w ShadowWrite) error {
	prefix := historyPrefix(key)
	// A version sequence starting afresh (first write, or after a tombstone
	// expired) must not interleave with entries of an earlier incarnation.
	var floor uint64
	dropAll := w.Version == 1 && w.HistoryKind == HistoryUpdate
	if w.HistoryLimit > 0 && w.Version > int64(w.HistoryLimit) {
		floor = uint64(w.Version) - uint64(w.HistoryLimit)
	}
	if dropAll || floor > 0 {
		c := b.Cursor()
		k, _ := c.Seek(prefix)
		// Versions at or below floor are hidden from reads; delete them once
		// slack of them have accumulated (or all, for a new incarnation).
		if k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+9 &&
			(dropAll || binary.BigEndian.Uint64(k[len(prefix):])+historySlack(w.HistoryLimit) <= floor) {
			for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
				if len(k) != len(prefix)+9 || (!dropAll && binary.BigEndian.Uint64(k[len(prefix):]) > floor) {
					break
				}
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
	}
	lk := historyLimitKey(prefix)
	if old := b.Get(lk); w.HistoryLimit > 0 {
		if len(old) != 8 || binary.BigEndian.Uint64(old) != uint64(w.HistoryLimit) {
			if err := b.Put(lk, binary.BigEndian.AppendUint64(nil, uint64(w.HistoryLimit))); err != nil {
				return err
			}
		}
	} else if old != nil {
		if err := b.Delete(lk); err != nil {
			return err
		}
	}
	hk := binary.BigEndian.AppendUint64(prefix, uint64(w.Version))
	hk = append(hk, w.HistoryKind)
	return b.Put(hk, w.History)
}

// HistoryRecord is one stored history entry.
type HistoryRecord struct {
	Version int64
	Kind    byte
	Entry   []byte
}

// ShadowHistory returns up to limit entries, newest first, with a version
// below before (0 = from the newest). Only the versions the shadow's latest
// write kept (its HistoryLimit, counted back from the newest entry) are
// returned; older ones may still be stored until they are trimmed.
func (db *DB) ShadowHistory(k ShadowKey, before int64, limit int) ([]HistoryRecord, error) {
	prefix := historyPrefix(k.bytes())
	var out []HistoryRecord
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHistory)
		c := b.Cursor()
		// The newest entry and the retention limit give the oldest version
		// still visible.
		var floor uint64
		lk := historyLimitKey(prefix)
		if lim := b.Get(lk); len(lim) == 8 && binary.BigEndian.Uint64(lim) > 0 {
			key, _ := c.Seek(lk)
			if key == nil {
				key, _ = c.Last()
			} else {
				key, _ = c.Prev()
			}
			for ; key != nil && bytes.HasPrefix(key, prefix); key, _ = c.Prev() {
				if len(key) == len(prefix)+9 {
					if newest, keep := binary.BigEndian.Uint64(key[len(prefix):]), binary.BigEndian.Uint64(lim); newest > keep {
						floor = newest - keep
					}
					break
				}
			}
		}
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
			v := binary.BigEndian.Uint64(key[len(prefix):])
			if v <= floor {
				break
			}
			out = append(out, HistoryRecord{
				Version: int64(v),
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
