package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
)

// The SDK compatibility test drives Umbra with unmodified AWS device SDKs
// from npm: aws-iot-device-sdk-v2 (MQTT 5 over TCP, its request-response
// shadow client) and aws-iot-device-sdk v1 (thingShadow over mqtts with a
// device certificate). The scripts live in testdata/sdk; the packages are
// installed by .ci/run (npm ci) outside the working tree, into
// $UMBRA_SDK_NODE_MODULES or, by default, <user cache dir>/umbra/sdk-compat
// (see testdata/sdk/README.md). Without node or the packages the test skips,
// except under CI (CI set), where that is a failure.

// sdkScriptTimeout bounds one script run (the scripts' own waits are 15 s).
const sdkScriptTimeout = 3 * time.Minute

type sdkEnv struct {
	node    string
	modules string // a node_modules directory
	scripts string // testdata/sdk, absolute
}

func sdkSetup(t *testing.T) sdkEnv {
	t.Helper()
	scripts, err := filepath.Abs(filepath.Join("..", "testdata", "sdk"))
	if err != nil {
		t.Fatal(err)
	}
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + "; install the SDKs with .ci/run, or: " + sdkInstallHint(scripts)
		if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
			t.Fatalf("CI is set and the device-SDK compatibility test cannot run: %s", msg)
		}
		t.Skipf("device-SDK compatibility test skipped: %s", msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not on PATH")
	}
	modules := sdkModulesDir()
	var pkg struct{ Dependencies map[string]string }
	data, err := os.ReadFile(filepath.Join(scripts, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &pkg); err != nil {
		t.Fatal(err)
	}
	for name, want := range pkg.Dependencies {
		data, err := os.ReadFile(filepath.Join(modules, name, "package.json"))
		if err != nil {
			missing("%s is not installed in %s", name, modules)
		}
		if got := gjson.GetBytes(data, "version").String(); got != want {
			missing("%s %s is installed in %s, testdata/sdk/package.json pins %s", name, got, modules, want)
		}
	}
	return sdkEnv{node: node, modules: modules, scripts: scripts}
}

// sdkModulesDir is where .ci/run installs the packages.
func sdkModulesDir() string {
	if dir := os.Getenv("UMBRA_SDK_NODE_MODULES"); dir != "" {
		return dir
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	return filepath.Join(cache, "umbra", "sdk-compat", "node_modules")
}

func sdkInstallHint(scripts string) string {
	dir := filepath.Dir(sdkModulesDir())
	return fmt.Sprintf("mkdir -p %s && cp %s/package.json %s/package-lock.json %s/ && npm ci --prefix %s --ignore-scripts", dir, scripts, scripts, dir, dir)
}

// sdkRun is one running script: its steps as they arrive, and its stdin.
type sdkRun struct {
	t      *testing.T
	steps  chan gjson.Result
	stdin  io.WriteCloser
	stderr *bytes.Buffer
	log    []string
	done   chan error
}

// run starts script with env (plus NODE_PATH), in a temporary directory so
// that nothing is written into the working tree.
func (e sdkEnv) run(t *testing.T, script string, env map[string]string) *sdkRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sdkScriptTimeout)
	cmd := exec.CommandContext(ctx, e.node, filepath.Join(e.scripts, script))
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "NODE_PATH="+e.modules)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.WaitDelay = 5 * time.Second
	r := &sdkRun{t: t, steps: make(chan gjson.Result, 64), stderr: new(bytes.Buffer), done: make(chan error, 1)}
	cmd.Stderr = r.stderr
	var err error
	if r.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			if !gjson.Valid(line) {
				r.steps <- gjson.Parse(fmt.Sprintf(`{"step":"unparsable","line":%q}`, line))
				continue
			}
			r.steps <- gjson.Parse(line)
		}
		close(r.steps)
		r.done <- cmd.Wait()
		cancel()
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// next returns the script's next step, which must be named want.
func (r *sdkRun) next(want string) gjson.Result {
	r.t.Helper()
	s, ok := <-r.steps
	if !ok {
		err := <-r.done
		r.done <- err
		r.t.Fatalf("script ended (%v) before step %q; steps so far:\n%s\nstderr:\n%s", err, want, strings.Join(r.log, "\n"), r.stderr)
	}
	r.log = append(r.log, s.Raw)
	if name := s.Get("step").String(); name != want {
		r.t.Fatalf("step %q, want %q: %s\nsteps so far:\n%s\nstderr:\n%s", name, want, s.Raw, strings.Join(r.log, "\n"), r.stderr)
	}
	return s
}

// proceed lets a script waiting on stdin go on.
func (r *sdkRun) proceed() {
	r.t.Helper()
	if _, err := io.WriteString(r.stdin, "go\n"); err != nil {
		r.t.Fatal(err)
	}
}

// finish waits for the script to exit successfully.
func (r *sdkRun) finish() {
	r.t.Helper()
	r.next("done")
	if s, ok := <-r.steps; ok {
		r.t.Fatalf("output after done: %s", s.Raw)
	}
	err := <-r.done
	r.done <- err
	if err != nil {
		r.t.Fatalf("script: %v\nstderr:\n%s", err, r.stderr)
	}
}

// expect checks path in step s against want, compared as JSON.
func expect(t *testing.T, s gjson.Result, path, want string) {
	t.Helper()
	got := s.Get(path)
	if !jsonEqual(got.Raw, want) {
		t.Fatalf("step %s: %s = %s, want %s (%s)", s.Get("step"), path, got.Raw, want, s.Raw)
	}
}

func jsonEqual(a, b string) bool {
	if a == "" {
		a = "null"
	}
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// aws-iot-device-sdk-v2 over MQTT 5 (plain TCP), its request-response shadow
// client: get/update/delta/convergence/409/NUL-terminated update/named
// shadows/offline delta with a persistent session/delete.
func TestSDKCompatV2RequestResponse(t *testing.T) {
	e := sdkSetup(t)
	srv := brokertest.Start(t)
	const thing = "sdk-v2-device"
	api := srv.HTTPURL() + "/things/" + thing + "/shadow"
	r := e.run(t, "v2_shadow.js", map[string]string{"UMBRA_HOST": "127.0.0.1", "UMBRA_PORT": port(t, srv.MQTTAddr()), "UMBRA_THING": thing})

	expect(t, r.next("connected"), "reasonCode", "0")
	r.next("delta-stream-open")
	s := r.next("get-absent")
	expect(t, s, "code", "404")
	expect(t, s, "message", `"No shadow exists with name: 'sdk-v2-device'"`)
	expect(t, r.next("report-boot"), "version", "1")

	r.next("wait-desired")
	if body := httpDo(t, "POST", api, `{"state":{"desired":{"led":true}}}`, 200); gjson.Get(body, "version").Int() != 2 {
		t.Fatalf("app update: %s", body)
	}
	r.proceed()
	s = r.next("delta")
	expect(t, s, "version", "2")
	expect(t, s, "state", `{"led":true}`)
	expect(t, r.next("get-delta"), "delta", `{"led":true}`)
	expect(t, r.next("report-acted"), "version", "3")
	s = r.next("get-converged")
	expect(t, s, "desired", "null") // converge: prune (the default)
	expect(t, s, "delta", "null")
	expect(t, s, "reported", `{"led":true,"fw":"1.0.0"}`)
	s = r.next("conflict")
	expect(t, s, "code", "409")
	expect(t, s, "message", `"Version conflict"`)
	expect(t, r.next("versioned-update"), "version", "4")
	s = r.next("nul-delta")
	expect(t, s, "version", "5")
	expect(t, s, "state", `{"color":"blue"}`)

	expect(t, r.next("named-update"), "version", "1")
	expect(t, r.next("named-delta"), "state", `{"interval":30}`)
	expect(t, r.next("named-get"), "desired", `{"interval":30}`)
	expect(t, r.next("named-delete"), "version", "1")
	s = r.next("named-get-deleted")
	expect(t, s, "code", "404")
	expect(t, s, "message", `"No shadow exists with name: 'config'"`)

	r.next("offline")
	// The client has sent DISCONNECT and closed its socket; wait until the
	// broker has seen it too, so that the next delta is queued in the
	// session rather than written to the closing connection.
	for deadline := time.Now().Add(10 * time.Second); ; {
		cl, ok := srv.MQTT().Clients.Get(thing)
		if !ok {
			t.Fatal("the device's persistent session is gone")
		}
		if cl.Closed() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the broker still sees the device connected 10 s after the script stopped it")
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation: the loop checks the condition
	}
	if body := httpDo(t, "POST", api, `{"state":{"desired":{"mode":"eco"}}}`, 200); gjson.Get(body, "version").Int() != 7 {
		t.Fatalf("update while offline: %s", body)
	}
	r.proceed()
	expect(t, r.next("reconnected"), "sessionPresent", "true")
	s = r.next("offline-delta")
	expect(t, s, "version", "7")
	expect(t, s, "state", `{"mode":"eco"}`)

	expect(t, r.next("delete"), "version", "7")
	expect(t, r.next("get-deleted"), "code", "404")
	r.finish()

	// The server's side: the shadow is gone, and history kept the
	// NUL-terminated request as the JSON it carried.
	httpDo(t, "GET", api, "", 404)
	hist := httpGet(t, api+"/history", 200)
	var nulEntry gjson.Result
	for _, e := range gjson.Get(hist, "entries").Array() {
		if e.Get("version").Int() == 5 && e.Get("op").String() == "update" {
			nulEntry = e
		}
	}
	if !jsonEqual(nulEntry.Get("request").Raw, `{"state":{"desired":{"color":"blue"}}}`) {
		t.Fatalf("history of version 5: %s (history %s)", nulEntry.Raw, hist)
	}
}

// aws-iot-device-sdk v1 thingShadow over mqtts, the device identified by its
// certificate (authentication on): get/update/delta/convergence, a
// NUL-terminated update through the SDK's publish, and the SDK's update after
// its own delete (it sends the version delete/accepted carried).
func TestSDKCompatV1ThingShadow(t *testing.T) {
	e := sdkSetup(t)
	s := startSecured(t)
	const thing = "sdk-v1-device"
	now := time.Now()
	cert := s.ca.Client(t, s.dir, thing, nil, now.Add(-time.Hour), now.Add(time.Hour))
	r := e.run(t, "v1_thingshadow.js", map[string]string{
		"UMBRA_HOST": "127.0.0.1", "UMBRA_PORT": port(t, s.MQTTAddr()), "UMBRA_THING": thing,
		"UMBRA_CA": s.ca.File, "UMBRA_CERT": cert.CertFile, "UMBRA_KEY": cert.KeyFile,
	})
	path := "/things/" + thing + "/shadow"

	r.next("connected")
	r.next("registered")
	st := r.next("get-absent")
	expect(t, st, "stat", `"rejected"`)
	expect(t, st, "code", "404")
	st = r.next("report-boot")
	expect(t, st, "stat", `"accepted"`)
	expect(t, st, "version", "1")

	r.next("wait-desired")
	s.api(t, s.operator, "POST", path, `{"state":{"desired":{"fan":"on"}}}`, 200)
	r.proceed()
	st = r.next("delta")
	expect(t, st, "version", "2")
	expect(t, st, "state", `{"fan":"on"}`)
	expect(t, r.next("report-acted"), "version", "3")
	st = r.next("get-converged")
	expect(t, st, "desired", "null")
	expect(t, st, "reported", `{"temp":20,"fan":"on"}`)
	st = r.next("nul-delta")
	expect(t, st, "version", "4")
	expect(t, st, "state", `{"color":"red"}`)

	st = r.next("delete")
	expect(t, st, "stat", `"accepted"`)
	expect(t, st, "version", "4")
	st = r.next("update-after-delete")
	expect(t, st, "stat", `"accepted"`)
	expect(t, st, "version", "5")
	st = r.next("get-recreated")
	expect(t, st, "version", "5")
	expect(t, st, "reported", `{"temp":21}`)
	r.finish()

	// The SDK really sent the deleted version, and the device is recorded
	// as the certificate identity.
	hist := s.api(t, s.viewer, "GET", path+"/history", "", 200)
	var entry gjson.Result
	for _, e := range gjson.Get(hist, "entries").Array() {
		if e.Get("version").Int() == 5 {
			entry = e
		}
	}
	if entry.Get("request.version").Int() != 4 || !strings.Contains(entry.Get("principal").String(), thing) {
		t.Fatalf("history of version 5: %s", entry.Raw)
	}
	doc := s.api(t, s.viewer, "GET", path, "", 200)
	if gjson.Get(doc, "version").Int() != 5 || gjson.Get(doc, "state.desired").Exists() {
		t.Fatalf("stored shadow: %s", doc)
	}
}
