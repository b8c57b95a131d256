package broker_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/fleetfixture"
	"github.com/umbra-iot/umbra/registry/query"
)

// TestFleetColdStart measures what issue 17 asks of a large fleet: the time
// from starting a broker on a data directory of UMBRA_FLEET_THINGS
// (default 1,000,000) things with shadows until a device gets its
// CONNACK, the process's RSS after start, and the first page of a query
// matching 99% of the fleet. It only reports (no timed assertion) and runs
// only with UMBRA_FLEET_DIR set: the fleet is generated there once (44 s
// or more for a million things) and reused by later runs.
//
//	UMBRA_FLEET_DIR=/tmp/umbra-fleet-1m go test ./broker -run TestFleetColdStart -count=1 -v -timeout 30m
//
// With UMBRA_FLEET_CONNECTIVITY=1 (and another directory) every thing
// also has a connectivity record, as in a fleet that has been online.
//
// Run it twice: the first start after the fleet was written finds no index
// snapshot (or a stale one) and rebuilds; its shutdown writes the snapshot
// the second start loads.
func TestFleetColdStart(t *testing.T) {
	dir := os.Getenv("UMBRA_FLEET_DIR")
	if dir == "" {
		t.Skip("set UMBRA_FLEET_DIR to a directory for the generated fleet (see BENCHMARKS.md)")
	}
	n := 1_000_000
	if s := os.Getenv("UMBRA_FLEET_THINGS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	conn := os.Getenv("UMBRA_FLEET_CONNECTIVITY") == "1"
	if wrote, err := fleetfixture.Ensure(dir, n, conn, t.Logf); err != nil {
		t.Fatal(err)
	} else if wrote {
		t.Logf("generated the fleet; run again to measure a start on a quiet heap")
	}
	runtime.GC()
	debug.FreeOSMemory()
	t.Logf("before start: %s", rss())

	start := time.Now()
	b, err := broker.New(brokertest.LoopbackOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	started := time.Since(start)
	c, err := net.DialTimeout("tcp", b.MQTTAddr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	connectIdle(t, c, 0)
	connack := time.Since(start)
	_ = c.Close()
	t.Logf("start: Start returned after %s, CONNACK after %s (%d things; index: %s)", started.Round(time.Millisecond), connack.Round(time.Millisecond), b.Registry().Registered(), indexSource(b))
	t.Logf("RSS at CONNACK: %s", rss())
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("RSS after GC: %s; Go heap in use %d MiB", rss(), ms.HeapInuse>>20)

	for _, qs := range []string{"NOT attributes.deployment_ring:canary", "shadow.reported.firmware_version<2.2.0", "attributes.location:factory-C", "thingName:esp32-0500000"} {
		q := query.MustParse(qs)
		var times []time.Duration
		var res uint64
		for range 20 {
			s := time.Now()
			r := b.Registry().Search(q, "", 100)
			times = append(times, time.Since(s))
			res = r.Total
		}
		slices.Sort(times)
		t.Logf("first page of 100, %q (%d matches): median %s, min %s, max %s", qs, res, times[10].Round(time.Microsecond), times[0].Round(time.Microsecond), times[19].Round(time.Microsecond))
	}
	s := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("shutdown took %s", time.Since(s).Round(time.Millisecond))
}

// rss reads the process's resident memory from /proc (Linux).
func rss() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(io.Reader(f))
	for sc.Scan() {
		line := sc.Text()
		for _, k := range []string{"VmRSS:", "RssAnon:", "RssFile:"} {
			if strings.HasPrefix(line, k) {
				kb, _ := strconv.Atoi(strings.Fields(line)[1])
				out = append(out, k[:len(k)-1]+" "+strconv.Itoa(kb>>10)+" MiB")
			}
		}
	}
	return strings.Join(out, ", ")
}

// indexSource says where the registry's index came from, when the registry
// says (it does since the index snapshot; before, it was always rebuilt).
func indexSource(b *broker.Broker) string {
	if s, ok := any(b.Registry()).(interface{ IndexSource() string }); ok {
		return s.IndexSource()
	}
	return "rebuilt"
}
