package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/sim"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// kvFlags turns key=value items into a map.
func kvFlags(items []string, what string) (map[string]string, error) {
	if len(items) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, it := range items {
		k, v, ok := strings.Cut(it, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want key=value", what, it)
		}
		m[k] = v
	}
	return m, nil
}

func simCmd(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	fs := flag.NewFlagSet("umbra sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := sim.Config{}
	fs.StringVar(&c.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT URL of the broker (tcp://, ssl://, ws://)")
	fs.IntVar(&c.Devices, "devices", 100, "number of devices")
	fs.StringVar(&c.IDPattern, "id-pattern", sim.DefaultIDPattern, "thing name pattern (fmt, one integer)")
	fs.IntVar(&c.First, "first", 0, "index of the first device")
	fs.StringVar(&c.Firmware, "firmware", sim.DefaultFirmware, "firmware version the devices boot with")
	var features, tags, faults listFlag
	fs.Var(&features, "feature", "key=version: desired key understood only from that firmware version on (repeatable); older firmware ignores it")
	fs.Var(&tags, "tag", "key=value registry attribute for every device (repeatable; overrides the derived ones)")
	fs.Var(&faults, "fault", "fault rule, e.g. fail-update:version=1.1,hardware_rev=D,rate=30% (repeatable; kinds: fail-update, crash-loop, never-return, slow)")
	fs.DurationVar(&c.TelemetryInterval, "telemetry", sim.DefaultTelemetryInterval, "telemetry interval (negative: none)")
	fs.BoolVar(&c.PersistentSession, "persistent", false, "persistent MQTT sessions (clean session off): deltas are queued while offline")
	fs.DurationVar(&c.KeepAlive, "keepalive", sim.DefaultKeepAlive, "MQTT keepalive")
	fs.IntVar(&c.Concurrency, "concurrency", sim.DefaultConcurrency, "devices connecting at once")
	fs.Float64Var(&c.ConnectRate, "connect-rate", 0, "new connections per second (0: as fast as possible)")
	sources := fs.String("source-addrs", "", "local addresses to connect from, e.g. 127.0.0.2-127.0.0.9 (default: automatic beyond 20k devices on loopback)")
	fs.DurationVar(&c.OTADuration, "ota-duration", sim.DefaultOTADuration, "how long a firmware download takes")
	fs.DurationVar(&c.RebootDelay, "reboot-delay", sim.DefaultRebootDelay, "how long a reboot keeps a device offline")
	fs.DurationVar(&c.LowPower.Period, "low-power", 0, "low-power mode: sleep this long between wakes (0: always connected)")
	fs.DurationVar(&c.LowPower.Awake, "awake", sim.DefaultAwake, "low-power mode: longest a wake lasts")
	fs.Int64Var(&c.Seed, "seed", 0, "varies which devices the faults hit")
	register := fs.Bool("register", false, "register every device (thing type, tags, deployment ring) with the admin API first")
	api := fs.String("api", "http://127.0.0.1:8080", "Umbra HTTP API base URL (for --register and --secrets-from-api)")
	apiKey := fs.String("api-key", "", "admin API key (default $UMBRA_API_KEY)")
	fromAPI := fs.Bool("secrets-from-api", false, "issue each device a secret with POST /api/things/{thing}/credentials and connect with it")
	secretsFile := fs.String("secrets", "", "file of \"thing secret\" lines to connect with")
	saveSecrets := fs.String("save-secrets", "", "write the secrets issued by --secrets-from-api to this file (mode 0600)")
	caFile := fs.String("ca", "", "CA certificate (PEM) that signed the broker's certificate, for ssl://")
	certDir := fs.String("cert-dir", "", "directory of device certificates: {thing}.pem and {thing}.key (CN = thing name)")
	duration := fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
	every := fs.Duration("progress", 2*time.Second, "progress line interval (0: none)")
	asJSON := fs.Bool("json", false, "print the final statistics as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: umbra sim [flags]\n\nSimulate a fleet of ESP32 devices running the seed firmware against a broker.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	var err error
	if c.Features, err = kvFlags(features, "feature"); err != nil {
		return usageError{err}
	}
	if c.Tags, err = kvFlags(tags, "tag"); err != nil {
		return usageError{err}
	}
	for _, s := range faults {
		f, err := sim.ParseFault(s)
		if err != nil {
			return usageError{err}
		}
		c.Faults = append(c.Faults, f)
	}
	if *sources != "" {
		if c.SourceAddrs, err = sim.ParseSourceAddrs(*sources); err != nil {
			return usageError{err}
		}
	}
	key := *apiKey
	if key == "" {
		key = lookup(env, "UMBRA_API_KEY")
	}
	if *register {
		c.Registrar = &sim.HTTPRegistry{BaseURL: *api, APIKey: key}
	}
	var issued *sim.Secrets
	switch {
	case *fromAPI && *secretsFile != "":
		return usageError{fmt.Errorf("--secrets-from-api and --secrets exclude each other")}
	case *fromAPI:
		issued = sim.NewSecrets()
		c.Credentials = sim.Recording(&sim.APICredentials{BaseURL: *api, APIKey: key}, issued)
	case *secretsFile != "":
		s, err := sim.LoadSecrets(*secretsFile)
		if err != nil {
			return err
		}
		c.Credentials = s
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s holds no PEM certificate", *caFile)
		}
		c.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if *certDir != "" {
		dir := *certDir
		c.ClientCert = func(thing string) (*tls.Certificate, error) {
			cert, err := tls.LoadX509KeyPair(filepath.Join(dir, thing+".pem"), filepath.Join(dir, thing+".key"))
			return &cert, err
		}
	}
	if lim, err := sim.RaiseFileLimit(uint64(c.Devices) + 1024); err != nil {
		fmt.Fprintf(stderr, "umbra sim: open-file limit is %d (%v); connections beyond it will fail\n", lim, err)
	}

	fleet, err := sim.New(c)
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintf(stdout, "umbra sim: %d devices (%s…) → %s\n", c.Devices, fleet.ID(0), c.Broker)
	runCtx := ctx
	if *duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	progCtx, stopProgress := context.WithCancel(context.Background())
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		if *every > 0 {
			fleet.Progress(progCtx, stdout, *every)
		}
	}()
	startErr := fleet.Start(runCtx)
	if startErr == nil {
		s := fleet.Stats()
		fmt.Fprintf(stdout, "umbra sim: every device made its first attempt in %s: %d connected, %d errors\n",
			s.ConnectPhase.Round(time.Millisecond), s.Connected, s.ConnectErrors+s.SetupErrors)
		<-runCtx.Done()
	}
	stopProgress()
	<-progDone
	if issued != nil && *saveSecrets != "" {
		if err := issued.Save(*saveSecrets); err != nil {
			fmt.Fprintf(stderr, "umbra sim: save secrets: %v\n", err)
		} else {
			fmt.Fprintf(stdout, "umbra sim: %d secrets written to %s\n", issued.Len(), *saveSecrets)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_ = fleet.Stop(sctx)
	s := fleet.Stats()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s)
	} else {
		fmt.Fprintf(stdout, "umbra sim: stopped after %s: %d connections (%d errors, %d lost), %d reports, %d deltas, %d gets, %d telemetry, "+
			"OTA %d started / %d succeeded / %d failed, %d reboots, %d crashes, %d gone, %d wakes, %d keys acted on, %d ignored\n",
			s.Elapsed.Round(time.Millisecond), s.Connects, s.ConnectErrors, s.ConnectionsLost, s.Reports, s.Deltas, s.Gets, s.Telemetry,
			s.OTAStarted, s.OTASucceeded, s.OTAFailed, s.Reboots, s.Crashes, s.Gone, s.Wakes, s.Acted, s.Ignored)
	}
	if startErr != nil && ctx.Err() == nil && runCtx.Err() == nil {
		return startErr
	}
	return nil
}
