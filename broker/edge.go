package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/umbra-iot/umbra/internal/api"
	"github.com/umbra-iot/umbra/internal/store"
)

// The network edge: listeners that survive accept errors, browser origin
// checks, HTTP hardening, clear-text warnings, and readiness (/readyz).

// edgeMetrics are the broker's metrics about its listeners and readiness.
type edgeMetrics struct {
	acceptErrors   *prometheus.CounterVec
	httpRefused    *prometheus.CounterVec
	commitFailures prometheus.Counter
}

// commitProbeInterval is how often a broker whose store cannot commit tries
// an empty commit (a write of what is pending), so that /readyz turns true
// again without waiting for traffic.
const commitProbeInterval = time.Second

// commitFailure is the store's last failed commit.
type commitFailure struct {
	err   error
	since time.Time
}

// edgeState is the Broker's share of the edge: embedded in Broker.
type edgeState struct {
	edge      edgeMetrics
	watched   []*watchedListener
	commitErr atomic.Pointer[commitFailure]
	probeOnce sync.Once
	// Test seams (set through export_test.go before Start).
	wrapListener func(name string, ln net.Listener) net.Listener
	commitFault  func() error
}

// startEdge registers the edge metrics and warns about risky exposure. It
// runs in Start once the metrics registry exists.
func (b *Broker) startEdge() {
	b.edge.acceptErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "umbra_listener_accept_errors_total",
		Help: "Failed accepts by listener and reason (emfile, enfile, enobufs, enomem, other: retried with back-off; fatal: the listener stopped).",
	}, []string{"listener", "reason"})
	b.edge.httpRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "umbra_http_refused_total",
		Help: "HTTP requests and connections refused at the edge: cross_origin, content_type, conns_per_ip; and MQTT-over-WebSocket handshakes: ws_origin.",
	}, []string{"reason"})
	b.edge.commitFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "umbra_store_commit_failures_total",
		Help: "Group-commit transactions that failed as a whole (disk full, I/O error); /readyz is 503 until one succeeds.",
	})
	b.metrics.reg.MustRegister(b.edge.acceptErrors, b.edge.httpRefused, b.edge.commitFailures, edgeCollector{b})
	b.warnExposure()
}

var (
	listenerUpDesc = prometheus.NewDesc("umbra_listener_up", "1 while the listener accepts connections, 0 while accept fails or after it stopped.", []string{"listener"}, nil)
	readyDesc      = prometheus.NewDesc("umbra_ready", "1 while /readyz answers 200.", nil, nil)
)

type edgeCollector struct{ b *Broker }

func (c edgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- listenerUpDesc; ch <- readyDesc }

func (c edgeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.b.watched {
		ch <- prometheus.MustNewConstMetric(listenerUpDesc, prometheus.GaugeValue, l.up(), l.name)
	}
	ready := 1.0
	if len(c.b.notReady()) > 0 {
		ready = 0
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready)
}

// watch wraps a bound listener so that it survives temporary accept errors
// and reports to /readyz and the metrics.
func (b *Broker) watch(name string, ln net.Listener) net.Listener {
	if b.wrapListener != nil {
		ln = b.wrapListener(name, ln)
	}
	w := newWatchedListener(name, ln, b.log, b.edge.acceptErrors)
	b.watched = append(b.watched, w)
	return w
}

// warnExposure logs, at start-up, listeners that carry secrets in clear
// text: authentication on, no TLS, and an address other hosts can reach.
func (b *Broker) warnExposure() {
	o := b.opts
	for _, a := range []struct{ name, addr, secrets string }{
		{"mqtt", o.MQTTAddr, "device secrets and service passwords"},
		{"websocket", o.WSAddr, "device secrets and service passwords"},
		{"http", o.HTTPAddr, "API keys and issued device secrets"},
	} {
		if a.addr == Off || IsLoopback(a.addr) {
			continue
		}
		switch {
		case o.Auth.Enabled && b.tlsConf == nil:
			b.log.Warn("authentication is on but this listener has no TLS and is not on loopback: "+a.secrets+
				" cross the network in clear text; set tls.cert_file and tls.key_file", "listener", a.name, "addr", a.addr)
		case !o.Auth.Enabled:
			b.log.Warn("authentication is off and this listener is not on loopback (auth.allow_unauthenticated_remote): "+
				"anyone who can reach it can read and write every shadow", "listener", a.name, "addr", a.addr)
		}
	}
}

// commitOK is the store's OnCommit: metrics, and readiness back once a
// commit succeeds. The store calls it from its one committer goroutine.
func (b *Broker) commitOK(d time.Duration, writes int) {
	b.metrics.observeCommit(d, writes)
	if f := b.commitErr.Load(); f != nil {
		b.commitErr.Store(nil)
		b.log.Info("store commits again; ready", "failing_for", time.Since(f.since).Round(time.Millisecond))
	}
}

// commitFailed is the store's OnCommitError: a whole transaction failed.
func (b *Broker) commitFailed(err error) {
	b.edge.commitFailures.Inc()
	if errors.Is(err, store.ErrClosed) {
		return
	}
	if b.commitErr.Load() == nil {
		b.commitErr.Store(&commitFailure{err: err, since: time.Now()})
		b.log.Error("store cannot commit: writes fail and /readyz is 503 until a commit succeeds", "error", err)
	} else {
		b.commitErr.Store(&commitFailure{err: err, since: b.commitErr.Load().since})
	}
	b.probeOnce.Do(func() { b.bg.Go("commit probe", b.probeCommits) })
}

// probeCommits retries, while commits fail, a commit of what is pending,
// so that readiness returns without traffic.
func (b *Broker) probeCommits(ctx context.Context) {
	t := time.NewTicker(commitProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done(): // shutting down
			return
		case <-t.C:
		}
		if b.commitErr.Load() == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := b.db.Flush(ctx)
		cancel()
		if errors.Is(err, store.ErrClosed) {
			return
		}
	}
}

// notReady lists why the broker should not be sent work now.
func (b *Broker) notReady() []string {
	var problems []string
	if b.shuttingDown.Load() {
		problems = append(problems, "shutting down")
	}
	problems = append(problems, b.listenerProblems()...)
	if f := b.commitErr.Load(); f != nil {
		problems = append(problems, fmt.Sprintf("store cannot commit since %s: %v", f.since.Format(time.RFC3339), f.err))
	}
	problems = append(problems, b.clusterProblems()...)
	return problems
}

// originPolicy decides which web pages may open MQTT over WebSocket.
type originPolicy struct {
	any     bool
	allowed map[string]bool // normalized scheme://host[:port]
	// ownPorts are the ports of Umbra's own HTTP listener: its pages (the
	// dashboard), reached on the same host name, are not foreign.
	ownPorts []string
}

func newOriginPolicy(origins []string) (originPolicy, error) {
	p := originPolicy{allowed: map[string]bool{}}
	for _, o := range origins {
		if o == "*" {
			p.any = true
			continue
		}
		n, err := normalizeOrigin(o)
		if err != nil {
			return p, err
		}
		p.allowed[n] = true
	}
	return p, nil
}

func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("allowed origin %q: want scheme://host[:port]", o)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// allow reports whether r's Origin may use the WebSocket listener: a
// request without Origin is no browser's (devices, tools); a browser's is
// allowed when its origin is the listener itself (Origin host = Host),
// Umbra's own HTTP listener on the same host name, or on the allow-list. A
// "null" origin (sandboxed frames, file://) is refused.
func (p originPolicy) allow(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || p.any {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	if host, _, err := net.SplitHostPort(r.Host); err == nil && strings.EqualFold(u.Hostname(), host) && slices.Contains(p.ownPorts, u.Port()) {
		return true
	}
	return p.allowed[strings.ToLower(u.Scheme+"://"+u.Host)]
}

// validateEdge checks the edge options (called from validate).
func (o Options) validateEdge() []error {
	var errs []error
	if _, err := newOriginPolicy(o.AllowedOrigins); err != nil {
		errs = append(errs, err)
	} else if _, err := api.Protect(http.NotFoundHandler(), api.ProtectOptions{TrustedOrigins: o.AllowedOrigins}); err != nil {
		errs = append(errs, err)
	}
	if o.HTTP.MaxHeaderBytes > 0 && o.HTTP.MaxHeaderBytes < 1024 {
		errs = append(errs, fmt.Errorf("http max header bytes must be at least 1024 (got %d)", o.HTTP.MaxHeaderBytes))
	}
	return errs
}

// withDefaults fills the zero fields of the HTTP options.
func (h HTTPOptions) withDefaults() HTTPOptions {
	dur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	dur(&h.ReadHeaderTimeout, DefaultHTTPReadHeaderTimeout)
	dur(&h.ReadTimeout, DefaultHTTPReadTimeout)
	dur(&h.WriteTimeout, DefaultHTTPWriteTimeout)
	dur(&h.IdleTimeout, DefaultHTTPIdleTimeout)
	if h.MaxHeaderBytes == 0 {
		h.MaxHeaderBytes = DefaultHTTPMaxHeaderBytes
	}
	if h.MaxConnsPerIP == 0 {
		h.MaxConnsPerIP = DefaultHTTPMaxConnsPerIP
	}
	return h
}

// off maps a negative (disabled) bound to net/http's zero (no bound).
func off[T time.Duration | int](v T) T { return max(v, 0) }
