package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeClusterPorts are the fixed ports of the README's cluster block:
// NATS client, route and monitoring ports, then each Umbra node's MQTT and
// HTTP ports. The test gives each a free port instead.
var readmeClusterPorts = []string{
	"4222", "4223", "4224", "6222", "6223", "6224", "8222", "8223", "8224",
	"1881", "1882", "1883", "8081", "8082", "8083",
}

// The README's "Scaling out" block, verbatim, with real processes: three
// nats-server processes (built from the module's nats-server) and three
// `umbra serve --cluster` processes built from this tree. A report
// published on node 2 is what node 1 (MQTT get) and node 3 (HTTP) return.
// Then node 2 is killed with SIGKILL and the two others keep serving the
// shadow and accept new updates (a versioned one accepted once across
// nodes); then one NATS server is killed and writes through every living
// node are still accepted (R3 with 2 of 3 servers).
func TestREADMECluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three NATS servers and three Umbra processes")
	}
	for _, tool := range []string{"sh", "curl", "mosquitto_pub", "mosquitto_rr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README cluster block needs %s: %v", tool, err)
		}
	}
	block := readmeBlock(t, "TestREADMECluster")
	bin := buildUmbra(t)
	binDir := filepath.Dir(bin)
	if out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "nats-server"), "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("go build nats-server: %v\n%s", err, out)
	}

	// Every fixed port, replaced in one pass by a port that was free.
	port := freeLoopbackPorts(t, len(readmeClusterPorts))
	mapped := map[string]string{}
	for i, p := range readmeClusterPorts {
		if !regexp.MustCompile(`\b` + p + `\b`).MatchString(block) {
			t.Fatalf("the block does not use port %s", p)
		}
		mapped[p] = strconv.Itoa(port[i])
	}
	script := regexp.MustCompile(`\b(`+strings.Join(readmeClusterPorts, "|")+`)\b`).
		ReplaceAllStringFunc(block, func(p string) string { return mapped[p] })
	httpURL := func(node int) string { return "http://127.0.0.1:" + mapped[strconv.Itoa(8080+node)] }

	dir := t.TempDir()
	outFile, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	cmd := exec.Command("sh", "-e", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + binDir + ":" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	// A process group of its own: the servers the block starts in the
	// background stay in it after the block ends; the cleanup kills the
	// whole group, also when the test fails half way.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = outFile, outFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if t.Failed() {
			for _, f := range []string{"n1.log", "n2.log", "n3.log", "u1.log", "u2.log", "u3.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("--- %s (last 3000 bytes)\n%s", f, tail(b, 3000))
			}
		}
	})
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	started := time.Now()
	select {
	case err = <-done:
	case <-time.After(90 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		err = errors.Join(errors.New("timed out after 90 s"), <-done)
	}
	out, _ := os.ReadFile(outFile.Name())
	t.Logf("README block ran in %s:\n%s", time.Since(started).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("the README block failed: %v", err)
	}

	// The block printed two documents, MQTT get on node 1 and HTTP get on
	// node 3: both the report made on node 2, version 1.
	var docs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(line, "{") {
			docs = append(docs, line)
		}
	}
	if len(docs) != 2 {
		t.Fatalf("the block printed %d documents, want 2 (node 1 MQTT, node 3 HTTP):\n%s", len(docs), out)
	}
	for i, d := range docs {
		checkShadow(t, fmt.Sprintf("block's answer %d", i+1), d, 1, map[string]any{"led_is_on": false}, nil)
	}

	// kill -9 node 2: nodes 1 and 3 keep serving, nothing accepted is lost.
	killPIDFile(t, dir, "u2.pid")
	waitRefused(t, strings.TrimPrefix(httpURL(2), "http://"))
	for _, n := range []int{1, 3} {
		code, body := shadowHTTP(t, "GET", httpURL(n), "")
		if code != http.StatusOK {
			t.Fatalf("node %d after node 2's death: HTTP %d %s", n, code, body)
		}
		checkShadow(t, fmt.Sprintf("node %d after node 2's death", n), body, 1, map[string]any{"led_is_on": false}, nil)
	}
	// An update through node 3, then a versioned one through node 1: both
	// accepted; the same stale version through node 3 is refused with 409.
	if code, body := shadowHTTP(t, "POST", httpURL(3), `{"state":{"desired":{"led_is_on":true}}}`); code != http.StatusOK {
		t.Fatalf("update through node 3: HTTP %d %s", code, body)
	}
	if code, body := shadowHTTP(t, "POST", httpURL(1), `{"state":{"desired":{"color":"red"}},"version":2}`); code != http.StatusOK {
		t.Fatalf("versioned update through node 1: HTTP %d %s", code, body)
	}
	if code, body := shadowHTTP(t, "POST", httpURL(3), `{"state":{"desired":{"color":"blue"}},"version":2}`); code != http.StatusConflict {
		t.Fatalf("the same version through node 3: HTTP %d %s, want 409", code, body)
	}
	for _, n := range []int{1, 3} {
		_, body := shadowHTTP(t, "GET", httpURL(n), "")
		checkShadow(t, fmt.Sprintf("node %d after the updates", n), body, 3,
			map[string]any{"led_is_on": false}, map[string]any{"led_is_on": true, "color": "red"})
	}

	// kill -9 NATS server 3 (node 3's server): with 2 of 3 replicas the
	// bucket still accepts writes through both living nodes; node 3 moves
	// to another NATS server. A request that meets the leader election may
	// get a 500, so each write is retried until accepted (an unversioned
	// update with the same content: a retry of an applied write changes
	// only the version).
	killPIDFile(t, dir, "n3.pid")
	natsKilled := time.Now()
	deadline := natsKilled.Add(45 * time.Second)
	for _, w := range []struct {
		node int
		key  string
	}{{1, "after_nats_loss_1"}, {3, "after_nats_loss_3"}} {
		for {
			code, body := shadowHTTP(t, "POST", httpURL(w.node), `{"state":{"desired":{"`+w.key+`":true}}}`)
			if code == http.StatusOK {
				t.Logf("update through node %d accepted %s after NATS server 3's death", w.node, time.Since(natsKilled).Round(time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no update accepted through node %d within 45 s of NATS server 3's death: HTTP %d %s", w.node, code, body)
			}
			t.Logf("update through node %d after NATS server 3's death: HTTP %d %s (retrying)", w.node, code, body)
			time.Sleep(200 * time.Millisecond) // pacing of the retry, not synchronisation
		}
	}
	var final []int64
	for _, n := range []int{1, 3} {
		code, body := shadowHTTP(t, "GET", httpURL(n), "")
		if code != http.StatusOK {
			t.Fatalf("node %d after NATS server 3's death: HTTP %d %s", n, code, body)
		}
		desired, version := desiredAndVersion(t, body)
		for _, k := range []string{"color", "after_nats_loss_1", "after_nats_loss_3"} {
			if _, ok := desired[k]; !ok {
				t.Errorf("node %d after NATS server 3's death: desired lacks %q: %s", n, k, body)
			}
		}
		if version < 5 {
			t.Errorf("node %d: version %d after five accepted updates", n, version)
		}
		final = append(final, version)
	}
	if final[0] != final[1] {
		t.Errorf("nodes 1 and 3 answer versions %d and %d", final[0], final[1])
	}
	// Both living nodes are ready with 2 of 3 NATS servers (once the
	// JetStream meta layer has a leader again, if it was on server 3).
	for _, n := range []int{1, 3} {
		for {
			code, body := getReady(httpURL(n))
			if code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d /readyz with 2 of 3 NATS servers: HTTP %d %s", n, code, body)
			}
			time.Sleep(200 * time.Millisecond) // pacing of the poll
		}
	}

	// Quorum lost: NATS server 2 dies too, one of three is left. An update
	// is refused with 500 (it cannot be acknowledged), /readyz turns 503;
	// once server 2 is back, every update acknowledged before is there.
	killPIDFile(t, dir, "n2.pid")
	quorumLost := time.Now()
	if code, body := shadowHTTP(t, "POST", httpURL(1), `{"state":{"desired":{"during_quorum_loss":true}}}`); code != http.StatusInternalServerError {
		t.Errorf("update with 1 of 3 NATS servers: HTTP %d %s, want 500", code, body)
	}
	t.Logf("update without quorum answered after %s", time.Since(quorumLost).Round(time.Millisecond))
	pollUntil(t, "node 1 /readyz 503 without quorum", 60*time.Second, func() (bool, string) {
		code, body := getReady(httpURL(1))
		return code == http.StatusServiceUnavailable, fmt.Sprintf("HTTP %d %s", code, body)
	})
	t.Logf("node 1 /readyz 503 %s after the quorum loss", time.Since(quorumLost).Round(time.Millisecond))

	restart := exec.Command(filepath.Join(binDir, "nats-server"), "-c", "n2.conf")
	restart.Dir = dir
	restart.Env = cmd.Env
	restart.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pgid} // the block's group: the cleanup kills it
	logf, err := os.OpenFile(filepath.Join(dir, "n2.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	restart.Stdout, restart.Stderr = logf, logf
	if err := restart.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = restart.Wait() }()
	restarted := time.Now()
	var body string
	pollUntil(t, "node 1 serving the shadow after NATS server 2's restart", 60*time.Second, func() (bool, string) {
		var code int
		code, body = shadowHTTP(t, "GET", httpURL(1), "")
		return code == http.StatusOK, fmt.Sprintf("HTTP %d %s", code, body)
	})
	t.Logf("node 1 served the shadow %s after NATS server 2's restart", time.Since(restarted).Round(time.Millisecond))
	desired, version := desiredAndVersion(t, body)
	for _, k := range []string{"led_is_on", "color", "after_nats_loss_1", "after_nats_loss_3"} {
		if _, ok := desired[k]; !ok {
			t.Errorf("after the quorum came back: desired lacks %q: %s", k, body)
		}
	}
	if version < final[0] {
		t.Errorf("after the quorum came back: version %d, was %d", version, final[0])
	}
	pollUntil(t, "node 1 /readyz 200 after NATS server 2's restart", 60*time.Second, func() (bool, string) {
		code, body := getReady(httpURL(1))
		return code == http.StatusOK, fmt.Sprintf("HTTP %d %s", code, body)
	})
}

// desiredAndVersion reads a shadow document's desired state and version.
func desiredAndVersion(t *testing.T, body string) (map[string]any, int64) {
	t.Helper()
	var doc struct {
		State struct {
			Desired map[string]any `json:"desired"`
		} `json:"state"`
		Version int64 `json:"version"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return doc.State.Desired, doc.Version
}

// pollUntil polls cond until it holds, failing the test after timeout
// with cond's last description.
func pollUntil(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond) // pacing of the poll
	}
}

// freeLoopbackPorts returns n distinct loopback ports that were free a
// moment ago (all held open together, so they differ).
func freeLoopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// killPIDFile sends SIGKILL to the process whose id the block wrote in
// dir/name.
func killPIDFile(t *testing.T, dir, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d (%s): %v", pid, name, err)
	}
}

// waitRefused waits until nothing listens on addr any more.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections 10 s after kill -9", addr)
		}
		time.Sleep(50 * time.Millisecond) // pacing of the poll
	}
}

func shadowHTTP(t *testing.T, method, base, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+"/things/lamp-1/shadow", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, base, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func getReady(base string) (int, string) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// checkShadow checks a shadow document's version, reported and desired
// state (nil: absent).
func checkShadow(t *testing.T, what, body string, version int64, reported, desired map[string]any) {
	t.Helper()
	var doc struct {
		State struct {
			Reported map[string]any `json:"reported"`
			Desired  map[string]any `json:"desired"`
		} `json:"state"`
		Version int64 `json:"version"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("%s: %v: %s", what, err, body)
	}
	if doc.Version != version || !sameJSON(doc.State.Reported, reported) || !sameJSON(doc.State.Desired, desired) {
		t.Fatalf("%s: %s\nwant version %d, reported %v, desired %v", what, body, version, reported, desired)
	}
}

func sameJSON(a, b map[string]any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
