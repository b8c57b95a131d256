package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/sim"
)

// readmeBlock returns the fenced block that follows the marker comment
// <!-- test: NAME runs the next block --> in the README.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	marker := "<!-- test: " + name + " runs the next block -->"
	_, rest, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatalf("no ```sh block after %q", marker)
	}
	block, _, ok := strings.Cut(rest, "\n```\n")
	if !ok {
		t.Fatalf("the ```sh block after %q does not end", marker)
	}
	return block + "\n"
}

// readmeRun is a README shell block that ran against an in-process Umbra.
type readmeRun struct {
	srv *brokertest.Server
	dir string // the block's working directory
	out string // its output (stdout and stderr)
}

// runREADMEBlock runs the README's sh block marked for test name verbatim,
// in sh -e with the umbra binary built from this tree on PATH, against an
// in-process Umbra: UMBRA_SERVER is its API, and the block's MQTT address
// is replaced by the in-process broker's. The block runs in a process group
// of its own, so a timeout also ends the simulator it starts in the
// background. The output (and logFile, a file the block writes in its
// directory, when given) is logged; a failing block fails the test.
func runREADMEBlock(t *testing.T, name string, timeout time.Duration, logFile string, tools ...string) readmeRun {
	t.Helper()
	for _, tool := range append([]string{"sh"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README block needs %s: %v", tool, err)
		}
	}
	block := readmeBlock(t, name)
	const readmeBroker = "tcp://127.0.0.1:1883"
	if !strings.Contains(block, readmeBroker) {
		t.Fatalf("the block does not name %s", readmeBroker)
	}
	bin := buildUmbra(t)
	srv := brokertest.Start(t)
	script := strings.ReplaceAll(block, readmeBroker, srv.MQTTURL())

	dir, home := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-e", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + filepath.Dir(bin) + ":" + os.Getenv("PATH"), "HOME=" + home, "UMBRA_SERVER=" + srv.HTTPURL()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	started := time.Now()
	err := cmd.Run()
	logged := ""
	if logFile != "" {
		b, _ := os.ReadFile(filepath.Join(dir, logFile))
		logged = "\n--- " + logFile + "\n" + string(b)
	}
	t.Logf("README block ran in %s:\n%s%s", time.Since(started).Round(time.Millisecond), out.String(), logged)
	if err != nil {
		t.Fatalf("the README block failed: %v", err)
	}
	return readmeRun{srv: srv, dir: dir, out: out.String()}
}

// The README's rehearsal, verbatim: its shell block runs in sh with the
// umbra binary built from this tree on PATH, against an in-process Umbra
// (UMBRA_SERVER is its API; the block's MQTT address is replaced by the
// in-process broker's). A crash loop that starts after install halts the
// rollout in the canary and rolls it back; no device outside the canary is
// ever asked for 2.0.0.
func TestREADMERehearsal(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a rollout on a simulated fleet (about half a minute)")
	}
	run := runREADMEBlock(t, "TestREADMERehearsal", 4*time.Minute, "sim.log", "awk")
	srv := run.srv

	// The devices and their rings, as the block registered them.
	rings := []sim.RingShare{{Name: "canary", Share: 0.1}, {Name: "early_adopters", Share: 0.2}}
	var canary, others []string
	for i := range 40 {
		id := fmt.Sprintf(sim.DefaultIDPattern, i)
		if sim.RingOf(id, rings) == "canary" {
			canary = append(canary, id)
		} else {
			others = append(others, id)
		}
	}
	if len(canary) == 0 {
		t.Fatal("no canary among the README's 40 devices")
	}
	text := run.out
	if !regexp.MustCompile(`(?m)^canary\s+` + strconv.Itoa(len(canary)) + `$`).MatchString(text) {
		t.Errorf("the ring buckets do not show %d canaries", len(canary))
	}
	for _, want := range []string{"state rolled_back", "did not complete"} {
		if !strings.Contains(text, want) {
			t.Errorf("the README block's output lacks %q", want)
		}
	}
	// No device outside the canary was ever asked for 2.0.0: its shadow
	// history has no desired write from the rollout.
	var touched []string
	for _, id := range others {
		if h := historyOf(t, srv, id); strings.Contains(h, "2.0.0") {
			touched = append(touched, id)
		}
	}
	if len(touched) > 0 {
		t.Errorf("%d devices outside the canary were asked for 2.0.0: %v", len(touched), touched)
	}
	// The canaries that installed 2.0.0 panicked, and every canary was
	// rolled back to the rollbackPatch: it runs 1.0.0 again (the block
	// waited for that) and its desired target_version is 1.0.0 or, once it
	// converged, absent. A canary still installing when the others' panics
	// halted the wave (a slow machine) never ran 2.0.0 at all; that is the
	// halt working, so it is allowed as long as some canary panicked.
	panicked := 0
	for _, id := range canary {
		desired, reported := shadowOf(t, srv, id)
		if tv, ok := desired["target_version"]; ok && tv != "1.0.0" {
			t.Errorf("%s: desired %v after the rollback", id, desired)
		}
		if reported["firmware_version"] != "1.0.0" {
			t.Errorf("%s: reported %v after the rollback, want firmware 1.0.0", id, reported)
		}
		h := historyOf(t, srv, id)
		ran := strings.Contains(h, `"firmware_version":"2.0.0"`)
		if ran && !strings.Contains(h, `"reset_reason":"panic"`) {
			t.Errorf("%s ran 2.0.0 without the panic the fault injects: %v", id, reported)
		}
		if ran {
			panicked++
		}
	}
	if panicked == 0 {
		t.Errorf("no canary ran 2.0.0 and panicked, yet the rollout halted")
	}
	// The watch's last frame: halted in the canary, rolled back, later
	// waves never reached.
	for _, want := range []string{"FAILED", "NOT_REACHED", "rolled_back (was regressed)"} {
		if !strings.Contains(text, want) {
			t.Errorf("the status lacks %q", want)
		}
	}
}

func historyOf(t *testing.T, srv *brokertest.Server, thing string) string {
	t.Helper()
	resp, err := http.Get(srv.HTTPURL() + "/things/" + thing + "/shadow/history")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("history of %s: HTTP %d %s", thing, resp.StatusCode, b)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("history of %s: %v", thing, err)
	}
	compact, _ := json.Marshal(v)
	return string(compact)
}
