package store

import (
	"bytes"
	"context"
	"errors"

	bolt "go.etcd.io/bbolt"
)

// KV is a transaction over named buckets for domain packages that keep
// their own record encoding (the registry). Buckets are created on first
// write; a bucket never written reads as empty. Values returned by Get and
// passed to ForEach are copies.
type KV interface {
	Get(bucket, key string) []byte
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	ForEach(bucket, prefix string, fn func(key string, value []byte) error) error
	ForEachFrom(bucket, start string, fn func(key string, value []byte) error) error
}

// UpdateKV runs fn in the next group transaction; it returns once the
// transaction is durable. An error from fn discards fn's writes only.
func (db *DB) UpdateKV(ctx context.Context, fn func(KV) error) error {
	return db.Commit(ctx, func(tx *bolt.Tx) error { return fn(kvTx{tx}) })
}

// ViewKV runs fn in a read-only transaction.
func (db *DB) ViewKV(fn func(KV) error) error {
	return db.bolt.View(func(tx *bolt.Tx) error { return fn(kvTx{tx}) })
}

type kvTx struct{ tx *bolt.Tx }

var errReadOnly = errors.New("store: write in a read-only transaction")

func (t kvTx) Get(bucket, key string) []byte {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return bytes.Clone(b.Get([]byte(key)))
}

func (t kvTx) Put(bucket, key string, value []byte) error {
	if !t.tx.Writable() {
		return errReadOnly
	}
	b, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return err
	}
	return b.Put([]byte(key), value)
}

func (t kvTx) Delete(bucket, key string) error {
	if !t.tx.Writable() {
		return errReadOnly
	}
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.Delete([]byte(key))
}

func (t kvTx) ForEach(bucket, prefix string, fn func(key string, value []byte) error) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	c := b.Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := fn(string(k), bytes.Clone(v)); err != nil {
			return err
		}
	}
	return nil
}

// StageKV queues a write-behind put (value != nil) or delete in a named
// bucket, creating it if needed when written.
func (db *DB) StageKV(bucket, key string, value []byte) {
	if value == nil {
		db.Stage([]byte(bucket), key, nil)
		return
	}
	db.Stage([]byte(bucket), key, Bytes(value))
}

// ForEachFrom calls fn for the keys of bucket from start on, in key order,
// until fn returns an error, which it returns.
func (t kvTx) ForEachFrom(bucket, start string, fn func(key string, value []byte) error) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	c := b.Cursor()
	for k, v := c.Seek([]byte(start)); k != nil; k, v = c.Next() {
		if err := fn(string(k), bytes.Clone(v)); err != nil {
			return err
		}
	}
	return nil
}

// TxID is the id of the last committed transaction this one sees (not
// counting a clean Close's own). Every commit increments it, so a value
// derived from the store (the registry's index snapshot) can say which
// state it was derived from.
func (t kvTx) TxID() uint64 { return txID(t.tx) }

// BucketRoot is the root page of a bucket (0 when it does not exist or is
// small enough to live inline in its parent).
func (t kvTx) BucketRoot(bucket string) uint64 {
	if b := t.tx.Bucket([]byte(bucket)); b != nil {
		return uint64(b.Root())
	}
	return 0
}
