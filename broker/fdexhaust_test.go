//go:build linux

package broker_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
)

// fdChildEnv makes TestListenersSurviveFDExhaustion's re-executed binary
// play the broker.
const fdChildEnv = "UMBRA_FDTEST_CHILD"

// TestListenersSurviveFDExhaustion runs a real broker in a child process
// whose open-file limit is low, uses up every descriptor it has (the way a
// fleet larger than the limit does), connects MQTT clients while accept(2)
// fails with EMFILE, then frees the descriptors: the waiting client and new
// ones must be served, /readyz must have said so in between, and the
// errors must be counted. The broker runs in another process because the
// client needs descriptors of its own while the broker has none.
func TestListenersSurviveFDExhaustion(t *testing.T) {
	if os.Getenv(fdChildEnv) == "1" {
		fdChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestListenersSurviveFDExhaustion$", "-test.v")
	cmd.Env = append(os.Environ(), fdChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child stderr:\n%s", stderr.String())
		}
	})
	lines := bufio.NewScanner(stdout)
	// expect reads the child's stdout up to a line starting with prefix
	// (the test framework prints its own lines too).
	expect := func(prefix string) string {
		t.Helper()
		for lines.Scan() {
			if l := lines.Text(); strings.HasPrefix(l, prefix) {
				return strings.TrimSpace(strings.TrimPrefix(l, prefix))
			}
		}
		t.Fatalf("child ended before %q: %v\nstderr:\n%s", prefix, lines.Err(), stderr.String())
		return ""
	}
	say := func(cmd string) {
		t.Helper()
		if _, err := io.WriteString(stdin, cmd+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	var mqttAddr, httpAddr string
	if _, err := fmt.Sscan(expect("ADDRS "), &mqttAddr, &httpAddr); err != nil {
		t.Fatal(err)
	}
	// One HTTP connection, opened now and kept alive, so that /readyz can
	// be asked while the broker has no descriptor for a new one.
	httpc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := httpc.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("before: /readyz %d %s", code, body)
	}

	say("exhaust")
	t.Logf("child used up its descriptors: %s", expect("EXHAUSTED "))
	// The kernel completes the handshake from its backlog; the broker's
	// accept(2) fails with EMFILE.
	waiting, err := net.Dial("tcp", mqttAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	if _, err := waiting.Write(connectPacket("waiting-device")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get("/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "mqtt") {
			t.Logf("/readyz while exhausted: %d %s", code, strings.TrimSpace(body))
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("/readyz while the MQTT listener cannot accept: %d %q, want 503 naming the mqtt listener", code, body)
			break
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}

	say("free")
	expect("FREED")
	start := time.Now()
	ack := make([]byte, 4)
	_ = waiting.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(waiting, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("client that connected during EMFILE: CONNACK %x, err %v (the listener stopped accepting)", ack, err)
	}
	t.Logf("client that connected during EMFILE got its CONNACK %v after the descriptors were freed", time.Since(start).Round(time.Millisecond))
	for i := range 5 {
		c, err := net.Dial("tcp", mqttAddr)
		if err != nil {
			t.Fatal(err)
		}
		connectIdle(t, c, i)
		c.Close()
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, body := get("/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after recovery: %d %s", code, body)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	_, metrics := get("/metrics")
	var line string
	for l := range strings.Lines(metrics) {
		if strings.HasPrefix(l, `umbra_listener_accept_errors_total{listener="mqtt",reason="emfile"}`) {
			line = strings.TrimSpace(l)
		}
	}
	if line == "" {
		t.Fatalf("no umbra_listener_accept_errors_total for mqtt/emfile in /metrics")
	}
	t.Logf("metrics: %s", line)
	say("quit")
	expect("BYE")
}

// fdChild is the broker side: it lowers its own descriptor limit, starts a
// broker and follows the parent's commands on stdin.
func fdChild(t *testing.T) {
	lim := syscall.Rlimit{Cur: 256, Max: 256}
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err == nil && cur.Max < lim.Max {
		lim.Max = cur.Max
		lim.Cur = cur.Max
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.EphemeralSessions = true
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	fmt.Printf("ADDRS %s %s\n", srv.MQTTAddr(), srv.HTTPAddr())
	var held []*os.File
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "exhaust":
			for {
				f, err := os.Open(os.DevNull)
				if err != nil {
					if !errors.Is(err, syscall.EMFILE) {
						t.Fatalf("open: %v", err)
					}
					break
				}
				held = append(held, f)
			}
			fmt.Printf("EXHAUSTED %d descriptors held, limit %d\n", len(held), lim.Cur)
		case "free":
			for _, f := range held {
				f.Close()
			}
			held = nil
			fmt.Println("FREED")
		case "quit":
			fmt.Println("BYE")
			return
		}
	}
}
