package broker

import (
	"context"
	"time"
)

// IndexSnapshotFile is the registry's fleet index snapshot in the data
// directory: written at shutdown, read at start instead of rebuilding the
// index from every thing and shadow when the store has not changed since
// (registry.Config.SnapshotPath). Deleting it only makes the next start
// slower.
const IndexSnapshotFile = "registry.index"

// saveIndex writes the fleet index snapshot once nothing writes any more:
// after connections and HTTP requests have ended and every background
// goroutine (the rollout and jobs loops among them) has returned: Shutdown
// calls it only then (a change committed but not yet indexed would be
// missing from it). A failure only costs the next start a rebuild.
func (b *Broker) saveIndex(ctx context.Context) {
	if b.registry == nil {
		return
	}
	start := time.Now()
	if err := b.registry.SaveSnapshot(ctx); err != nil {
		b.log.Warn("fleet index snapshot not written; the next start rebuilds the index", "error", err)
		return
	}
	b.log.Info("fleet index snapshot written", "took", time.Since(start).Round(time.Millisecond))
}
