package store

import (
	"bytes"
	"context"

	bolt "go.etcd.io/bbolt"
)

// PutDeviceSecret stores (or replaces) the bcrypt hash of a thing's secret,
// durably.
func (db *DB) PutDeviceSecret(ctx context.Context, thing string, hash []byte) error {
	return db.Commit(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSecrets).Put([]byte(thing), hash)
	})
}

// DeleteDeviceSecret removes a thing's secret; it reports whether there was one.
func (db *DB) DeleteDeviceSecret(ctx context.Context, thing string) (existed bool, err error) {
	err = db.Commit(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSecrets)
		existed = b.Get([]byte(thing)) != nil
		return b.Delete([]byte(thing))
	})
	return existed, err
}

// DeviceSecret returns the stored hash of a thing's secret.
func (db *DB) DeviceSecret(thing string) (hash []byte, ok bool, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketSecrets).Get([]byte(thing)); v != nil {
			hash, ok = bytes.Clone(v), true
		}
		return nil
	})
	return hash, ok, err
}
