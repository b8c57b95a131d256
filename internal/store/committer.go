package store

import (
	"bytes"
	"context"
	"encoding"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

type commitReq struct {
	fn   func(tx *bolt.Tx) error
	done chan error
}

type stageKey struct{ bucket, key string }

// Commit runs fn inside the next group transaction and returns once that
// transaction is durable. fn may be run more than once (the batch is retried
// without a write that failed), so it must only write what it computed from
// the transaction it is given. An error returned by fn fails only this
// Commit; the other writes of the batch are committed without it.
func (db *DB) Commit(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	r := reqPool.Get().(*commitReq)
	r.fn = fn
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		r.release()
		return ErrClosed
	}
	select {
	case db.reqs <- r:
	case <-ctx.Done():
		db.closeMu.RUnlock()
		r.release()
		return ctx.Err()
	}
	db.closeMu.RUnlock()
	// Once queued, the write will happen; wait for it regardless of ctx so
	// the caller never reports failure for a write that became durable.
	err := <-r.done
	r.release() // the committer sends exactly once and forgets r
	return err
}

// reqPool recycles requests and their channels: one of each per write.
var reqPool = sync.Pool{New: func() any { return &commitReq{done: make(chan error, 1)} }}

func (r *commitReq) release() {
	r.fn = nil
	reqPool.Put(r)
}

// Bytes is a staged value that is already encoded.
type Bytes []byte

// MarshalBinary implements encoding.BinaryMarshaler.
func (b Bytes) MarshalBinary() ([]byte, error) { return b, nil }

// Stage queues a write-behind put (value != nil) or delete (value == nil).
// A later Stage of the same bucket and key replaces an earlier one that has
// not been written yet. The value is encoded by the committer when its
// transaction runs, so a put superseded before then (a QoS 1 message
// acknowledged within milliseconds) is never encoded at all; it must not
// change after the call.
func (db *DB) Stage(bucket []byte, key string, value encoding.BinaryMarshaler) {
	db.stageMu.Lock()
	db.staged[stageKey{string(bucket), key}] = value
	db.stageMu.Unlock()
	db.wake()
}

// StageDeletePrefix queues a write-behind delete of every key in bucket that
// starts with prefix. It supersedes earlier stages of such keys; later
// stages of them are written after it.
func (db *DB) StageDeletePrefix(bucket []byte, prefix string) {
	db.stageMu.Lock()
	for k := range db.staged {
		if k.bucket == string(bucket) && strings.HasPrefix(k.key, prefix) {
			delete(db.staged, k)
		}
	}
	db.prefixD = append(db.prefixD, stageKey{string(bucket), prefix})
	db.stageMu.Unlock()
	db.wake()
}

func (db *DB) wake() {
	select {
	case db.kick <- struct{}{}:
	default:
	}
}

// Scan calls fn for every key of bucket, in key order; key and value are
// valid only during the call.
func (db *DB) Scan(bucket []byte, fn func(key, value []byte) error) error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return errors.New("store: unknown bucket " + string(bucket))
		}
		return b.ForEach(fn)
	})
}

// Flush returns once everything staged before the call is durable.
func (db *DB) Flush(ctx context.Context) error {
	ch := make(chan error, 1)
	db.stageMu.Lock()
	db.flushes = append(db.flushes, ch)
	db.stageMu.Unlock()
	db.wake()
	select {
	case err := <-ch:
		return err
	case <-db.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run is the committer: one goroutine, one write transaction at a time.
func (db *DB) run() {
	defer close(db.done)
	for {
		var batch []*commitReq
		closing := false
		select {
		case r, ok := <-db.reqs:
			if !ok {
				closing = true
			} else {
				batch = append(batch, r)
			}
		case <-db.kick:
			// Only staged (write-behind) work: linger briefly so that puts
			// superseded by their delete (a QoS 1 message acknowledged
			// within milliseconds) never reach the disk. A synchronous
			// Commit arriving meanwhile ends the wait at once.
			if db.opts.StageLinger > 0 {
				select {
				case r, ok := <-db.reqs:
					if !ok {
						closing = true
					} else {
						batch = append(batch, r)
					}
				case <-time.After(db.opts.StageLinger):
				}
			}
		}
	drain:
		for !closing && len(batch) < db.opts.MaxBatch {
			select {
			case r, ok := <-db.reqs:
				if !ok {
					closing = true
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		db.commit(batch)
		if closing {
			db.commit(nil) // anything staged meanwhile
			return
		}
	}
}

// errWriteFailed marks a rollback caused by one request's fn.
var errWriteFailed = errors.New("store: write failed")

// commit writes the staged values and batch in one transaction, retrying
// without any request whose fn fails.
func (db *DB) commit(batch []*commitReq) {
	db.stageMu.Lock()
	staged, prefixD, flushes := db.staged, db.prefixD, db.flushes
	db.staged, db.prefixD, db.flushes = make(map[stageKey]encoding.BinaryMarshaler), nil, nil
	db.stageMu.Unlock()
	if len(batch) == 0 && len(staged) == 0 && len(prefixD) == 0 && len(flushes) == 0 {
		return
	}
	for {
		failed := -1
		var failErr error
		start := time.Now()
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			if db.opts.CommitFault != nil {
				if err := db.opts.CommitFault(); err != nil {
					return err
				}
			}
			for _, p := range prefixD {
				if err := deletePrefix(tx, p); err != nil {
					return err
				}
			}
			for k, v := range staged {
				b := tx.Bucket([]byte(k.bucket))
				if b == nil && v != nil {
					// A write-behind bucket (StageKV) not created yet.
					var err error
					if b, err = tx.CreateBucketIfNotExists([]byte(k.bucket)); err != nil {
						return err
					}
				}
				if b == nil {
					continue // deleting from a bucket that does not exist
				}
				if v == nil {
					if err := b.Delete([]byte(k.key)); err != nil {
						return err
					}
					continue
				}
				data, err := v.MarshalBinary()
				if err != nil {
					// One record that cannot be encoded must not cost the
					// others their write.
					db.opts.logEncode(k, err)
					continue
				}
				if err := b.Put([]byte(k.key), data); err != nil {
					return err
				}
			}
			for i, r := range batch {
				if err := r.fn(tx); err != nil {
					failed, failErr = i, err
					return errWriteFailed
				}
			}
			if len(batch) > 0 {
				// History past its limit goes a little with every batch.
				return trimHistoryLog(tx, &db.trimAt, 2*len(batch)+32)
			}
			return nil
		})
		if err == nil && db.unsafeOneSync {
			err = db.bolt.Sync()
		}
		if err == nil {
			// Waiters first: each is readied straight onto this P's run
			// queue; the metrics callback can wait.
			for _, r := range batch {
				r.done <- nil
			}
			for _, ch := range flushes {
				ch <- nil
			}
			if db.opts.OnCommit != nil {
				db.opts.OnCommit(time.Since(start), len(batch)+len(staged))
			}
			return
		}
		if failed >= 0 {
			batch[failed].done <- failErr
			batch = slices.Delete(batch, failed, failed+1)
			continue
		}
		// The transaction itself failed (disk full, I/O error): every writer
		// learns it; staged values go back unless a newer stage replaced them.
		if db.opts.OnCommitError != nil {
			db.opts.OnCommitError(err)
		}
		for _, r := range batch {
			r.done <- err
		}
		for _, ch := range flushes {
			ch <- err
		}
		db.stageMu.Lock()
		db.prefixD = append(prefixD, db.prefixD...)
		for k, v := range staged {
			if _, newer := db.staged[k]; !newer {
				db.staged[k] = v
			}
		}
		db.stageMu.Unlock()
		return
	}
}

func deletePrefix(tx *bolt.Tx, p stageKey) error {
	b := tx.Bucket([]byte(p.bucket))
	if b == nil {
		return errors.New("store: unknown bucket " + p.bucket)
	}
	prefix := []byte(p.key)
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Staged is how many write-behind values wait for the next commit.
func (db *DB) Staged() int {
	db.stageMu.Lock()
	defer db.stageMu.Unlock()
	return len(db.staged) + len(db.prefixD)
}
