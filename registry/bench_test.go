package registry_test

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

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
		// Writing the fixture is not what is measured: skip fsync for it.
		db, err := store.Open(dir, store.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		reg, err := registry.Open(registry.Config{Store: storeadapt.KV{DB: db}})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		n := *benchThings
		const batch = 10_000
		ctx := context.Background()
		for i := 0; i < n; i += batch {
			var things []registry.NewThing
			for j := i; j < min(i+batch, n); j++ {
				things = append(things, registry.NewThing{Name: fmt.Sprintf("esp32-%07d", j), Attributes: map[string]string{
					"location": fmt.Sprintf("factory-%c", 'A'+j%8), "customer_id": fmt.Sprintf("cust-%d", j%500),
					"hardware_rev": string(rune('A' + j%4)), "deployment_ring": ring(j),
				}})
			}
			if _, err := reg.CreateThings(ctx, things); err != nil {
				b.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		work := make(chan int, 1024)
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range work {
					fw := []string{"2.1.3", "2.1.4", "2.2.0", "1.9.7"}[j%4]
					doc := fmt.Appendf(nil, `{"state":{"reported":{"firmware_version":%q,"battery":%d,"led_is_on":%v,"location":"factory-%c"}},"metadata":{"reported":{"firmware_version":{"timestamp":1800000000},"battery":{"timestamp":1800000000},"led_is_on":{"timestamp":1800000000},"location":{"timestamp":1800000000}}},"version":1,"timestamp":1800000000}`,
						fw, j%101, j%2 == 0, 'A'+j%8)
					if err := db.CommitShadow(ctx, store.ShadowWrite{Key: store.ShadowKey{Thing: fmt.Sprintf("esp32-%07d", j)}, Doc: doc, Version: 1, Time: time.Unix(1800000000, 0)}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		for j := range n {
			work <- j
		}
		close(work)
		wg.Wait()
		b.Logf("wrote %d things with shadows in %s", n, time.Since(start).Round(time.Millisecond))
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	})
	return benchDir
}

func ring(j int) string {
	switch {
	case j%100 == 0:
		return "canary"
	case j%10 == 1:
		return "early_adopters"
	}
	return "general"
}

var (
	regOnce  sync.Once
	benchReg *registry.Registry
)

// benchRegistry opens the fleet once and measures start-up (index build).
func benchRegistry(b *testing.B) *registry.Registry {
	dir := benchFleet(b)
	regOnce.Do(func() {
		db, err := store.Open(dir, store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		benchReg, err = registry.Open(registry.Config{Store: storeadapt.KV{DB: db}, Shadows: storeadapt.ShadowSource{DB: db}})
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
