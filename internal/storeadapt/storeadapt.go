// Package storeadapt adapts the bbolt store to the storage interfaces the
// domain packages declare (shadow.Store, registry.Store, the shadow source
// the registry indexes at start). The domain packages know nothing of
// bbolt; the store knows nothing of them; this is the seam the broker (and
// tests that assemble the services themselves) put between them.
package storeadapt

import (
	"context"
	"time"

	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/shadow"
	"github.com/umbra-iot/umbra/store"
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

// KV is a registry.Store (also the rollout engine's) over the store's
// named-bucket transactions.
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

// ShadowSource lists stored shadows for the registry's index.
type ShadowSource struct{ DB *store.DB }

// ForEachShadow implements registry.ShadowSource.
func (s ShadowSource) ForEachShadow(fn func(ref shadow.Ref, doc []byte) error) error {
	return s.DB.ForEachShadow(func(k store.ShadowKey, doc []byte) error {
		return fn(shadow.Ref{Thing: k.Thing, Name: k.Name}, doc)
	})
}
