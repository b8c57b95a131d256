package broker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/testlog"
)

// startWith starts a broker from opts after setup (test seams) has run.
func startWith(t *testing.T, opts broker.Options, setup func(*broker.Broker)) *brokertest.Server {
	t.Helper()
	b, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	setup(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	return &brokertest.Server{Broker: b, Options: opts}
}

// waitStatus polls url until it answers want (or fails t after 10 s).
func waitStatus(t *testing.T, url string, want int) string {
	t.Helper()
	return waitStatusFor(t, url, want, 10*time.Second)
}

// waitStatusFor is waitStatus with another bound.
func waitStatusFor(t *testing.T, url string, want int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body := post(t, "GET", url, "", nil)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %s, want %d", url, code, body, want)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// metricValue finds one sample line in /metrics.
// TestReadyzFollowsStoreCommits is issue 13 item 10: with the disk full
// every update failed with 500 while /healthz and /readyz said 200. A fault
// injected into the real store's commit path turns /readyz to 503 (naming
// the store), /healthz stays 200 (liveness: a restart would not help), and
// /readyz is 200 again once a commit succeeds, without any traffic.
func TestReadyzFollowsStoreCommits(t *testing.T) {
	var full atomic.Bool
	srv := startWith(t, brokertest.LoopbackOptions(t.TempDir()), func(b *broker.Broker) {
		broker.SetCommitFault(b, func() error {
			if full.Load() {
				return fmt.Errorf("write umbra.db: %w", syscall.ENOSPC)
			}
			return nil
		})
	})
	url := srv.HTTPURL() + "/things/disk-test/shadow"
	httpDo(t, "POST", url, `{"state":{"reported":{"n":1}}}`, 200)
	waitStatus(t, srv.HTTPURL()+"/readyz", 200)

	full.Store(true)
	httpDo(t, "POST", url, `{"state":{"reported":{"n":2}}}`, 500)
	body := waitStatus(t, srv.HTTPURL()+"/readyz", 503)
	if !strings.Contains(body, "store cannot commit") || !strings.Contains(body, "no space left on device") {
		t.Errorf("/readyz while commits fail: %q, want the store named with its error", body)
	}
	t.Logf("/readyz while commits fail: %s", strings.TrimSpace(body))
	waitStatus(t, srv.HTTPURL()+"/healthz", 200)
	if v := metricValue(t, srv, "umbra_ready"); v != 0 {
		t.Errorf("umbra_ready = %v while commits fail, want 0", v)
	}
	if v := metricValue(t, srv, "umbra_store_commit_failures_total"); v == 0 {
		t.Errorf("umbra_store_commit_failures_total = %v", v)
	}

	full.Store(false) // space freed; no write comes in
	start := time.Now()
	waitStatus(t, srv.HTTPURL()+"/readyz", 200)
	t.Logf("/readyz 200 again %v after the disk recovered, with no traffic", time.Since(start).Round(time.Millisecond))
	httpDo(t, "POST", url, `{"state":{"reported":{"n":3}}}`, 200)
	if got := httpGet(t, url, 200); !strings.Contains(got, `"n":3`) {
		t.Fatalf("shadow after recovery: %s", got)
	}
}

// faultyListener injects accept errors: armed temporary failures hold a
// connection that is pending (as the kernel's backlog does during EMFILE)
// and return EMFILE that many times before handing it over; a fatal error
// ends accepting as a broken socket would.
type faultyListener struct {
	net.Listener
	mu      sync.Mutex
	emfile  int
	fatal   bool
	pending net.Conn
}

func (l *faultyListener) arm(emfile int, fatal bool) {
	l.mu.Lock()
	l.emfile, l.fatal = emfile, fatal
	l.mu.Unlock()
}

func (l *faultyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.pending != nil {
		if l.emfile > 0 {
			l.emfile--
			l.mu.Unlock()
			return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
		}
		c := l.pending
		l.pending = nil
		l.mu.Unlock()
		return c, nil
	}
	l.mu.Unlock()
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fatal {
		c.Close()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: errors.New("injected: listener broken")}
	}
	if l.emfile > 0 {
		l.pending = c
		l.emfile--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return c, nil
}

// TestListenersSurviveInjectedAcceptErrors drives each listener (MQTT TCP,
// MQTT over WebSocket, HTTP) through a run of EMFILE accepts with a client
// waiting: the client is served once accept works, the errors are counted
// and logged once per run; a listener whose accept fails for good is
// reported dead by /readyz and umbra_listener_up.
func TestListenersSurviveInjectedAcceptErrors(t *testing.T) {
	faults := map[string]*faultyListener{}
	var logs syncBuffer
	opts := brokertest.LoopbackOptions(t.TempDir())
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	srv := startWith(t, opts, func(b *broker.Broker) {
		broker.WrapListeners(b, func(name string, ln net.Listener) net.Listener {
			f := &faultyListener{Listener: ln}
			faults[name] = f
			return f
		})
	})
	const runs = 6 // 5+10+20+40+80+160 ms of back-off

	faults["mqtt"].arm(runs, false)
	c, err := net.Dial("tcp", srv.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	connectIdle(t, c, 1)
	c.Close()

	faults["websocket"].arm(runs, false)
	if _, err := wsConnect(t, srv, "", "ws-after-emfile"); err != nil {
		t.Fatalf("websocket after EMFILE: %v", err)
	}

	faults["http"].arm(runs, false)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(srv.HTTPURL() + "/healthz")
	if err != nil {
		t.Fatalf("http after EMFILE: %v", err)
	}
	resp.Body.Close()

	for _, name := range []string{"mqtt", "websocket", "http"} {
		if v := metricValue(t, srv, `umbra_listener_accept_errors_total{listener="`+name+`",reason="emfile"}`); v != float64(runs) {
			t.Errorf("%s accept errors counted: %v, want %d", name, v, runs)
		}
	}
	if n := strings.Count(logs.String(), "listener cannot accept connections"); n != 3 {
		t.Errorf("%d warnings for 3 runs of errors (one per run, rate-limited), log:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "listener accepting connections again"); n != 3 {
		t.Errorf("%d recovery notes, want 3", n)
	}
	waitStatus(t, srv.HTTPURL()+"/readyz", 200)

	// A listener that cannot accept for good is dead, and said so.
	faults["mqtt"].arm(0, true)
	if c, err := net.Dial("tcp", srv.MQTTAddr()); err == nil {
		_, _ = io.Copy(io.Discard, c) // closed by the fault
		c.Close()
	}
	body := waitStatus(t, srv.HTTPURL()+"/readyz", 503)
	if !strings.Contains(body, "mqtt listener stopped") {
		t.Errorf("/readyz with a dead MQTT listener: %q", body)
	}
	if v := metricValue(t, srv, `umbra_listener_up{listener="mqtt"}`); v != 0 {
		t.Errorf(`umbra_listener_up{listener="mqtt"} = %v, want 0`, v)
	}
	if v := metricValue(t, srv, `umbra_listener_up{listener="websocket"}`); v != 1 {
		t.Errorf(`umbra_listener_up{listener="websocket"} = %v, want 1`, v)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and the test.
type syncBuffer = testlog.Buffer

// TestClearTextCredentialsWarning is issue 13 item 10's other half: with
// authentication on, a listener reachable from other hosts and no TLS,
// start-up warns that secrets cross the network in clear text; on
// loopback it does not.
func TestClearTextCredentialsWarning(t *testing.T) {
	start := func(addr string) string {
		var logs syncBuffer
		opts := brokertest.LoopbackOptions(t.TempDir())
		opts.MQTTAddr = addr
		opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		opts.Auth = broker.AuthOptions{Enabled: true, APIKeys: []auth.APIKeyConfig{{Name: "root", SHA256: auth.SHA256Hex("k"), Role: auth.RoleAdmin}}}
		startWith(t, opts, func(*broker.Broker) {})
		return logs.String()
	}
	exposed := start("0.0.0.0:0")
	if !strings.Contains(exposed, "clear text") || !strings.Contains(exposed, "listener=mqtt") {
		t.Errorf("no clear-text warning for an exposed MQTT listener; log:\n%s", exposed)
	}
	if strings.Contains(exposed, "listener=http") {
		t.Errorf("warned about the loopback HTTP listener:\n%s", exposed)
	}
	if loop := start("127.0.0.1:0"); strings.Contains(loop, "clear text") {
		t.Errorf("clear-text warning on loopback:\n%s", loop)
	}
}
