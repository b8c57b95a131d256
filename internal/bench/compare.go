package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Setup is one system measured by CompareShadowUpdates: one Umbra node or
// several (a cluster), started in this process.
type Setup struct {
	// Name says what it is ("1 node, bbolt", "3 nodes, JetStream R3").
	Name string
	// Start starts it and returns the MQTT URLs of its nodes (client i
	// connects to node i mod len), the URL of one node's /metrics ("" for
	// none) and how to stop it.
	Start func(ctx context.Context) (mqttURLs []string, metrics string, stop func(), err error)
}

// CompareShadowUpdates runs the closed-loop durable shadow-update scenario
// (opts.Clients clients, each publishing an update and waiting for its
// /update/accepted before the next; warm-up opts.Warmup, measured
// opts.Duration) on each setup in turn, in one run, and reports each
// result with its throughput relative to the first setup's. opts.Target
// and the open-loop variant do not apply.
func CompareShadowUpdates(ctx context.Context, opts Options, setups []Setup) (*Report, error) {
	if opts.Target != "" {
		return nil, errors.New("bench: comparing setups needs in-process brokers (no --target)")
	}
	if len(setups) == 0 {
		return nil, errors.New("bench: no setup to compare")
	}
	o := opts.withDefaults()
	r := &runner{opts: o, report: &Report{Started: time.Now(), Machine: machine(), Broker: "in-process (setups compared)"}}
	r.setupDialers()
	var first float64
	var names []string
	for i, s := range setups {
		r.progress("%s: starting", s.Name)
		urls, metrics, stop, err := s.Start(ctx)
		if err != nil {
			return r.report, fmt.Errorf("bench: start %s: %w", s.Name, err)
		}
		r.mqttURLs, r.mqttURL = urls, urls[0]
		r.probe = &probe{inProcess: true, metrics: metrics}
		res, err := r.closedLoop(ctx, true)
		stop()
		res.Variant = s.Name
		if i == 0 {
			first = res.PerSec
		}
		if first > 0 && i > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("%s ÷ %s: %.2f of the updates/s, p99 %.2f×", s.Name, setups[0].Name, res.PerSec/first, ratio(res.Latency.P99, r.report.Results[0].Latency.P99)))
		}
		r.report.Results = append(r.report.Results, res)
		names = append(names, s.Name)
		if err != nil {
			return r.report, errors.Join(fmt.Errorf("bench %s: %w", s.Name, err), r.rejected())
		}
	}
	r.report.Notes = append(r.report.Notes,
		"setups compared in this order, one after the other, in one process: "+strings.Join(names, "; "),
		"in-process: server CPU is the whole process (brokers, NATS servers and bench clients on the same cores)")
	return r.report, r.rejected()
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
