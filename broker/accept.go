package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/umbra-iot/umbra/internal/limits"
)

// Accept back-off, as net/http's Server.Serve: 5 ms doubling to 1 s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
	// acceptLogEvery rate-limits the log of a listener that keeps failing.
	acceptLogEvery = 10 * time.Second
	// acceptFailingFor is how long after its last failed accept a listener
	// still counts as failing (for /readyz): longer than the back-off, so
	// a listener retrying every second stays not-ready throughout.
	acceptFailingFor = 2 * acceptBackoffMax
)

// watchedListener is a net.Listener that survives temporary accept errors.
// A process out of file descriptors (EMFILE, ENFILE: one moment of a fleet
// larger than the limit) or kernel buffers makes accept fail; a loop that
// returned on that error, as Umbra's MQTT listener once did, never accepted
// again while /healthz said 200. This one retries with back-off, logs the
// trouble (rate-limited), counts it, and reports it to /readyz; only a
// closed listener or an error that is not temporary ends Accept, and the
// latter marks the listener dead.
type watchedListener struct {
	net.Listener
	name    string
	log     *slog.Logger
	errors  *prometheus.CounterVec // by listener and reason
	closed  chan struct{}
	closeMu sync.Once

	mu        sync.Mutex
	streak    int       // failed accepts since the last success
	since     time.Time // first failure of the streak
	lastFail  time.Time
	lastErr   error
	lastLog   time.Time
	dead      error
	now       func() time.Time
	backoffFn func(time.Duration) <-chan time.Time
}

func newWatchedListener(name string, ln net.Listener, log *slog.Logger, errs *prometheus.CounterVec) *watchedListener {
	return &watchedListener{Listener: ln, name: name, log: log, errors: errs, closed: make(chan struct{}), now: time.Now, backoffFn: time.After}
}

func (l *watchedListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			l.succeeded()
			return c, nil
		}
		select {
		case <-l.closed:
			return nil, err
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		if !temporaryAcceptError(err) {
			l.died(err)
			return nil, err
		}
		delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
		l.failed(err, delay)
		select {
		case <-l.backoffFn(delay):
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
}

func (l *watchedListener) Close() error {
	l.closeMu.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *watchedListener) failed(err error, retry time.Duration) {
	reason := acceptErrorReason(err)
	if l.errors != nil {
		l.errors.WithLabelValues(l.name, reason).Inc()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.lastFail, l.lastErr = now, err
	l.streak++
	if l.streak == 1 {
		l.since = now
		l.lastLog = now
		l.log.Warn("listener cannot accept connections; retrying with back-off", "listener", l.name, "error", err, "reason", reason, "retry_in", retry)
		return
	}
	if now.Sub(l.lastLog) >= acceptLogEvery {
		l.lastLog = now
		l.log.Warn("listener still cannot accept connections", "listener", l.name, "error", err, "failures", l.streak,
			"since", l.since.Format(time.RFC3339), "retry_in", retry)
	}
}

func (l *watchedListener) succeeded() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streak == 0 {
		return
	}
	l.log.Info("listener accepting connections again", "listener", l.name, "failures", l.streak, "after", l.now().Sub(l.since).Round(time.Millisecond))
	l.streak, l.lastErr = 0, nil
}

func (l *watchedListener) died(err error) {
	if l.errors != nil {
		l.errors.WithLabelValues(l.name, "fatal").Inc()
	}
	l.mu.Lock()
	l.dead = err
	l.mu.Unlock()
	l.log.Error("listener stopped: accept failed with an error that is not temporary", "listener", l.name, "error", err)
}

// problem explains why the listener is not ready ("" when it is).
func (l *watchedListener) problem() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.dead != nil:
		return fmt.Sprintf("%s listener stopped: %v", l.name, l.dead)
	case l.streak > 0 && l.now().Sub(l.lastFail) < acceptFailingFor:
		return fmt.Sprintf("%s listener cannot accept connections (%d failures since %s): %v",
			l.name, l.streak, l.since.Format(time.RFC3339), l.lastErr)
	}
	return ""
}

// up is 1 while the listener accepts, 0 while it fails or is dead.
func (l *watchedListener) up() float64 {
	if l.problem() != "" {
		return 0
	}
	return 1
}

// temporaryAcceptError reports errors after which accept may succeed again.
func temporaryAcceptError(err error) bool {
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM, syscall.EAGAIN, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// acceptErrorReason is the metrics label for an accept error.
func acceptErrorReason(err error) string {
	for _, r := range []struct {
		errno syscall.Errno
		name  string
	}{{syscall.EMFILE, "emfile"}, {syscall.ENFILE, "enfile"}, {syscall.ENOBUFS, "enobufs"}, {syscall.ENOMEM, "enomem"}} {
		if errors.Is(err, r.errno) {
			return r.name
		}
	}
	return "other"
}

// capListener caps concurrent connections per source address for the HTTP
// listener. A connection over the cap is answered 429 (in clear text; on a
// TLS listener it is just closed) and closed before net/http sees it.
type capListener struct {
	net.Listener
	limit   *limits.Conns
	tls     bool
	refused func()
	log     *slog.Logger
	logMu   sync.Mutex
	lastLog time.Time
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, ok := l.limit.Admit(c.RemoteAddr().String())
		if ok {
			return &releaseConn{Conn: c, release: release}, nil
		}
		l.refuse(c)
	}
}

func (l *capListener) refuse(c net.Conn) {
	if l.refused != nil {
		l.refused()
	}
	l.logMu.Lock()
	if now := time.Now(); now.Sub(l.lastLog) >= acceptLogEvery {
		l.lastLog = now
		l.log.Warn("http connection refused: too many from one address (limit http.max_conns_per_ip)",
			"remote", c.RemoteAddr().String(), "limit", l.limit.Max)
	}
	l.logMu.Unlock()
	if !l.tls {
		body := fmt.Sprintf(`{"code":429,"message":"Too Many Requests: more than %d connections from your address"}`, l.limit.Max)
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = fmt.Fprintf(c, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	}
	_ = c.Close()
}

// releaseConn releases its per-address slot when closed.
type releaseConn struct {
	net.Conn
	release func()
}

func (c *releaseConn) Close() error {
	c.release() // idempotent
	return c.Conn.Close()
}

// listenerProblems lists what keeps the broker's listeners from being ready.
func (b *Broker) listenerProblems() []string {
	var out []string
	for _, l := range b.watched {
		if p := l.problem(); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// writeReadyz answers /readyz with one line per problem.
func writeNotReady(w http.ResponseWriter, problems []string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte("not ready:\n- " + strings.Join(problems, "\n- ") + "\n"))
}

// capConnKey is the context key of a request's capped connection.
type capConnKey struct{}

// capConnContext (http.Server.ConnContext) lets a request reach its
// connection's per-address slot (see releaseLastConn), through TLS and
// other wrappers that expose the connection they wrap.
func capConnContext(ctx context.Context, c net.Conn) context.Context {
	for {
		if rc, ok := c.(*releaseConn); ok {
			return context.WithValue(ctx, capConnKey{}, rc)
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return ctx
		}
		c = w.NetConn()
	}
}

// releaseLastConn frees a capped connection's per-address slot when the
// handler of its last request returns (the client sent Connection: close,
// or the handler answered with it). net/http writes the end of the response
// after the handler returns and closes the connection later still, so
// without this the client, having read the whole response, could open its
// next connection before the old one's slot is free and be refused with
// 429 while it holds one connection fewer than the cap.
func releaseLastConn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rc, ok := r.Context().Value(capConnKey{}).(*releaseConn); ok {
			defer func() {
				if r.Close || strings.EqualFold(w.Header().Get("Connection"), "close") {
					rc.release()
				}
			}()
		}
		next.ServeHTTP(w, r)
	})
}
