package broker_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
)

// closedByServer reads c until the server closes it and reports how long
// that took; a client-side deadline (the server kept it open) fails t.
func closedByServer(t *testing.T, c net.Conn, what string) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: still open after 10 s; the server should have closed it", what)
	}
	return time.Since(start)
}

// TestHTTPClosesIdleAndTrickledConnections is issue 13 item 6: idle
// unauthenticated keep-alive connections and trickled bodies were held
// open without a deadline. With short timeouts configured, the real
// server closes each; the event stream outlives them.
func TestHTTPClosesIdleAndTrickledConnections(t *testing.T) {
	const timeout = 400 * time.Millisecond
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.HTTP = broker.HTTPOptions{ReadHeaderTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, IdleTimeout: timeout}
		o.ConnectTimeout = timeout // the WebSocket listener's HTTP side
	})
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", srv.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// The event stream, opened first, must outlive every timeout below.
	stream, err := http.Get(srv.HTTPURL() + "/api/events?thing=trickle-target&types=shadow")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	events := bufio.NewReader(stream.Body)

	// A keep-alive connection left idle after one request.
	idle := dial()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", srv.HTTPAddr())
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz: %v %v", resp, err)
	}
	t.Logf("idle keep-alive connection closed by the server after %v", closedByServer(t, idle, "idle keep-alive connection").Round(time.Millisecond))

	// The same on the WebSocket listener: a request that does not upgrade.
	wsIdle, err := net.Dial("tcp", srv.WSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer wsIdle.Close()
	fmt.Fprintf(wsIdle, "GET /mqtt HTTP/1.1\r\nHost: %s\r\n\r\n", srv.WSAddr())
	if resp, err := http.ReadResponse(bufio.NewReader(wsIdle), nil); err != nil || resp.StatusCode != 400 {
		t.Fatalf("plain GET on the WebSocket listener: %v %v", resp, err)
	}
	t.Logf("idle keep-alive connection on the WebSocket listener closed after %v", closedByServer(t, wsIdle, "idle connection on the WebSocket listener").Round(time.Millisecond))

	// A connection that never sends a request.
	silent := dial()
	t.Logf("silent connection closed after %v", closedByServer(t, silent, "connection that sent nothing").Round(time.Millisecond))

	// A body trickled in: 100 KB announced, a byte every 20 ms (which
	// would take over half an hour).
	trickle := dial()
	fmt.Fprintf(trickle, "POST /things/trickle-target/shadow HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", srv.HTTPAddr())
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond) // the trickle's pace
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := trickle.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	t.Logf("trickled body cut off after %v", closedByServer(t, trickle, "trickled body").Round(time.Millisecond))

	// The stream, open longer than the read and write timeouts by now,
	// still delivers.
	httpDo(t, "POST", srv.HTTPURL()+"/things/trickle-target/shadow", `{"state":{"desired":{"on":true}}}`, 200)
	got := make(chan string, 1)
	go func() {
		for {
			l, err := events.ReadString('\n')
			if err != nil {
				got <- "error: " + err.Error()
				return
			}
			if strings.HasPrefix(l, "event: shadow") {
				got <- l
				return
			}
		}
	}()
	select {
	case l := <-got:
		if !strings.HasPrefix(l, "event: shadow") {
			t.Fatalf("event stream after the timeouts: %s", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("event stream delivered nothing after the timeouts")
	}
}

// TestHTTPConnectionsPerAddressAreCapped: connections from one address over
// http.max_conns_per_ip get a 429 and are closed; a slot freed is reusable.
func TestHTTPConnectionsPerAddressAreCapped(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.HTTP.MaxConnsPerIP = 3 })
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", srv.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Accepts are in order: the fourth comes after the three are counted.
	extra, err := net.Dial("tcp", srv.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(extra), nil)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth connection: %v %v, want 429", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	t.Logf("fourth connection: %d %s", resp.StatusCode, body)
	held[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(srv.HTTPURL() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection admitted after one was closed: %v %v", resp, err)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	code, m := post(t, "GET", srv.HTTPURL()+"/metrics", "", nil)
	if code != 200 || !strings.Contains(m, `umbra_http_refused_total{reason="conns_per_ip"}`) {
		t.Errorf("refusal not counted in /metrics: %d %.200s", code, m)
	}
}
