package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"github.com/umbra-iot/umbra/internal/auth"
)

// buildUmbra compiles the binary once per test run.
func buildUmbra(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "umbra")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// The zero-config binary: `umbra serve` with no file, flag or variable
// listens on its documented defaults and accepts an MQTT connection. The
// defaults are fixed ports, so the server runs in a network namespace of its
// own (unshare, as root) where they cannot collide with anything.
func TestZeroConfigServeAcceptsConnection(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace for the default ports")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	bin := buildUmbra(t)
	dir := t.TempDir()
	cmd := exec.Command("unshare", "--net", "--", "sh", "-c", `ip link set lo up 2>/dev/null || ifconfig lo up; exec "$0" serve`, bin)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	lines := make(chan string, 32)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var printed []string
	deadline := time.After(30 * time.Second)
	for !strings.Contains(strings.Join(printed, "\n"), "data") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("umbra exited early; stdout %q stderr %s", printed, stderr.String())
			}
			printed = append(printed, l)
		case <-deadline:
			t.Fatalf("umbra printed %q; stderr %s", printed, stderr.String())
		}
	}
	out := strings.Join(printed, "\n")
	for _, want := range []string{"mqtt://127.0.0.1:1883", "ws://127.0.0.1:8083", "http://127.0.0.1:8080", filepath.Join("umbra-data", "umbra.db")} {
		if !strings.Contains(out, want) {
			t.Errorf("startup output lacks %q:\n%s", want, out)
		}
	}

	conn := dialInNamespace(t, cmd.Process.Pid, "127.0.0.1:1883")
	defer conn.Close()
	if _, err := conn.Write([]byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 0}); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x, err %v", ack, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "umbra-data", "umbra.db")); err != nil {
		t.Fatalf("data file: %v", err)
	}

	// SIGTERM drains and exits 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for range lines {
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr %s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("umbra did not exit after SIGTERM")
	}
}

// dialInNamespace dials addr from inside the network namespace of pid (the
// unshare process, whose namespace umbra inherited).
func dialInNamespace(t *testing.T, pid int, addr string) net.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		// This goroutine's thread enters the namespace and is discarded
		// afterwards (never unlocked), so no other goroutine runs there.
		runtime.LockOSThread()
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			res <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			res <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		// The listener is bound before umbra prints its banner.
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		res <- result{c, err}
	}()
	r := <-res
	if r.err != nil {
		t.Fatalf("dial %s in namespace of %d: %v", addr, pid, r.err)
	}
	return r.c
}

func TestServeReportsBadConfiguration(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "umbra.yaml")
	if err := os.WriteFile(cfg, []byte("mqtt:\n  addr: 127.0.0.1:0\n  bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"serve", "--config", cfg}, &stdout, &stderr, nil)
	if code != 1 || !strings.Contains(stderr.String(), "line 3") || !strings.Contains(stderr.String(), "bogus") {
		t.Fatalf("code %d stderr %q", code, stderr.String())
	}
	code = run(context.Background(), []string{"serve", "--no-such-flag"}, &stdout, &stderr, nil)
	if code != 2 {
		t.Fatalf("unknown flag: exit %d, want 2", code)
	}
	code = run(context.Background(), []string{"frobnicate"}, &stdout, &stderr, nil)
	if code != 2 || !strings.Contains(stderr.String(), `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: %d %q", code, stderr.String())
	}
}

func TestServeRunsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--data-dir", dir, "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", "127.0.0.1:0"}, pw, io.Discard, nil)
		pw.Close()
	}()
	var out []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		out = append(out, sc.Text())
		if strings.Contains(sc.Text(), "data") {
			cancel() // the banner is complete: ask it to stop
		}
	}
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %q", code, out)
	}
	all := strings.Join(out, "\n")
	if !strings.Contains(all, "stopped cleanly") || strings.Contains(all, "WebSocket") || !strings.Contains(all, "loopback only") {
		t.Fatalf("output:\n%s", all)
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, io.Discard, nil); code != 0 || !strings.HasPrefix(out.String(), "umbra ") {
		t.Fatalf("%d %q", code, out.String())
	}
}

func TestKeygenPrintsMatchingHashes(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"keygen"}, &out, io.Discard, nil); code != 0 {
		t.Fatalf("exit %d", code)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			fields[k] = strings.Fields(v)[0]
		}
	}
	if len(fields["secret"]) != 43 || auth.SHA256Hex(fields["secret"]) != fields["sha256"] ||
		bcrypt.CompareHashAndPassword([]byte(fields["password_bcrypt"]), []byte(fields["secret"])) != nil {
		t.Fatalf("keygen output does not hang together:\n%s", out.String())
	}
}

// An out-of-range number from the file, the environment or a flag is a
// precise error from `umbra serve`, not a value wrapped around.
func TestServeRefusesOutOfRangeNumbers(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "umbra.yaml")
	if err := os.WriteFile(cfg, []byte("mqtt:\n  addr: 127.0.0.1:0\n  max_packet_size: 4294967296\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"serve", "--data-dir", dir, "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", "off"}
	for _, c := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"file", append(base, "--config", cfg), nil, "max packet size must be at most 268435460 (got 4294967296)"},
		{"environment", base, []string{"UMBRA_MQTT_CLIENT_QUEUE=2147483648"}, "client queue must be at most 2147483647 (got 2147483648)"},
		{"environment, not a number", base, []string{"UMBRA_MQTT_MAX_INFLIGHT=lots"}, "UMBRA_MQTT_MAX_INFLIGHT"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), c.args, &stdout, &stderr, c.env)
			if code != 1 || !strings.Contains(stderr.String(), c.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), c.want)
			}
		})
	}
}
