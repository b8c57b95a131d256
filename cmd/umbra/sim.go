package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/internal/artifact"
	"github.com/umbra-iot/umbra/internal/sim"
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

// durationFlag is a duration flag that also takes a plain number of
// seconds ("30", "-1", "0.5") besides Go durations ("30s", "2m", "-1s").
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return "0s" // the zero value: flag then prints no default
	}
	return f.d.String()
}

func (f durationFlag) Set(v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		*f.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want a duration such as 30s or 2m, or a number of seconds")
	}
	*f.d = d
	return nil
}

// simOptions is a parsed umbra sim command line.
type simOptions struct {
	cfg          sim.Config
	registerOnly bool
	api          string
	issued       *sim.Secrets // secrets issued by the API, to save
	saveSecrets  string
	duration     time.Duration
	every        time.Duration
	asJSON       bool
}

// defaultStateFile is where the device state of a fleet on broker is kept
// unless --state says otherwise: $XDG_STATE_HOME/umbra/ (or
// ~/.local/state/umbra/) sim-HOST_PORT.json, one file per broker address.
// "" when there is no home directory.
func defaultStateFile(env []string, broker string) string {
	base := lookup(env, "XDG_STATE_HOME")
	if base == "" {
		home := lookup(env, "HOME")
		if home == "" {
			return ""
		}
		base = filepath.Join(home, ".local", "state")
	}
	host := broker
	if u, err := url.Parse(broker); err == nil && u.Host != "" {
		host = u.Host
	}
	name := []byte(host)
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			name[i] = '_'
		}
	}
	return filepath.Join(base, "umbra", "sim-"+string(name)+".json")
}

// parseSim reads umbra sim's command line into a fleet configuration.
func parseSim(args []string, stderr io.Writer, env []string) (*simOptions, error) {
	fs := flag.NewFlagSet("umbra sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &simOptions{}
	c := &o.cfg
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		*p = def
		fs.Var(durationFlag{p}, name, usage)
	}
	const defBroker = "tcp://127.0.0.1:1883"
	brokerUsage := "MQTT URL of the broker: tcp:// or mqtt://, tls:// ssl:// or mqtts:// (TLS), ws:// or wss://"
	fs.StringVar(&c.Broker, "broker", defBroker, brokerUsage)
	fs.StringVar(&c.Broker, "target", defBroker, "alias of --broker (as in umbra bench)")
	fs.IntVar(&c.Devices, "devices", 100, "number of devices")
	fs.StringVar(&c.IDPattern, "id-pattern", sim.DefaultIDPattern, "thing name pattern (fmt, one integer)")
	fs.IntVar(&c.First, "first", 0, "index of the first device")
	fs.StringVar(&c.Firmware, "firmware", sim.DefaultFirmware, "firmware version the devices boot with (devices in the state file boot with the version they kept)")
	var features, tags, faults listFlag
	fs.Var(&features, "feature", "key=version: desired key understood only from that firmware version on (repeatable); older firmware ignores it")
	fs.Var(&tags, "tag", "key=value registry attribute for every device (repeatable; overrides the derived ones)")
	fs.Var(&faults, "fault", "fault rule, e.g. fail-update:version=1.1,hardware_rev=D,rate=30% (repeatable; kinds: fail-update, crash-loop, never-return, slow)")
	rings := fs.String("rings", "canary=1%,early_adopters=10%", "deployment rings and their shares of the fleet (the rest is general)")
	var telemetry time.Duration
	dur(&telemetry, "telemetry", sim.DefaultTelemetryInterval, "telemetry interval, e.g. 60s or 60 (seconds); 0 or negative: none")
	fs.BoolVar(&c.PersistentSession, "persistent", false, "persistent MQTT sessions (clean session off): deltas are queued while offline")
	dur(&c.KeepAlive, "keepalive", sim.DefaultKeepAlive, "MQTT keepalive")
	fs.IntVar(&c.Concurrency, "concurrency", sim.DefaultConcurrency, "devices connecting at once")
	fs.Float64Var(&c.ConnectRate, "connect-rate", 0, "new connections per second (0: as fast as possible)")
	sources := fs.String("source-addrs", "", "local addresses to connect from, e.g. 127.0.0.2-127.0.0.9 (default: automatic beyond 20k devices on loopback)")
	dur(&c.OTADuration, "ota-duration", sim.DefaultOTADuration, "how long a firmware download takes")
	fs.BoolVar(&c.Download, "download", false, "download real images: an http(s) ota_url is fetched (Range resumes a dropped download), checked against ota_size and ota_sha256, then installed")
	signingKey := fs.String("signing-key", "", "PEM public key (ECDSA P-256 or Ed25519): with --download (or --jobs-api downloads), install only images whose ota_signature verifies with it")
	dur(&c.RebootDelay, "reboot-delay", sim.DefaultRebootDelay, "how long a reboot keeps a device offline")
	fs.BoolVar(&c.JobsAPI, "jobs-api", false, "devices take updates through the AWS IoT Jobs API (notify-next, start-next, IN_PROGRESS with progress, SUCCEEDED/FAILED per the faults) besides desired state; a job document with an http(s) url and sha256 is downloaded and verified for real")
	dur(&c.LowPower.Period, "low-power", 0, "low-power mode: sleep this long between wakes (0: always connected)")
	dur(&c.LowPower.Awake, "awake", sim.DefaultAwake, "low-power mode: longest a wake lasts")
	fs.Int64Var(&c.Seed, "seed", 0, "varies which devices the faults hit")
	stateFile := fs.String("state", "", "state file: what each device keeps across restarts (firmware, boot and crash counts, settings)\n(default $XDG_STATE_HOME/umbra/sim-HOST_PORT.json or ~/.local/state/umbra/...; none: keep nothing)")
	fs.BoolVar(&c.ResetState, "reset-state", false, "ignore the state file: every device boots fresh with --firmware (the file is overwritten)")
	register := fs.Bool("register", false, "register every device (thing type, tags, deployment ring) with the admin API first")
	fs.BoolVar(&o.registerOnly, "register-only", false, "register every device, then exit without connecting any")
	defAPI := lookup(env, "UMBRA_SERVER")
	if defAPI == "" {
		defAPI = "http://127.0.0.1:8080"
	}
	fs.StringVar(&o.api, "api", defAPI, "Umbra HTTP API base URL, for --register and --secrets-from-api ($UMBRA_SERVER when set)")
	fs.StringVar(&o.api, "server", defAPI, "alias of --api (as in the client commands)")
	apiKey := fs.String("api-key", "", "admin API key (default $UMBRA_API_KEY)")
	fromAPI := fs.Bool("secrets-from-api", false, "issue each device a secret with POST /api/things/{thing}/credentials and connect with it")
	secretsFile := fs.String("secrets", "", "file of \"thing secret\" lines to connect with")
	fs.StringVar(&o.saveSecrets, "save-secrets", "", "write the secrets issued by --secrets-from-api to this file (mode 0600)")
	var caFile string
	fs.StringVar(&caFile, "ca", "", "CA certificate (PEM) that signed the broker's certificate, for a TLS broker")
	fs.StringVar(&caFile, "ca-file", "", "alias of --ca (as in umbra bench and the client commands)")
	certDir := fs.String("cert-dir", "", "directory of device certificates: {thing}.pem and {thing}.key (CN = thing name)")
	dur(&o.duration, "duration", 0, "stop after this long (0: until interrupted)")
	dur(&o.every, "progress", 2*time.Second, "progress line interval (0: none)")
	fs.BoolVar(&o.asJSON, "json", false, "print the final statistics as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: umbra sim [flags]\n\nSimulate a fleet of ESP32 devices running the seed firmware against a broker\n(see the README: Rehearse a rollout on a simulated fleet).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, false); err != nil {
		return nil, err
	}
	if telemetry <= 0 {
		c.TelemetryInterval = -1 // none
	} else {
		c.TelemetryInterval = telemetry
	}
	var err error
	if c.Features, err = kvFlags(features, "feature"); err != nil {
		return nil, usageError{err}
	}
	if c.Tags, err = kvFlags(tags, "tag"); err != nil {
		return nil, usageError{err}
	}
	for _, s := range faults {
		f, err := sim.ParseFault(s)
		if err != nil {
			return nil, usageError{err}
		}
		c.Faults = append(c.Faults, f)
	}
	if c.Rings, err = sim.ParseRings(*rings); err != nil {
		return nil, usageError{err}
	}
	if *sources != "" {
		if c.SourceAddrs, err = sim.ParseSourceAddrs(*sources); err != nil {
			return nil, usageError{err}
		}
	}
	switch *stateFile {
	case "none", "off":
		if c.ResetState {
			return nil, usageError{fmt.Errorf("--reset-state needs a state file (--state is %s)", *stateFile)}
		}
	case "":
		c.StateFile = defaultStateFile(env, c.Broker)
	default:
		c.StateFile = *stateFile
	}
	key := *apiKey
	if key == "" {
		key = lookup(env, "UMBRA_API_KEY")
	}
	if *register || o.registerOnly {
		c.Registrar = &sim.HTTPRegistry{BaseURL: o.api, APIKey: key}
	}
	switch {
	case *fromAPI && *secretsFile != "":
		return nil, usageError{fmt.Errorf("--secrets-from-api and --secrets exclude each other")}
	case *fromAPI:
		o.issued = sim.NewSecrets()
		c.Credentials = sim.Recording(&sim.APICredentials{BaseURL: o.api, APIKey: key}, o.issued)
	case *secretsFile != "":
		s, err := sim.LoadSecrets(*secretsFile)
		if err != nil {
			return nil, err
		}
		c.Credentials = s
	}
	if caFile != "" {
		if !sim.IsTLSBroker(c.Broker) {
			return nil, usageError{fmt.Errorf("--ca is for a TLS broker (tls://, ssl://, mqtts:// or wss://), not %s", c.Broker)}
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		c.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if *signingKey != "" {
		pem, err := os.ReadFile(*signingKey)
		if err != nil {
			return nil, usageError{err}
		}
		if c.SigningKey, err = artifact.ParsePublicKey(pem); err != nil {
			return nil, usageError{fmt.Errorf("--signing-key %s: %v", *signingKey, err)}
		}
	}
	if (c.Download || c.JobsAPI) && c.TLS != nil {
		// Firmware over HTTPS from the same server: trust the same CA.
		c.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: c.TLS.Clone()}}
	}
	if *certDir != "" {
		dir := *certDir
		c.ClientCert = func(thing string) (*tls.Certificate, error) {
			cert, err := tls.LoadX509KeyPair(filepath.Join(dir, thing+".pem"), filepath.Join(dir, thing+".key"))
			return &cert, err
		}
	}
	return o, nil
}

// countsLine prints counts as "a 3, b 2" (largest first, then by name).
func countsLine(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func simCmd(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	o, err := parseSim(args, stderr, env)
	if err != nil {
		return err
	}
	c := o.cfg
	if !o.registerOnly {
		if lim, err := sim.RaiseFileLimit(uint64(c.Devices) + 1024); err != nil {
			fmt.Fprintf(stderr, "umbra sim: open-file limit is %d (%v); connections beyond it will fail\n", lim, err)
		}
	}
	fleet, err := sim.New(c)
	if err != nil {
		return usageError{err}
	}
	last := fleet.ID(fleet.Devices() - 1)
	fmt.Fprintf(stdout, "umbra sim: %d devices %s…%s, rings: %s\n", c.Devices, fleet.ID(0), last, countsLine(fleet.RingCounts()))
	if o.registerOnly {
		if err := fleet.Register(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "umbra sim: registered %d devices (thing type %s) at %s\n", fleet.Stats().Registered, fleet.ThingType(), o.api)
		return nil
	}
	switch {
	case c.StateFile == "":
		fmt.Fprintf(stdout, "umbra sim: no state file: devices boot with firmware %s\n", fleet.FirmwareDefault())
	case fleet.Restored() > 0:
		fmt.Fprintf(stdout, "umbra sim: state file %s: %d devices restored; firmware: %s\n", c.StateFile, fleet.Restored(), countsLine(fleet.FirmwareCounts()))
	default:
		fmt.Fprintf(stdout, "umbra sim: state file %s (new): devices boot with firmware %s\n", c.StateFile, fleet.FirmwareDefault())
	}
	fmt.Fprintf(stdout, "umbra sim: connecting to %s\n", c.Broker)
	runCtx := ctx
	if o.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	progCtx, stopProgress := context.WithCancel(context.Background())
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		if o.every > 0 {
			fleet.Progress(progCtx, stdout, o.every)
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
	if o.issued != nil && o.saveSecrets != "" {
		if err := o.issued.Save(o.saveSecrets); err != nil {
			fmt.Fprintf(stderr, "umbra sim: save secrets: %v\n", err)
		} else {
			fmt.Fprintf(stdout, "umbra sim: %d secrets written to %s\n", o.issued.Len(), o.saveSecrets)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stopErr := fleet.Stop(sctx)
	if stopErr != nil {
		fmt.Fprintf(stderr, "umbra sim: %v\n", stopErr)
	} else if c.StateFile != "" {
		fmt.Fprintf(stdout, "umbra sim: device state saved to %s\n", c.StateFile)
	}
	s := fleet.Stats()
	if o.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s)
	} else {
		fmt.Fprintf(stdout, "umbra sim: stopped after %s: %d connections (%d errors, %d lost), %d reports, %d deltas, %d gets, %d telemetry, "+
			"OTA %d started / %d succeeded / %d failed, %d reboots, %d crashes, %d gone, %d wakes, %d keys acted on, %d ignored\n",
			s.Elapsed.Round(time.Millisecond), s.Connects, s.ConnectErrors, s.ConnectionsLost, s.Reports, s.Deltas, s.Gets, s.Telemetry,
			s.OTAStarted, s.OTASucceeded, s.OTAFailed, s.Reboots, s.Crashes, s.Gone, s.Wakes, s.Acted, s.Ignored)
		if c.Download {
			fmt.Fprintf(stdout, "umbra sim: downloads: %d requests (%d resumed), %d bytes, %d images verified\n",
				s.DownloadRequests, s.DownloadResumes, s.DownloadBytes, s.DownloadsVerified)
		}
	}
	if startErr != nil && ctx.Err() == nil && runCtx.Err() == nil {
		return startErr
	}
	return stopErr
}
