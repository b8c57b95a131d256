package registry_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/fleetfixture"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/registry/query"
)

var benchThings = flag.Int("registry.things", 100_000, "fleet size for the registry benchmarks (BENCHMARKS.md uses 1000000)")

var (
	benchOnce sync.Once
	benchDir  string
	benchLoad time.Duration
)

// benchFleet writes a fleet of *benchThings things, each with attributes
// and a classic shadow, into a data directory shared by the benchmarks.
func benchFleet(b *testing.B) string {
	benchOnce.Do(func() {
		dir, err := mkTemp()
		if err != nil {
			b.Fatal(err)
		}
		benchDir = dir
		if err := fleetfixture.Write(dir, *benchThings, b.Logf); err != nil {
			b.Fatal(err)
		}
	})
	return benchDir
}

var (
	regOnce    sync.Once
	benchReg   *registry.Registry
	benchStore storeadapt.KV
)

// benchRegistry opens the fleet once and measures start-up (index build).
func benchRegistry(b *testing.B) *registry.Registry {
	dir := benchFleet(b)
	regOnce.Do(func() {
		db, err := store.Open(dir, store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		benchStore = storeadapt.KV{DB: db}
		start := time.Now()
		benchReg, err = registry.Open(registry.Config{Store: storeadapt.KV{DB: db}, Shadows: storeadapt.ShadowSource{DB: db}, SnapshotPath: filepath.Join(dir, "registry.index")})
		if err != nil {
			b.Fatal(err)
		}
		benchLoad = time.Since(start)
	})
	return benchReg
}

// BenchmarkRegistryStartup reports how long opening the registry (loading
// things and building the index over every shadow) took.
//
//	go test ./registry -run '^$' -bench Registry -benchtime 20x -registry.things 1000000
func BenchmarkRegistryStartup(b *testing.B) {
	benchRegistry(b)
	for range b.N {
	}
	b.ReportMetric(benchLoad.Seconds(), "s-startup")
	b.ReportMetric(float64(*benchThings), "things")
}

// BenchmarkRegistrySnapshot writes the index snapshot of the fleet and
// reports how long writing it took and how long opening the registry from
// it takes (what a start after a clean shutdown costs).
func BenchmarkRegistrySnapshot(b *testing.B) {
	reg := benchRegistry(b)
	dir := benchFleet(b)
	start := time.Now()
	if err := reg.SaveSnapshot(context.Background()); err != nil {
		b.Fatal(err)
	}
	save := time.Since(start)
	fi, err := os.Stat(filepath.Join(dir, "registry.index"))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		// The benchmark registry holds the store open: read through it.
		r, err := registry.Open(registry.Config{Store: benchStore, SnapshotPath: filepath.Join(dir, "registry.index")})
		if err != nil {
			b.Fatal(err)
		}
		if r.IndexSource() != "snapshot" {
			b.Fatalf("index from %s", r.IndexSource())
		}
	}
	b.ReportMetric(save.Seconds(), "s-save")
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB-file")
}

func BenchmarkRegistryQuery(b *testing.B) {
	reg := benchRegistry(b)
	for _, c := range []struct{ name, q string }{
		{"attribute-equality", "attributes.location:factory-C"},
		{"reported-equality", "shadow.reported.firmware_version:2.1.3"},
		{"seed-example", "attributes.location:factory-A AND shadow.reported.firmware_version:2.1.3"},
		{"ring", "attributes.deployment_ring:canary"},
		{"version-range", "shadow.reported.firmware_version<2.2.0"},
		{"numeric-range", "shadow.reported.battery:[80 TO 100]"},
	} {
		q, err := query.Parse(c.q)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name+"/count", func(b *testing.B) {
			var n uint64
			for range b.N {
				n = reg.Count(q)
			}
			b.ReportMetric(float64(n), "matches")
		})
		b.Run(c.name+"/first-page", func(b *testing.B) {
			for range b.N {
				reg.Search(q, "", 100)
			}
		})
	}
}

func BenchmarkRegistryBuckets(b *testing.B) {
	reg := benchRegistry(b)
	all, _ := query.Parse("*")
	factoryA, _ := query.Parse("attributes.location:factory-A")
	for _, c := range []struct {
		name  string
		q     *query.Query
		field string
	}{
		{"firmware-all", all, "shadow.reported.firmware_version"},
		{"firmware-factory-A", factoryA, "shadow.reported.firmware_version"},
		{"location-all", all, "attributes.location"},
		{"customer-all", all, "attributes.customer_id"},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				reg.Buckets(c.q, c.field, 1000)
			}
		})
	}
}
