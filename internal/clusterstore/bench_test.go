package clusterstore_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/umbra-iot/umbra/internal/clusterstore"
	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/shadow"
)

// BenchmarkUpdateR3 measures accepted updates through one shadow.Service on
// the KV engine in a 3-node in-process cluster (R3, SyncAlways), each
// goroutine on its own shadow. Not a performance assertion; the figure for
// BENCHMARKS.md comes from `umbra bench` once cluster mode is wired.
func BenchmarkUpdateR3(b *testing.B) {
	c := natstest.StartCluster(b, 3)
	svc := shadow.NewService(shadow.Config{Store: openStore(b, c, 0, clusterstore.Config{})})
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ref := shadow.Ref{Thing: "bench-" + strconv.FormatInt(next.Add(1), 10)}
		for pb.Next() {
			r := svc.Handle(context.Background(), shadow.Request{Ref: ref, Op: shadow.OpUpdate, Origin: shadow.OriginInternal,
				Payload: []byte(`{"state":{"reported":{"fw":"2.1.3","rssi":-60}}}`)})
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	})
}
