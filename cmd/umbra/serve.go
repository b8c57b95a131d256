package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/internal/config"
	"github.com/umbra-iot/umbra/internal/gctune"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	fs := flag.NewFlagSet("umbra serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML configuration file (default: none; UMBRA_CONFIG)")
	dataDir := fs.String("data-dir", "", "data directory (default ./umbra-data)")
	mqttAddr := fs.String("mqtt-addr", "", "MQTT/TCP listen address, or off (default 127.0.0.1:1883)")
	wsAddr := fs.String("ws-addr", "", "MQTT/WebSocket listen address, or off (default 127.0.0.1:8083)")
	httpAddr := fs.String("http-addr", "", "HTTP API listen address, or off (default 127.0.0.1:8080)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	logFormat := fs.String("log-format", "", "text or json (default text)")
	clusterURL := fs.String("cluster", "", "cluster mode: NATS JetStream servers, comma-separated nats://host:4222 (default: off, one node on bbolt)")
	pprofAddr := fs.String("pprof", "", "serve Go runtime profiles (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060 (default: off; UMBRA_PPROF_ADDR)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: umbra serve [flags]\n\nPrecedence: flags > UMBRA_* environment > config file > defaults.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	path := *configPath
	if path == "" {
		path = lookup(env, "UMBRA_CONFIG")
	}
	file, err := config.Load(path, env)
	if err != nil {
		return err
	}
	override := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	override(&file.DataDir, *dataDir)
	override(&file.MQTT.Addr, *mqttAddr)
	override(&file.MQTT.WSAddr, *wsAddr)
	override(&file.HTTP.Addr, *httpAddr)
	override(&file.Log.Level, *logLevel)
	override(&file.Log.Format, *logFormat)
	override(&file.Cluster.URL, *clusterURL)

	logger, err := file.Logger(stderr)
	if err != nil {
		return err
	}
	if *pprofAddr == "" {
		*pprofAddr = lookup(env, "UMBRA_PPROF_ADDR")
	}
	var pprofBound string
	if *pprofAddr != "" {
		bound, stop, err := startPprof(*pprofAddr, stderr)
		if err != nil {
			return err
		}
		defer stop()
		pprofBound = bound
	}
	// Headroom for the garbage collector while the live heap is small
	// (internal/gctune; GOGC in the environment turns it off).
	defer gctune.Start(gctune.DefaultHeadroom, env).Stop()
	opts := file.Options()
	opts.Logger = logger
	b, err := broker.New(opts)
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "umbra %s serving\n", versionString())
	secure := map[bool]string{false: "", true: "s"}[b.TLS()]
	for _, l := range []struct{ name, addr, scheme string }{
		{"MQTT     ", b.MQTTAddr(), "mqtt" + secure + "://"},
		{"WebSocket", b.WSAddr(), "ws" + secure + "://"},
		{"HTTP     ", b.HTTPAddr(), "http" + secure + "://"},
	} {
		if l.addr != "" {
			fmt.Fprintf(stdout, "  %s %s%s\n", l.name, l.scheme, l.addr)
		}
	}
	if pprofBound != "" {
		fmt.Fprintf(stdout, "  pprof     http://%s/debug/pprof/\n", pprofBound)
	}
	fmt.Fprintf(stdout, "  data      %s\n", b.DataPath())
	if opts.Cluster.Enabled() {
		replicas := opts.Cluster.Replicas
		if replicas == 0 {
			replicas = broker.DefaultClusterReplicas
		}
		fmt.Fprintf(stdout, "  cluster   %s (shadows in JetStream, %d replicas)\n", strings.Join(opts.Cluster.URLs, ","), replicas)
	}
	switch {
	case opts.Auth.Enabled:
		fmt.Fprintf(stdout, "  auth      on: devices by certificate or secret, %d service(s), %d API key(s)\n", len(opts.Auth.Services), len(opts.Auth.APIKeys))
	case allLoopback(b.MQTTAddr(), b.WSAddr(), b.HTTPAddr()):
		fmt.Fprintln(stdout, "  no authentication configured: listening on loopback only")
	default:
		fmt.Fprintln(stdout, "  WARNING: authentication is off and a listener is not on loopback (auth.allow_unauthenticated_remote): anyone who reaches it can connect")
	}
	if opts.TLS.CertFile != "" {
		fmt.Fprintln(stdout, "  tls       on for MQTT, WebSocket and HTTP")
	}

	<-ctx.Done()
	fmt.Fprintln(stdout, "umbra: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), broker.DefaultShutdownGrace)
	defer cancel()
	start := time.Now()
	if err := b.Shutdown(sctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "umbra: stopped cleanly in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func allLoopback(addrs ...string) bool {
	for _, a := range addrs {
		if a != "" && !broker.IsLoopback(a) {
			return false
		}
	}
	return true
}

func lookup(env []string, key string) string {
	v, _ := config.LookupEnv(env, key)
	return v
}
