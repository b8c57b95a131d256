// Package bench measures a whole Umbra: MQTT clients (paho) drive a broker
// (started in-process with a temporary data directory, or a running one) and
// each scenario reports its throughput, its latency distribution
// (HdrHistogram: p50, p90, p99, p99.9, max) and what the broker used (CPU,
// memory, group commits).
//
// Scenarios:
//
//   - raw: each client publishes QoS 1 on a plain topic it subscribes to and
//     waits for its own message before the next: the broker's QoS 1 round
//     trip, the ceiling for everything else; and, as raw@rate, the same
//     open loop as shadow-update@rate on plain topics (the latency floor
//     under the shadow percentiles at that rate);
//   - shadow-update: each client publishes a QoS 1 shadow update and waits
//     for /update/accepted (sent after the fsync): at maximum rate (closed
//     loop) and, as shadow-update@rate, open loop at a fixed total rate with
//     latency measured from each request's intended send time;
//   - delta-fanout: app connections set desired state on many devices; the
//     latency is from the app's publish to the device receiving its delta;
//   - connections: N idle devices connect (raw MQTT sockets, each subscribed
//     to its delta topic); connect rate, connect latency and the broker's
//     memory per connection.
//
// raw and shadow-update always run in the same invocation so that their
// ratio (the cost of durable shadows) holds on a noisy machine.
package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/broker"
)

// Scenario names.
const (
	Raw          = "raw"
	ShadowUpdate = "shadow-update"
	DeltaFanout  = "delta-fanout"
	Connections  = "connections"
)

// AllScenarios is the default set, in the order they run.
var AllScenarios = []string{Raw, ShadowUpdate, DeltaFanout, Connections}

// Options configure a run. The zero value (plus Scenarios) runs every
// scenario against an in-process broker with the defaults below.
type Options struct {
	// Target is the MQTT URL of a running broker (tcp://host:port, or
	// tls://host:port); empty starts an Umbra in-process with a temporary
	// data directory and the per-thing shadow rate limit off.
	Target string
	// CAFile is the PEM CA that a tls:// target's certificate (and an
	// https:// TargetHTTP's) chains to; empty trusts the system's roots.
	CAFile string
	// TargetHTTP is the target's HTTP base URL (http://host:port), for
	// /metrics (process_cpu_seconds_total, process_resident_memory_bytes);
	// APIKey is sent when the target has auth on (viewer role suffices).
	TargetHTTP string
	APIKey     string
	// Username and Password are sent by every bench client (a service
	// principal allowed to use $aws/things/+/shadow/# and bench/#) when the
	// target has auth on.
	Username, Password string
	// DataDir is the in-process broker's data directory (default: a new
	// temporary directory, removed afterwards).
	DataDir string

	Scenarios []string // default AllScenarios

	Clients  int           // raw and shadow-update clients (default 50)
	Duration time.Duration // measured time per scenario phase (default 10s)
	Warmup   time.Duration // unmeasured time before each phase (default 1s)
	Payload  int           // approximate request payload size (default 80 bytes)

	Rate        float64 // raw@rate and shadow-update@rate total messages/s (default 5000; negative skips)
	RateClients int     // devices sharing that rate (default 500: 10/s each)

	FanoutDevices int // delta-fanout devices (default 1000)
	FanoutApps    int // app connections setting desired (default 8)
	FanoutRounds  int // rounds of desired changes (default 5)

	Conns       int  // connections scenario: idle devices (default 10000)
	ConnWorkers int  // concurrent connection attempts (default 128)
	ConnNoSub   bool // connect without subscribing to the delta topic
	// ConnHold keeps the idle connections open this long after measuring.
	ConnHold time.Duration

	// SourceAddrs are local addresses to connect from, in turn (needed
	// beyond ~28k connections to one address). Empty: 127.0.0.2… are used
	// automatically for more than 20k connections to a loopback broker.
	SourceAddrs []net.IP

	Timeout time.Duration // bound on each wait for the broker (default 10s)

	// CPUProfile, when set, writes a CPU profile of this process over the
	// whole run (for an in-process broker: broker and clients).
	CPUProfile string
	// MemProfile, when set, writes a heap profile of this process while the
	// connections scenario holds its connections (in-process broker).
	MemProfile string
	// Progress receives a line per phase; nil discards.
	Progress io.Writer
	// BrokerOptions adjusts the in-process broker's options.
	BrokerOptions func(*broker.Options)
	// CompareHistory (in-process only) also runs the closed-loop
	// shadow-update on a second broker that keeps no shadow history, right
	// after the first, and reports their ratio.
	CompareHistory bool
}

// ErrRejected is returned (wrapped) by Run when a broker rejected shadow
// updates: the figures then do not measure accepted updates.
var ErrRejected = errors.New("shadow updates were rejected")

func (o Options) withDefaults() Options {
	if len(o.Scenarios) == 0 {
		o.Scenarios = AllScenarios
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Clients, 50)
	def(&o.Payload, 80)
	def(&o.RateClients, 500)
	def(&o.FanoutDevices, 1000)
	def(&o.FanoutApps, 8)
	def(&o.FanoutRounds, 5)
	def(&o.Conns, 10000)
	def(&o.ConnWorkers, 128)
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	} else if o.Warmup == 0 {
		o.Warmup = time.Second
	}
	if o.Rate == 0 {
		o.Rate = 5000
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// Report is the outcome of a run.
type Report struct {
	Started time.Time `json:"started"`
	Machine Machine   `json:"machine"`
	// Broker says what was measured: "in-process" or the target URL.
	Broker string   `json:"broker"`
	Notes  []string `json:"notes"`
	// ShadowVsRaw is shadow-update throughput (max rate) ÷ raw throughput,
	// both from this run (0 when either did not run).
	ShadowVsRaw float64 `json:"shadow_vs_raw,omitempty"`
	// HistoryOnVsOff is shadow-update throughput (max rate) with history
	// kept ÷ the same on a broker that keeps none (Options.CompareHistory).
	HistoryOnVsOff float64  `json:"history_on_vs_off,omitempty"`
	Results        []Result `json:"results"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs     int    `json:"cpus"`
	MemBytes int64  `json:"mem_bytes"`
	Go       string `json:"go"`
	OS       string `json:"os"`
}

// Result is one scenario (or one variant of it).
type Result struct {
	Scenario string `json:"scenario"`
	Variant  string `json:"variant,omitempty"`
	Clients  int    `json:"clients"`
	Ops      int64  `json:"ops"`
	Errors   int64  `json:"errors"`
	// Rejected is how many shadow updates were answered on /rejected,
	// warm-up included (also counted in Errors when measured). Any makes
	// Run return an error.
	Rejected int64   `json:"rejected"`
	Seconds  float64 `json:"seconds"`
	PerSec   float64 `json:"ops_per_sec"`
	// TargetRate is the offered rate of an open-loop variant.
	TargetRate float64 `json:"target_rate,omitempty"`
	Latency    Latency `json:"latency"`
	Server     Server  `json:"server"`
	// BytesPerConn is the connections scenario's broker memory growth per
	// idle connection (RSS; and Go heap + stacks for an in-process broker).
	RSSPerConn       float64  `json:"rss_per_conn_bytes,omitempty"`
	HeapStackPerConn float64  `json:"heap_stack_per_conn_bytes,omitempty"`
	Notes            []string `json:"notes,omitempty"`
}

// runner holds what the scenarios share.
type runner struct {
	opts    Options
	mqttURL string
	// mqttURLs, when set, are the nodes client i connects to in turn
	// (CompareShadowUpdates on a cluster).
	mqttURLs []string
	tls      *tls.Config // for a tls:// target (nil: plain TCP)
	probe    *probe
	dialers  []*net.Dialer
	report   *Report
	// inProcess is the broker started by Run (nil for a target).
	inProcess *broker.Broker
}

// Run runs the scenarios in order and returns their results. A scenario
// that fails stops the run; the results so far are returned with the error.
func Run(ctx context.Context, opts Options) (*Report, error) {
	o := opts.withDefaults()
	for _, s := range o.Scenarios {
		switch s {
		case Raw, ShadowUpdate, DeltaFanout, Connections:
		default:
			return nil, fmt.Errorf("bench: unknown scenario %q (want %s)", s, strings.Join(AllScenarios, ", "))
		}
	}
	r := &runner{opts: o, report: &Report{Started: time.Now(), Machine: machine()}}
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	if err := r.setupTLS(); err != nil {
		return nil, err
	}
	stop, err := r.startBroker(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	r.setupDialers()

	if o.CompareHistory && o.Target != "" {
		return nil, errors.New("bench: --compare-history needs the in-process broker (no --target)")
	}
	var raw, shadowMax float64
	for _, s := range o.Scenarios {
		var res []Result
		var err error
		switch s {
		case Raw:
			res, err = r.runRaw(ctx)
			if err == nil {
				raw = res[0].PerSec
			}
		case ShadowUpdate:
			res, err = r.runShadowUpdate(ctx)
			if err == nil && len(res) > 0 {
				shadowMax = res[0].PerSec
			}
			if err == nil && o.CompareHistory {
				var off Result
				off, err = r.historyOff(ctx)
				res = append(res, off)
				if err == nil && off.PerSec > 0 {
					r.report.HistoryOnVsOff = shadowMax / off.PerSec
				}
			}
		case DeltaFanout:
			res, err = r.runFanout(ctx)
		case Connections:
			res, err = r.runConnections(ctx)
		}
		r.report.Results = append(r.report.Results, res...)
		if err != nil {
			return r.report, errors.Join(fmt.Errorf("bench %s: %w", s, err), r.rejected())
		}
	}
	if raw > 0 && shadowMax > 0 {
		r.report.ShadowVsRaw = shadowMax / raw
	}
	return r.report, r.rejected()
}

// rejected is ErrRejected with the counts, or nil when none was rejected.
func (r *runner) rejected() error {
	var n int64
	var where []string
	for _, x := range r.report.Results {
		if x.Rejected > 0 {
			n += x.Rejected
			where = append(where, fmt.Sprintf("%d in %s %s", x.Rejected, x.Scenario, x.Variant))
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("bench: %d %w (%s)", n, ErrRejected, strings.Join(where, ", "))
}

// historyOff runs the closed-loop shadow-update on a second in-process
// broker that keeps no shadow history, then restores the first.
func (r *runner) historyOff(ctx context.Context) (Result, error) {
	saved := *r
	defer func() {
		report := r.report
		*r = saved
		r.report = report
	}()
	user := r.opts.BrokerOptions
	r.opts.BrokerOptions = func(bo *broker.Options) {
		if user != nil {
			user(bo)
		}
		bo.HistoryVersions = -1
	}
	r.opts.DataDir = "" // a fresh temporary directory
	stop, err := r.startBroker(ctx)
	if err != nil {
		return Result{Scenario: ShadowUpdate, Variant: "max rate, history off"}, err
	}
	defer stop()
	res, err := r.closedLoop(ctx, true)
	res.Variant = "max rate, history off"
	return res, err
}

func (r *runner) startBroker(ctx context.Context) (stop func(), err error) {
	o := r.opts
	if o.Target != "" {
		r.mqttURL = o.Target
		r.report.Broker = o.Target
		r.probe = &probe{apiKey: o.APIKey}
		if r.tls != nil {
			r.probe.client = &http.Client{Transport: &http.Transport{TLSClientConfig: r.tls}}
		}
		if o.TargetHTTP != "" {
			r.probe.metrics = strings.TrimRight(o.TargetHTTP, "/") + "/metrics"
		} else {
			r.report.Notes = append(r.report.Notes, "no --target-http: the broker's CPU and memory are not measured")
		}
		r.report.Notes = append(r.report.Notes, "target broker: its own limits apply (the default 20 shadow requests/s per thing throttles closed-loop shadow-update clients; start it with limits.shadow_rate: -1 to measure capacity)")
		if _, err := r.probe.sample(ctx); err != nil && r.probe.metrics != "" {
			return nil, fmt.Errorf("bench: target metrics: %w", err)
		}
		return func() {}, nil
	}
	dir := o.DataDir
	owned := false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "umbra-bench-"); err != nil {
			return nil, err
		}
		owned = true
	}
	bo := broker.Options{
		DataDir:  dir,
		MQTTAddr: "127.0.0.1:0",
		WSAddr:   broker.Off,
		HTTPAddr: "127.0.0.1:0",
		Logger:   slog.New(slog.DiscardHandler),
		// A benchmark measures capacity, not AWS's 20 requests/s per thing.
		Limits: broker.LimitOptions{ShadowRate: -1},
	}
	if o.BrokerOptions != nil {
		o.BrokerOptions(&bo)
	}
	b, err := broker.New(bo)
	if err != nil {
		return nil, err
	}
	if err := b.Start(ctx); err != nil {
		if owned {
			_ = os.RemoveAll(dir)
		}
		return nil, err
	}
	r.inProcess = b
	r.mqttURL = "tcp://" + b.MQTTAddr()
	r.probe = &probe{inProcess: true, metrics: "http://" + b.HTTPAddr() + "/metrics"}
	r.report.Broker = "in-process"
	sessions := "on"
	if bo.EphemeralSessions {
		sessions = "off"
	}
	history := "default"
	if bo.HistoryVersions != 0 {
		history = strconv.Itoa(bo.HistoryVersions)
	}
	rate := "off (limits.shadow_rate: -1)"
	if bo.Limits.ShadowRate > 0 {
		rate = fmt.Sprintf("%g/s", bo.Limits.ShadowRate)
	}
	r.report.Notes = append(r.report.Notes,
		"in-process broker (data in "+dir+", fsync "+map[bool]string{false: "on", true: "OFF"}[bo.UnsafeNoSync]+", session persistence "+sessions+", history "+history+"); per-thing shadow rate limit "+rate,
		"in-process: server CPU is the whole process (broker + bench clients on the same cores)")
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = b.Shutdown(sctx)
		if owned {
			_ = os.RemoveAll(dir)
		}
	}, nil
}

// setupTLS prepares the client TLS configuration of a tls:// (ssl://,
// mqtts://) target.
func (r *runner) setupTLS() error {
	if r.opts.Target == "" {
		return nil
	}
	u, err := url.Parse(r.opts.Target)
	if err != nil {
		return fmt.Errorf("bench: target %q: %w", r.opts.Target, err)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		if r.opts.CAFile != "" {
			return fmt.Errorf("bench: --ca-file is for a tls:// target, not %s://", u.Scheme)
		}
		return nil
	case "tls", "ssl", "mqtts":
	default:
		return fmt.Errorf("bench: target %q: want tcp:// or tls://", r.opts.Target)
	}
	// The key exchanges ESP-IDF's mbedTLS offers: a Go client's default
	// post-quantum key share is 1.2 KB larger, and so is what the broker
	// keeps of the handshake per connection.
	cfg := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12, CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
	if r.opts.CAFile != "" {
		pem, err := os.ReadFile(r.opts.CAFile)
		if err != nil {
			return fmt.Errorf("bench: CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("bench: CA file %s: no PEM certificate in it", r.opts.CAFile)
		}
	}
	r.tls = cfg
	return nil
}

func (r *runner) setupDialers() {
	addrs := r.opts.SourceAddrs
	if len(addrs) == 0 && r.needsSources() {
		for i := range (r.opts.Conns + 19999) / 20000 {
			addrs = append(addrs, net.IPv4(127, 0, 0, byte(2+i)))
		}
	}
	for _, ip := range addrs {
		r.dialers = append(r.dialers, &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: r.opts.Timeout, KeepAlive: -1})
	}
}

// needsSources: more than 20k connections to a loopback broker.
func (r *runner) needsSources() bool {
	if !contains(r.opts.Scenarios, Connections) || r.opts.Conns <= 20000 {
		return false
	}
	host := r.mqttURL
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		return false
	}
	ip := net.ParseIP(h)
	return h == "localhost" || ip != nil && ip.IsLoopback()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(r.opts.Progress, format+"\n", args...)
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb); err == nil {
			m.MemBytes = kb * 1024
		}
	}
	return m
}
