// Package fleetfixture writes the large fleet the registry and broker
// benchmarks measure (BENCHMARKS.md, "Fleet index"): things with four
// attributes each and a classic shadow each. It is used by tests and
// benchmarks only.
package fleetfixture

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/registry"
)

// Name is the name of thing j.
func Name(j int) string { return fmt.Sprintf("esp32-%07d", j) }

// Ring is thing j's deployment_ring attribute: canary for 1%, early
// adopters for 10%, general for the rest.
func Ring(j int) string {
	switch {
	case j%100 == 0:
		return "canary"
	case j%10 == 1:
		return "early_adopters"
	}
	return "general"
}

// doneFile marks a directory whose fleet was written completely.
func doneFile(dir string, n int, conn bool) string {
	name := "fleet-" + strconv.Itoa(n)
	if conn {
		name += "-connectivity"
	}
	return filepath.Join(dir, name+".done")
}

// Ensure writes a fleet of n things into dir unless a complete one of
// that size is already there (so that a fleet generated once into /tmp can
// be reused by later runs). With conn, every thing also has a
// connectivity record (it connected three times and lost its last
// connection), as a fleet that has been online has. It reports whether it
// wrote.
func Ensure(dir string, n int, conn bool, logf func(string, ...any)) (wrote bool, err error) {
	if _, err := os.Stat(doneFile(dir, n, conn)); err == nil {
		return false, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return false, err
	}
	if err := Write(dir, n, logf); err != nil {
		return false, err
	}
	if conn {
		if err := WriteConnectivity(dir, n); err != nil {
			return false, err
		}
	}
	return true, os.WriteFile(doneFile(dir, n, conn), nil, 0o600)
}

// WriteConnectivity gives each of the n things a connectivity record as
// the registry writes it (bucket reg_connectivity, JSON), with a distinct
// timestamp each.
func WriteConnectivity(dir string, n int) error {
	db, err := store.Open(dir, store.Options{NoSync: true})
	if err != nil {
		return err
	}
	defer db.Close()
	const batch = 20_000
	for i := 0; i < n; i += batch {
		err := db.UpdateKV(context.Background(), func(kv store.KV) error {
			for j := i; j < min(i+batch, n); j++ {
				ts := int64(1_800_000_000_000 + j*37)
				c := registry.Connectivity{Timestamp: ts, LastConnect: ts - 60_000, LastDisconnect: ts, DisconnectReason: "CONNECTION_LOST",
					ClientAddress: fmt.Sprintf("10.%d.%d.%d:%d", j>>16&255, j>>8&255, j&255, 40000+j%20000), ProtocolVersion: 4, Version: 3}
				b, err := json.Marshal(c)
				if err != nil {
					return err
				}
				if err := kv.Put("reg_connectivity", Name(j), b); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return db.Close()
}

// Write writes n things (attributes location ×8 values, customer_id ×500,
// hardware_rev ×4, deployment_ring) and a classic shadow each (reported
// firmware_version ×4, battery 0-100, led_is_on, location) into dir.
func Write(dir string, n int, logf func(string, ...any)) error {
	start := time.Now()
	// Writing the fixture is not what is measured: skip fsync for it.
	db, err := store.Open(dir, store.Options{NoSync: true})
	if err != nil {
		return err
	}
	defer db.Close()
	reg, err := registry.Open(registry.Config{Store: storeadapt.KV{DB: db}})
	if err != nil {
		return err
	}
	const batch = 10_000
	ctx := context.Background()
	for i := 0; i < n; i += batch {
		var things []registry.NewThing
		for j := i; j < min(i+batch, n); j++ {
			things = append(things, registry.NewThing{Name: Name(j), Attributes: map[string]string{
				"location": fmt.Sprintf("factory-%c", 'A'+j%8), "customer_id": fmt.Sprintf("cust-%d", j%500),
				"hardware_rev": string(rune('A' + j%4)), "deployment_ring": Ring(j),
			}})
		}
		if _, err := reg.CreateThings(ctx, things); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	work := make(chan int, 1024)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				fw := []string{"2.1.3", "2.1.4", "2.2.0", "1.9.7"}[j%4]
				doc := fmt.Appendf(nil, `{"state":{"reported":{"firmware_version":%q,"battery":%d,"led_is_on":%v,"location":"factory-%c"}},"metadata":{"reported":{"firmware_version":{"timestamp":1800000000},"battery":{"timestamp":1800000000},"led_is_on":{"timestamp":1800000000},"location":{"timestamp":1800000000}}},"version":1,"timestamp":1800000000}`,
					fw, j%101, j%2 == 0, 'A'+j%8)
				if err := db.CommitShadow(ctx, store.ShadowWrite{Key: store.ShadowKey{Thing: Name(j)}, Doc: doc, Version: 1, Time: time.Unix(1800000000, 0)}); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		}()
	}
	for j := range n {
		work <- j
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if logf != nil {
		logf("wrote %d things with shadows into %s in %s", n, dir, time.Since(start).Round(time.Millisecond))
	}
	return db.Close()
}
