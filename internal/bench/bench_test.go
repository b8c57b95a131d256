package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/bench"
	"github.com/umbra-iot/umbra/internal/testpki"
)

// TestShortRun runs every scenario in a short mode against an in-process
// broker. It checks that each produces figures, never how good they are.
func TestShortRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := bench.Run(ctx, bench.Options{
		DataDir:  t.TempDir(),
		Clients:  4,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond,
		Rate: 200, RateClients: 10,
		FanoutDevices: 20, FanoutApps: 2, FanoutRounds: 2,
		Conns: 50, ConnWorkers: 8,
		Progress:      &progress,
		BrokerOptions: func(o *broker.Options) { o.EphemeralSessions = true },
	})
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	want := map[string]int{bench.Raw: 2, bench.ShadowUpdate: 2, bench.DeltaFanout: 1, bench.Connections: 1}
	for _, r := range rep.Results {
		want[r.Scenario]--
		if r.Ops <= 0 || r.PerSec <= 0 || r.Latency.Count <= 0 || r.Latency.Max <= 0 || r.Latency.P50 <= 0 {
			t.Errorf("%s %s: no figures: %+v", r.Scenario, r.Variant, r)
		}
		if r.Server.RSS <= 0 {
			t.Errorf("%s: no server memory figure", r.Scenario)
		}
	}
	for s, n := range want {
		if n != 0 {
			t.Errorf("scenario %s: %d results missing", s, n)
		}
	}
	if rep.ShadowVsRaw <= 0 {
		t.Error("no shadow/raw ratio")
	}
	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"raw", "shadow-update", "delta-fanout", "connections", "p99", "rate limit off", "raw fixed 200/s:"} {
		if !strings.Contains(table.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, table.String())
		}
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back bench.Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Results) != len(rep.Results) {
		t.Errorf("JSON round trip: %v", err)
	}
	t.Logf("\n%s", table.String())
}

func TestUnknownScenario(t *testing.T) {
	if _, err := bench.Run(context.Background(), bench.Options{Scenarios: []string{"nope"}}); err == nil {
		t.Error("no error for an unknown scenario")
	}
}

// Against a running broker over TLS: every scenario's clients (paho and
// the raw idle devices) connect with the given CA, and /metrics is read over
// HTTPS. (The connections scenario gives a remote broker 3 s to settle
// before each measurement, so this takes about 6 s.)
func TestTLSTarget(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, dir, "bench-ca")
	pair := ca.Server(t, dir)
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.TLS = broker.TLSOptions{CertFile: pair.CertFile, KeyFile: pair.KeyFile}
		o.Limits.ShadowRate = -1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Options{
		Target: "tls://" + srv.MQTTAddr(), TargetHTTP: srv.HTTPURL(), CAFile: ca.File,
		Scenarios: []string{bench.Raw, bench.Connections},
		Clients:   2, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond,
		Conns: 20, ConnWorkers: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Ops <= 0 || r.Errors != 0 || r.Server.RSS <= 0 {
			t.Errorf("%s over TLS: %+v", r.Scenario, r)
		}
	}

	// Without the CA the certificate is not trusted, and the CA file is
	// refused for a plain target.
	if _, err := bench.Run(ctx, bench.Options{Target: "tls://" + srv.MQTTAddr(), Scenarios: []string{bench.Raw}, Clients: 1}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a tls:// target with an untrusted certificate: %v", err)
	}
	if _, err := bench.Run(ctx, bench.Options{Target: "tcp://127.0.0.1:1", CAFile: ca.File, Scenarios: []string{bench.Raw}}); err == nil || !strings.Contains(err.Error(), "--ca-file is for a tls:// target") {
		t.Errorf("CA file with a tcp:// target: %v", err)
	}
}
