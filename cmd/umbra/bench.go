package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/internal/bench"
	"github.com/umbra-iot/umbra/internal/gctune"
	"github.com/umbra-iot/umbra/internal/sim"
)

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	fs := flag.NewFlagSet("umbra bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := bench.Options{}
	scenarios := fs.String("scenarios", strings.Join(bench.AllScenarios, ","), "comma-separated scenarios: "+strings.Join(bench.AllScenarios, ", ")+" (also as arguments)")
	fs.StringVar(&o.Target, "target", "", "MQTT URL of a running broker, tcp:// or tls:// (default: start one in-process with a temporary data directory)")
	fs.StringVar(&o.TargetHTTP, "target-http", "", "the target's HTTP base URL, for its /metrics (CPU, RSS, commits)")
	fs.StringVar(&o.CAFile, "ca-file", "", "PEM CA of a tls:// target's certificate (default: the system's roots)")
	fs.StringVar(&o.Target, "broker", "", "alias of --target (as in umbra sim)")
	fs.StringVar(&o.CAFile, "ca", "", "alias of --ca-file (as in umbra sim)")
	fs.StringVar(&o.APIKey, "api-key", "", "API key for the target's /metrics when auth is on (default $UMBRA_API_KEY)")
	fs.StringVar(&o.Username, "username", "", "MQTT username for every bench client (a service principal, when the target has auth on)")
	fs.StringVar(&o.Password, "password", "", "MQTT password (default $UMBRA_BENCH_PASSWORD)")
	fs.StringVar(&o.DataDir, "data-dir", "", "in-process broker data directory (default: temporary, removed)")
	fs.IntVar(&o.Clients, "clients", 50, "raw and shadow-update (max rate) clients")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per phase")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "unmeasured warm-up per phase (negative: none)")
	fs.IntVar(&o.Payload, "payload", 80, "approximate request payload bytes")
	fs.Float64Var(&o.Rate, "rate", 5000, "raw and shadow-update fixed-rate variants: total messages/s (negative: skip)")
	fs.IntVar(&o.RateClients, "rate-clients", 500, "devices sharing the fixed rate")
	fs.IntVar(&o.FanoutDevices, "fanout-devices", 1000, "delta-fanout devices")
	fs.IntVar(&o.FanoutApps, "fanout-apps", 8, "delta-fanout app connections")
	fs.IntVar(&o.FanoutRounds, "fanout-rounds", 5, "delta-fanout measured rounds")
	fs.IntVar(&o.Conns, "conns", 10000, "connections scenario: idle devices")
	fs.IntVar(&o.ConnWorkers, "conn-workers", 128, "connections scenario: concurrent connection attempts")
	fs.BoolVar(&o.ConnNoSub, "conn-no-subscribe", false, "connections scenario: do not subscribe to the delta topic")
	fs.DurationVar(&o.ConnHold, "conn-hold", 0, "connections scenario: keep the connections open this long after measuring")
	sources := fs.String("source-addrs", "", "local addresses to connect from, e.g. 127.0.0.2-127.0.0.9 (default: automatic beyond 20k connections on loopback)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "bound on each wait for the broker")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of this process (broker included when in-process)")
	fs.StringVar(&o.MemProfile, "memprofile", "", "write a heap profile while the connections scenario holds its connections (in-process)")
	noSync := fs.Bool("unsafe-no-sync", false, "in-process broker without fsync (analysis only: shows what durability costs)")
	history := fs.Int("history-versions", 0, "in-process broker's shadow history per shadow (analysis: -1 keeps none; 0: the default)")
	ephemeral := fs.Bool("ephemeral-sessions", false, "in-process broker without MQTT session persistence (analysis only)")
	fs.BoolVar(&o.CompareHistory, "compare-history", false, "in-process: also run shadow-update (max rate) on a second broker keeping no history, and report history on ÷ off")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file (- for stdout; the table then goes to stderr)")
	quiet := fs.Bool("quiet", false, "no progress lines")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: umbra bench [flags] [scenario...]\n\nMeasure a whole Umbra: raw QoS 1 ceiling, durable shadow updates, delta fan-out, idle connections.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	list := fs.Args()
	if len(list) == 0 {
		list = strings.Split(*scenarios, ",")
	}
	for _, s := range list {
		if s = strings.TrimSpace(s); s != "" {
			o.Scenarios = append(o.Scenarios, s)
		}
	}
	if *noSync || *ephemeral || *history != 0 {
		o.BrokerOptions = func(bo *broker.Options) {
			bo.UnsafeNoSync = *noSync
			bo.EphemeralSessions = *ephemeral
			bo.HistoryVersions = *history
		}
	}
	if *sources != "" {
		var err error
		if o.SourceAddrs, err = sim.ParseSourceAddrs(*sources); err != nil {
			return usageError{err}
		}
	}
	if o.APIKey == "" {
		o.APIKey = lookup(env, "UMBRA_API_KEY")
	}
	if o.Password == "" {
		o.Password = lookup(env, "UMBRA_BENCH_PASSWORD")
	}
	table := stdout
	if *jsonOut == "-" {
		table = stderr
	}
	if !*quiet {
		o.Progress = stderr
	}
	need := uint64(o.Conns)*2 + 4096
	if lim, err := sim.RaiseFileLimit(need); err != nil {
		fmt.Fprintf(stderr, "umbra bench: open-file limit is %d (%v); connections beyond it will fail\n", lim, err)
	}
	if o.Target == "" {
		// The in-process broker runs as `umbra serve` does; a load
		// generator against another broker keeps Go's defaults.
		defer gctune.Start(gctune.DefaultHeadroom, env).Stop()
	}
	rep, err := bench.Run(ctx, o)
	if rep != nil {
		if werr := rep.WriteTable(table); werr != nil {
			return werr
		}
		if *jsonOut != "" {
			w := stdout
			if *jsonOut != "-" {
				f, ferr := os.Create(*jsonOut)
				if ferr != nil {
					return ferr
				}
				defer f.Close()
				w = f
			}
			if werr := rep.WriteJSON(w); werr != nil {
				return werr
			}
		}
	}
	if err != nil && strings.Contains(err.Error(), "unknown scenario") {
		return usageError{err}
	}
	return err
}
