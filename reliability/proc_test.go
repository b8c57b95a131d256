package reliability

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildUmbra compiles cmd/umbra into a temporary directory of t and returns
// the binary's path. The build cache makes repeated builds cheap.
func buildUmbra(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "umbra")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/umbra-iot/umbra/cmd/umbra")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build umbra: %v\n%s", err, out)
	}
	return bin
}

// umbraProc is one `umbra serve` subprocess.
type umbraProc struct {
	cmd      *exec.Cmd
	mqttAddr string
	httpAddr string
	stderr   *tailBuffer
	exited   chan struct{} // closed once the process has been waited for
	waitErr  error
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// Another process may take one before umbra binds it; startUmbra retries.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

var errPortTaken = errors.New("port taken")

// startUmbra runs `umbra serve` on dataDir with MQTT and HTTP on free
// loopback ports (WebSocket off), retrying on the rare port collision, and
// returns once it has printed its listeners. The process is killed when the
// test ends if still running.
func startUmbra(t testing.TB, bin, dataDir string, extraEnv ...string) *umbraProc {
	t.Helper()
	var lastErr error
	for range 5 {
		p, err := tryStartUmbra(bin, dataDir, extraEnv)
		if err == nil {
			t.Cleanup(func() { p.kill() })
			return p
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	t.Fatalf("start umbra: %v", lastErr)
	return nil
}

func tryStartUmbra(bin, dataDir string, extraEnv []string) (*umbraProc, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	p := &umbraProc{
		mqttAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		stderr:   &tailBuffer{max: 64 << 10},
		exited:   make(chan struct{}),
	}
	p.cmd = exec.Command(bin, "serve", "--data-dir", dataDir,
		"--mqtt-addr", p.mqttAddr, "--ws-addr", "off", "--http-addr", p.httpAddr, "--log-level", "warn")
	// Only what umbra needs: no UMBRA_* variable of the caller leaks in.
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, extraEnv...)
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			// The "data" line follows the listener lines, printed once every
			// listener is bound.
			if !signalled && strings.HasPrefix(strings.TrimSpace(sc.Text()), "data ") {
				close(ready)
				signalled = true
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case <-ready:
		return p, nil
	case <-p.exited:
		if strings.Contains(p.stderr.String(), "address already in use") {
			return nil, fmt.Errorf("%w: %s", errPortTaken, p.stderr.String())
		}
		return nil, fmt.Errorf("umbra exited before serving (%v): %s", p.waitErr, p.stderr.String())
	case <-time.After(60 * time.Second):
		p.kill()
		return nil, fmt.Errorf("umbra did not start within 60s: %s", p.stderr.String())
	}
}

func (p *umbraProc) pid() int { return p.cmd.Process.Pid }

// kill9 kills the process with SIGKILL and waits for it. It fails the test
// if the process had already exited on its own: that is a crash the test did
// not cause.
func (p *umbraProc) kill9(t testing.TB) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("umbra exited by itself before the kill (%v): %s", p.waitErr, p.stderr.String())
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// kill ends the process if it still runs (cleanup).
func (p *umbraProc) kill() {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *umbraProc) stop(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			t.Errorf("umbra exit after SIGTERM: %v: %s", p.waitErr, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		p.kill()
		t.Errorf("umbra did not exit within 30s of SIGTERM")
	}
}

func (p *umbraProc) mqttURL() string { return "tcp://" + p.mqttAddr }
func (p *umbraProc) httpURL() string { return "http://" + p.httpAddr }

// rssKiB reads VmRSS of the process from /proc.
func (p *umbraProc) rssKiB() (int64, error) {
	if runtime.GOOS != "linux" {
		return 0, errors.ErrUnsupported
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kib int64
			_, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kib)
			return kib, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// httpClient is shared by the tests: bounded, keep-alive.
var httpClient = &http.Client{
	Timeout: 10 * time.Second,
	Transport: &http.Transport{
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	},
}

// httpDo sends one request and returns status and body.
func httpDo(ctx context.Context, method, url string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// mustHTTP is httpDo that fails the test on a transport error.
func mustHTTP(t testing.TB, method, url string, body []byte) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, b, err := httpDo(ctx, method, url, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return code, b
}
