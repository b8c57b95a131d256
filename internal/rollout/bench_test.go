package rollout_test

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/rollout"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/shadow"
)

var jobThings = flag.Int("job.things", 10_000, "fleet size for BenchmarkJob (BENCHMARKS.md uses 100000)")

// BenchmarkJob measures a bulk configuration job writing a desired patch to
// every thing of a fleet: each write is a durable shadow update (fsync on,
// group commit) that publishes the thing's delta.
//
//	go test ./rollout -run '^$' -bench Job -benchtime 1x -job.things 100000
func BenchmarkJob(b *testing.B) {
	dir := b.TempDir()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	reg, err := registry.Open(registry.Config{Store: storeadapt.KV{DB: db}, Shadows: storeadapt.ShadowSource{DB: db}})
	if err != nil {
		b.Fatal(err)
	}
	deltas := &counter{}
	svc := shadow.NewService(shadow.Config{Store: storeadapt.ShadowStore{DB: db}, Publisher: deltas, OnEvent: reg.ShadowChanged})
	n := *jobThings
	var things []registry.NewThing
	for i := range n {
		things = append(things, registry.NewThing{Name: fmt.Sprintf("dev-%06d", i)})
	}
	if _, err := reg.CreateThings(context.Background(), things); err != nil {
		b.Fatal(err)
	}
	eng, err := rollout.Open(rollout.Config{Fleet: reg, Shadows: svc, Store: storeadapt.RolloutStore{DB: db}})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		j, err := eng.CreateJob(context.Background(), rollout.JobSpec{Name: "cfg", Target: "*", Patch: fmt.Appendf(nil, `{"telemetry_interval_s":%d}`, 300+i)})
		if err != nil || j.Progress.Applied != n {
			b.Fatalf("job: %+v %v", j.Progress, err)
		}
		el := time.Since(start)
		b.ReportMetric(el.Seconds(), "s/job")
		b.ReportMetric(float64(n)/el.Seconds(), "things/s")
	}
	b.ReportMetric(float64(deltas.deltas.Load())/float64(b.N), "deltas/job")
}
