package bench_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/internal/bench"
	"github.com/umbra-iot/umbra/internal/natstest"
)

var (
	clusterBench    = flag.Bool("cluster.bench", false, "TestClusterModeBench: measure (default: a short run that only checks that figures come out)")
	clusterDuration = flag.Duration("cluster.duration", 10*time.Second, "TestClusterModeBench with -cluster.bench: measured time per setup")
	clusterClients  = flag.Int("cluster.clients", 48, "TestClusterModeBench with -cluster.bench: closed-loop clients per setup (spread over the nodes)")
	clusterHistory  = flag.Int("cluster.history", 0, "TestClusterModeBench: shadow history versions kept on every node (0: the default, 100; -1: none)")
)

// startNodes starts n in-process Umbra nodes (cluster mode when urls is
// not nil: node i on NATS server urls(i)) and returns what a bench.Setup
// returns.
func startNodes(ctx context.Context, t *testing.T, n int, cluster func(i int) broker.ClusterOptions) ([]string, string, func(), error) {
	var nodes []*broker.Broker
	stop := func() {
		for _, b := range nodes {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = b.Shutdown(sctx)
			cancel()
		}
	}
	var urls []string
	for i := range n {
		o := broker.Options{
			DataDir:  t.TempDir(),
			MQTTAddr: "127.0.0.1:0",
			WSAddr:   broker.Off,
			HTTPAddr: "127.0.0.1:0",
			Logger:   slog.New(slog.DiscardHandler),
			// Capacity, not AWS's 20 requests/s per thing (as umbra bench).
			Limits:          broker.LimitOptions{ShadowRate: -1},
			HistoryVersions: *clusterHistory,
		}
		if cluster != nil {
			o.Cluster = cluster(i)
		}
		b, err := broker.New(o)
		if err == nil {
			err = b.Start(ctx)
		}
		if err != nil {
			stop()
			return nil, "", nil, err
		}
		nodes = append(nodes, b)
		urls = append(urls, "tcp://"+b.MQTTAddr())
	}
	return urls, "http://" + nodes[0].HTTPAddr() + "/metrics", stop, nil
}

// TestClusterModeBench measures durable shadow updates (closed loop over
// MQTT: publish an update, wait for its /update/accepted) in one run on
// (a) one Umbra node on bbolt, (b) one node on a one-server JetStream (R1)
// and (c) three nodes on a three-server JetStream cluster (R3), clients
// spread over the nodes; every NATS server fsyncs before acknowledging
// (natstest: SyncAlways). By default it only checks, briefly, that every
// setup yields figures; -cluster.bench measures:
//
//	go test ./internal/bench -run TestClusterModeBench -count=1 -v -cluster.bench
func TestClusterModeBench(t *testing.T) {
	opts := bench.Options{Clients: 6, Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond}
	if *clusterBench {
		opts = bench.Options{Clients: *clusterClients, Duration: *clusterDuration, Warmup: 2 * time.Second}
	}
	var progress bytes.Buffer
	opts.Progress = &progress
	setups := []bench.Setup{
		{Name: "1 node, bbolt", Start: func(ctx context.Context) ([]string, string, func(), error) {
			return startNodes(ctx, t, 1, nil)
		}},
		{Name: "1 node, JetStream R1 (1 server)", Start: func(ctx context.Context) ([]string, string, func(), error) {
			nc := natstest.StartCluster(t, 1)
			urls, m, stop, err := startNodes(ctx, t, 1, func(int) broker.ClusterOptions {
				return broker.ClusterOptions{URLs: []string{nc.URL(0)}, Replicas: 1, Name: "bench-0"}
			})
			if err != nil {
				nc.Shutdown()
				return nil, "", nil, err
			}
			return urls, m, func() { stop(); nc.Shutdown() }, nil
		}},
		{Name: "3 nodes, JetStream R3 (3 servers)", Start: func(ctx context.Context) ([]string, string, func(), error) {
			nc := natstest.StartCluster(t, 3)
			urls, m, stop, err := startNodes(ctx, t, 3, func(i int) broker.ClusterOptions {
				return broker.ClusterOptions{URLs: []string{nc.URL(i)}, Replicas: 3, Name: fmt.Sprintf("bench-%d", i)}
			})
			if err != nil {
				nc.Shutdown()
				return nil, "", nil, err
			}
			return urls, m, func() { stop(); nc.Shutdown() }, nil
		}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := bench.CompareShadowUpdates(ctx, opts, setups)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	if len(rep.Results) != len(setups) {
		t.Fatalf("%d results for %d setups", len(rep.Results), len(setups))
	}
	for i, r := range rep.Results {
		if r.Variant != setups[i].Name || r.Ops <= 0 || r.PerSec <= 0 || r.Latency.P99 <= 0 || r.Errors != 0 {
			t.Errorf("%s: %+v", setups[i].Name, r)
		}
		if i > 0 && !strings.Contains(strings.Join(r.Notes, " "), "÷ 1 node, bbolt") {
			t.Errorf("%s: no ratio to the bbolt node: %q", r.Variant, r.Notes)
		}
	}
}
