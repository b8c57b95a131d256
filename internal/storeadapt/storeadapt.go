// Package storeadapt adapts the bbolt store to the storage interfaces the
// domain packages declare (shadow.Store, registry.Store, the shadow source
// the registry indexes at start). The domain packages know nothing of
// bbolt; the store knows nothing of them; this is the seam the broker (and
// tests that assemble the services themselves) put between them.
package storeadapt

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/umbra-iot/umbra/internal/clusterkv"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/shadow"
)

// ShadowStore is the shadow.Store over the bbolt store.
type ShadowStore struct {
	DB *store.DB
	// TombstoneTTL is how long a deleted shadow's version is kept (0: for ever).
	TombstoneTTL time.Duration
	// History is how many versions of history are kept per shadow (0: none).
	History int
}

// Key is the store key of a shadow.
func Key(r shadow.Ref) store.ShadowKey { return store.ShadowKey{Thing: r.Thing, Name: r.Name} }

// Load implements shadow.Store.
func (s ShadowStore) Load(ref shadow.Ref) (shadow.Current, error) {
	doc, v, err := s.DB.LoadShadow(Key(ref), s.TombstoneTTL, time.Now())
	return shadow.Current{Doc: doc, Version: v}, err
}

// Commit implements shadow.Store.
func (s ShadowStore) Commit(ctx context.Context, c shadow.Change) error {
	w := store.ShadowWrite{Key: Key(c.Ref), Doc: c.Doc, Version: c.Version, Time: c.Time, HistoryLimit: s.History}
	if s.History > 0 {
		w.History = c.History
		w.HistoryKind = store.HistoryUpdate
		if c.Op == shadow.OpDelete {
			w.HistoryKind = store.HistoryDelete
		}
	}
	return s.DB.CommitShadow(ctx, w)
}

// KV is a registry.Store over the store's named-bucket transactions.
type KV struct{ DB *store.DB }

// UpdateKV implements registry.Store.
func (s KV) UpdateKV(ctx context.Context, fn func(registry.KV) error) error {
	return s.DB.UpdateKV(ctx, func(kv store.KV) error { return fn(kv) })
}

// ViewKV implements registry.Store.
func (s KV) ViewKV(fn func(registry.KV) error) error {
	return s.DB.ViewKV(func(kv store.KV) error { return fn(kv) })
}

// StageKV implements registry.Store.
func (s KV) StageKV(bucket, key string, value []byte) { s.DB.StageKV(bucket, key, value) }

// Flush implements registry.Store.
func (s KV) Flush(ctx context.Context) error { return s.DB.Flush(ctx) }

// TxStore is the transactional named-bucket store shape every domain
// package's Store builds on: KV{DB} (bbolt) and ClusterKV{S} (the shared
// store of cluster mode, internal/clusterkv) both satisfy it.
type TxStore interface {
	UpdateKV(ctx context.Context, fn func(registry.KV) error) error
	ViewKV(fn func(registry.KV) error) error
}

// ClusterKV is a registry.Store (and TxStore) over cluster mode's shared
// transactional store.
type ClusterKV struct{ S *clusterkv.Store }

// UpdateKV implements registry.Store.
func (s ClusterKV) UpdateKV(ctx context.Context, fn func(registry.KV) error) error {
	return s.S.UpdateKV(ctx, func(kv clusterkv.KV) error { return fn(kv) })
}

// ViewKV implements registry.Store.
func (s ClusterKV) ViewKV(fn func(registry.KV) error) error {
	return s.S.ViewKV(func(kv clusterkv.KV) error { return fn(kv) })
}

// StageKV implements registry.Store.
func (s ClusterKV) StageKV(bucket, key string, value []byte) { s.S.StageKV(bucket, key, value) }

// Flush implements registry.Store.
func (s ClusterKV) Flush(ctx context.Context) error { return s.S.Flush(ctx) }

// ShadowSource lists stored shadows for the registry's index.
type ShadowSource struct{ DB *store.DB }

// ForEachShadow implements registry.ShadowSource.
func (s ShadowSource) ForEachShadow(fn func(ref shadow.Ref, doc []byte) error) error {
	return s.DB.ForEachShadow(func(k store.ShadowKey, doc []byte) error {
		return fn(shadow.Ref{Thing: k.Thing, Name: k.Name}, doc)
	})
}

// Buckets of the rollout engine's state.
const (
	bucketRollouts = "rollouts"
	bucketDevices  = "rollout_devices" // rollout id 0x00 thing → device record
	bucketJobs     = "jobs"
)

// RolloutStore is the rollout engine's rollout.Store, in buckets of its own
// in the broker's database (DB), or, when KV is set, in any TxStore: in
// cluster mode ClusterKV, so every node sees the same rollouts and jobs
// (buckets "rollouts", "rollout_devices", "jobs").
type RolloutStore struct {
	DB *store.DB
	KV TxStore // overrides DB when set
}

func (s RolloutStore) tx() TxStore {
	if s.KV != nil {
		return s.KV
	}
	return KV{DB: s.DB}
}

// RolloutChunk is how many device records one transaction of SaveRollout
// writes on a TxStore (KV set): cluster mode's transactions are bounded
// (clusterkv.Config.MaxBatch, 1000 by default).
const RolloutChunk = 900

// SaveRollout implements rollout.Store. On bbolt it is one transaction. On
// a TxStore (KV set) a save of more than RolloutChunk device records is
// several transactions, the header written in the last one: a failed save
// may have stored some device records (the engine keeps them dirty and
// saves them again), never a header without its devices.
func (s RolloutStore) SaveRollout(ctx context.Context, id string, header []byte, devices map[string][]byte) error {
	things := slices.Sorted(maps.Keys(devices))
	for s.KV != nil && len(things) > RolloutChunk {
		chunk := things[:RolloutChunk]
		things = things[RolloutChunk:]
		if err := s.KV.UpdateKV(ctx, func(kv registry.KV) error {
			for _, th := range chunk {
				if err := kv.Put(bucketDevices, id+"\x00"+th, devices[th]); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return s.tx().UpdateKV(ctx, func(kv registry.KV) error {
		if err := kv.Put(bucketRollouts, id, header); err != nil {
			return err
		}
		for _, th := range things {
			if err := kv.Put(bucketDevices, id+"\x00"+th, devices[th]); err != nil {
				return err
			}
		}
		return nil
	})
}

// SaveJob implements rollout.Store.
func (s RolloutStore) SaveJob(ctx context.Context, id string, job []byte) error {
	return s.tx().UpdateKV(ctx, func(kv registry.KV) error { return kv.Put(bucketJobs, id, job) })
}

// Load implements rollout.Store.
func (s RolloutStore) Load(rollout func(id string, header []byte, devices [][]byte) error, job func(id string, job []byte) error) error {
	return s.tx().ViewKV(func(kv registry.KV) error {
		err := kv.ForEach(bucketRollouts, "", func(id string, header []byte) error {
			var devices [][]byte
			if err := kv.ForEach(bucketDevices, id+"\x00", func(_ string, v []byte) error {
				devices = append(devices, v)
				return nil
			}); err != nil {
				return fmt.Errorf("rollout %s devices: %w", id, err)
			}
			return rollout(id, header, devices)
		})
		if err != nil {
			return err
		}
		return kv.ForEach(bucketJobs, "", job)
	})
}
