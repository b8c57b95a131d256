package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

var update = flag.Bool("update", false, "rewrite testdata/cli/*.golden")

type cliRunner struct {
	t    *testing.T
	bin  string
	home string
	srv  string
}

// run runs the binary with args and returns stdout, stderr and exit code.
func (r *cliRunner) run(args ...string) (string, string, int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, args...)
	cmd.Env = []string{"HOME=" + r.home, "UMBRA_SERVER=" + r.srv, "PATH=" + os.Getenv("PATH")}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatalf("umbra %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func (r *cliRunner) ok(args ...string) string {
	r.t.Helper()
	out, errs, code := r.run(args...)
	if code != 0 {
		r.t.Fatalf("umbra %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

var timeRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)

func golden(t *testing.T, name, got string, ids ...string) {
	t.Helper()
	got = timeRE.ReplaceAllString(got, "TIME")
	for i, id := range ids {
		got = strings.ReplaceAll(got, id, fmt.Sprintf("%-*s", len(id), fmt.Sprintf("ID%d", i+1)))
	}
	path := filepath.Join("testdata", "cli", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestCLI -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

func httpPost(t *testing.T, url, body string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Errorf("POST %s: %d", url, resp.StatusCode)
	}
}

func TestCLI(t *testing.T) {
	bin := buildUmbra(t)
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	r := &cliRunner{t: t, bin: bin, home: t.TempDir(), srv: srv.HTTPURL()}

	t.Run("tables", func(t *testing.T) {
		r.t = t
		var b strings.Builder
		step := func(args ...string) {
			fmt.Fprintf(&b, "$ umbra %s\n%s", strings.Join(args, " "), r.ok(args...))
		}
		step("things", "create", "esp32-001", "ring=canary", "site=lab")
		step("things", "create", "esp32-002", "ring=general", "site=lab")
		step("things", "tag", "esp32-002", "floor=2", "site-")
		step("things", "ls")
		step("shadow", "update", "esp32-001", "--desired", "led=on", "--desired", "interval_s:=30")
		step("shadow", "update", "esp32-001", `{"state":{"reported":{"led":"off","firmware_version":"1.0"}}}`)
		step("shadow", "get", "esp32-001")
		step("shadow", "history", "esp32-001")
		step("shadow", "update", "esp32-001", "--name", "ota", "--desired", "url=https://fw.example/1.1.bin")
		step("shadow", "update", "esp32-001", "--name", "config", "--reported", "tz=UTC")
		step("shadow", "ls", "esp32-001")
		step("shadow", "ls", "esp32-001", "--limit", "1")
		step("groups", "create", "canaries", "--query", "attributes.ring:canary")
		step("groups", "create", "lab")
		step("groups", "add", "lab", "esp32-001", "esp32-002")
		step("groups", "ls")
		step("groups", "get", "lab")
		step("things", "get", "esp32-001")
		step("query", "attributes.ring:canary")
		step("query", "*", "--count")
		step("query", "*", "--buckets", "attributes.ring")
		jobOut := r.ok("jobs", "create", "slow telemetry", "--target", "*", "--set", "interval_s:=300", "--json")
		var job struct{ ID string }
		if err := json.Unmarshal([]byte(jobOut), &job); err != nil || job.ID == "" {
			t.Fatalf("jobs create --json: %v %s", err, jobOut)
		}
		step("jobs", "ls")
		step("groups", "remove", "lab", "esp32-002")
		step("things", "rm", "esp32-002")
		step("shadow", "delete", "esp32-001")
		golden(t, "tables", b.String(), job.ID)
	})

	t.Run("json", func(t *testing.T) {
		r.t = t
		var thing struct {
			Name   string            `json:"thingName"`
			Attrs  map[string]string `json:"attributes"`
			Groups []string          `json:"thingGroupNames"`
		}
		if err := json.Unmarshal([]byte(r.ok("things", "get", "esp32-001", "--json")), &thing); err != nil {
			t.Fatal(err)
		}
		if thing.Name != "esp32-001" || thing.Attrs["ring"] != "canary" || len(thing.Groups) != 2 {
			t.Fatalf("things get --json: %+v", thing)
		}
		var count struct{ Count int }
		if err := json.Unmarshal([]byte(r.ok("query", "*", "--count", "--json")), &count); err != nil || count.Count != 1 {
			t.Fatalf("query --count --json: %v %+v", err, count)
		}
		var list struct{ Things []json.RawMessage }
		if err := json.Unmarshal([]byte(r.ok("things", "ls", "--json")), &list); err != nil || len(list.Things) != 1 {
			t.Fatalf("things ls --json: %v %d", err, len(list.Things))
		}
		var named struct {
			Thing   string
			Results []string
		}
		if err := json.Unmarshal([]byte(r.ok("shadow", "ls", "esp32-001", "--json")), &named); err != nil || named.Thing != "esp32-001" || strings.Join(named.Results, ",") != "config,ota" {
			t.Fatalf("shadow ls --json: %v %+v", err, named)
		}
	})

	t.Run("jobs get --watch", func(t *testing.T) {
		r.t = t
		var job struct{ ID string }
		// Paced at one thing a second: the watch sees it running, then done.
		if err := json.Unmarshal([]byte(r.ok("jobs", "create", "paced", "--target", "*", "--set", "led=on", "--rate", "1", "--json")), &job); err != nil || job.ID == "" {
			t.Fatalf("jobs create: %v %+v", err, job)
		}
		out := r.ok("jobs", "get", job.ID, "--watch")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last := lines[len(lines)-1]
		if !strings.Contains(last, "completed") || !strings.Contains(last, "[####################]") || !strings.Contains(last, "applied 1/1") {
			t.Fatalf("watch output:\n%s", out)
		}
		if _, _, code := r.run("jobs", "get", job.ID, "--watch", "--until", "soon"); code != 2 {
			t.Fatalf("bad --until: exit %d", code)
		}
	})

	t.Run("types and credentials", func(t *testing.T) {
		r.t = t
		if out := r.ok("types", "create", "esp32-s3", "--description", "S3 boards", "--attributes", "hardware_rev,location"); !strings.Contains(out, "esp32-s3") || !strings.Contains(out, "hardware_rev,location") {
			t.Fatalf("types create:\n%s", out)
		}
		if out := r.ok("types", "deprecate", "esp32-s3"); !strings.Contains(out, "true") {
			t.Fatalf("types deprecate:\n%s", out)
		}
		if out := r.ok("types", "ls"); !strings.Contains(out, "esp32-s3") {
			t.Fatalf("types ls:\n%s", out)
		}
		r.ok("types", "rm", "esp32-s3")
		if _, _, code := r.run("types", "rm", "esp32-s3"); code != 1 {
			t.Fatalf("removing an absent type: exit %d, want 1", code)
		}
		var issued struct{ Thing, Secret string }
		if err := json.Unmarshal([]byte(r.ok("credentials", "issue", "esp32-001", "--json")), &issued); err != nil || len(issued.Secret) != 43 {
			t.Fatalf("credentials issue: %v %+v", err, issued)
		}
		if out := r.ok("credentials", "revoke", "esp32-001"); !strings.Contains(out, "revoked") {
			t.Fatalf("credentials revoke:\n%s", out)
		}
		if _, errs, code := r.run("credentials", "revoke", "esp32-001"); code != 1 || !strings.Contains(errs, "404") {
			t.Fatalf("revoking twice: exit %d %s", code, errs)
		}
	})

	t.Run("things connectivity", func(t *testing.T) {
		r.t = t
		for range 2 {
			mt.Connect(t, srv.MQTTURL(), "esp32-001").Disconnect(50)
		}
		out := r.ok("things", "connectivity", "esp32-001")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 5 || !strings.HasPrefix(lines[0], "TIME") {
			t.Fatalf("things connectivity:\n%s", out)
		}
		for i, want := range []string{"disconnected  2", "connected     2", "disconnected  1", "connected     1"} {
			if !strings.Contains(lines[i+1], want) {
				t.Errorf("line %d = %q, want %q", i+1, lines[i+1], want)
			}
		}
		if !strings.Contains(lines[2], "MQTT 3.1.1") || !strings.Contains(lines[1], "CLIENT_INITIATED_DISCONNECT") {
			t.Errorf("details:\n%s", out)
		}
		if _, errs, code := r.run("things", "connectivity", "nobody"); code != 1 || !strings.Contains(errs, "404") {
			t.Errorf("unknown thing: exit %d %s", code, errs)
		}
	})

	t.Run("exit codes", func(t *testing.T) {
		r.t = t
		for _, tc := range []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{"things", "get", "nope"}, 1, `umbra: 404 thing "nope"`},
			{[]string{"things", "create", "esp32-001"}, 1, "umbra: 409 "},
			{[]string{"query", "attributes.:"}, 1, "umbra: 400 "},
			{[]string{"shadow", "get", "no-such-thing"}, 1, "umbra: 404 "},
			{[]string{"shadow", "ls", "not a thing name"}, 1, "umbra: 400 "},
			{[]string{"shadow", "ls", "esp32-001", "--limit", "-1"}, 2, "--limit must be 0 or more, not -1"},
			{[]string{"things"}, 2, "missing command: want one of ls, get"},
			{[]string{"things", "frob"}, 2, `unknown command "frob"`},
			{[]string{"things", "get"}, 2, "missing THING"},
			{[]string{"things", "get", "a", "b"}, 2, `unexpected argument "b"`},
			{[]string{"things", "ls", "--colour"}, 2, "flag provided but not defined: -colour"},
			{[]string{"shadow", "update", "x", "{nope"}, 2, "not a JSON object"},
			{[]string{"things", "tag", "x", "novalue"}, 2, "want key=value"},
			{[]string{"nonsense"}, 2, `unknown command "nonsense"`},
			{[]string{"things", "ls", "--server", "http://127.0.0.1:1"}, 3, "cannot reach http://127.0.0.1:1"},
		} {
			_, errs, code := r.run(tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.msg) {
				t.Errorf("umbra %s: exit %d, stderr %q; want exit %d with %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.msg)
			}
		}
		// A config file with an unknown key is refused (strict decoding).
		cfg := filepath.Join(r.home, ".config", "umbra", "cli.yaml")
		if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg, []byte("server: "+srv.HTTPURL()+"\nsever: typo\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, errs, code := r.run("things", "ls"); code != 2 || !strings.Contains(errs, "sever") {
			t.Errorf("config with unknown key: exit %d %q", code, errs)
		}
		if err := os.WriteFile(cfg, []byte("server: "+srv.HTTPURL()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(r.bin, "query", "*", "--count")
		cmd.Env = []string{"HOME=" + r.home} // no UMBRA_SERVER: the config file's server
		if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("server from config file: %v %q", err, out)
		}
		_ = os.Remove(cfg)
	})

	t.Run("shadow watch", func(t *testing.T) {
		r.t = t
		cmd := exec.Command(r.bin, "shadow", "watch", "esp32-001", "--count", "1")
		cmd.Env = []string{"HOME=" + r.home, "UMBRA_SERVER=" + r.srv}
		var out bytes.Buffer
		cmd.Stdout = &out
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		if !sc.Scan() || !strings.Contains(sc.Text(), "watching esp32-001") {
			t.Fatalf("watch did not start: %q", sc.Text())
		}
		httpPost(t, srv.HTTPURL()+"/things/esp32-001/shadow", `{"state":{"desired":{"led":"blink"}}}`)
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), `desired={"led":"blink"}`) {
			t.Fatalf("watch printed %q", out.String())
		}
	})

	t.Run("rollout status --watch", func(t *testing.T) {
		r.t = t
		fleet := []string{"ota-1", "ota-2", "ota-3", "ota-4"}
		for i, id := range fleet {
			ring := "general"
			if i == 0 {
				ring = "canary"
			}
			r.ok("things", "create", id, "ring="+ring)
			httpPost(t, srv.HTTPURL()+"/things/"+id+"/shadow", `{"state":{"reported":{"firmware_version":"1.0"}}}`)
		}
		// The simulated devices: on a desired target_version, report it.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.HTTPURL()+"/api/events?types=shadow", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				data, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok {
					continue
				}
				var ev struct {
					Thing string
					Data  struct {
						State struct {
							Delta struct {
								TargetVersion string `json:"target_version"`
							}
						}
					}
				}
				if json.Unmarshal([]byte(data), &ev) == nil && ev.Data.State.Delta.TargetVersion != "" {
					go httpPost(t, srv.HTTPURL()+"/things/"+ev.Thing+"/shadow",
						fmt.Sprintf(`{"state":{"reported":{"firmware_version":%q,"target_version":%q}}}`, ev.Data.State.Delta.TargetVersion, ev.Data.State.Delta.TargetVersion))
				}
			}
		}()
		spec := filepath.Join(t.TempDir(), "spec.json")
		if err := os.WriteFile(spec, []byte(`{"name":"fw 1.1","target":"thingName:ota-*","patch":{"target_version":"1.1"},
			"waves":[{"name":"canary","query":"attributes.ring:canary"},{"name":"all","percent":100}]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "$ umbra rollout preview -f spec.json\n%s", r.ok("rollout", "preview", "-f", spec))
		created := r.ok("rollout", "create", "-f", spec, "--json")
		var ro struct{ ID, State string }
		if err := json.Unmarshal([]byte(created), &ro); err != nil || ro.State != "created" {
			t.Fatalf("rollout create --json: %v %s", err, created)
		}
		fmt.Fprintf(&b, "$ umbra rollout status %s\n%s", ro.ID, r.ok("rollout", "status", ro.ID))
		fmt.Fprintf(&b, "$ umbra rollout start %s\n%s", ro.ID, r.ok("rollout", "start", ro.ID))
		start := time.Now()
		out := r.ok("rollout", "status", ro.ID, "--watch")
		t.Logf("status --watch ran %v, %d frames", time.Since(start).Round(time.Millisecond), strings.Count(out, "rollout "+ro.ID))
		frames := strings.Split(out, "\n\n")
		fmt.Fprintf(&b, "$ umbra rollout status %s --watch   (last frame)\n%s", ro.ID, frames[len(frames)-1])
		fmt.Fprintf(&b, "$ umbra rollout ls\n%s", r.ok("rollout", "ls"))
		tok := regexp.MustCompile(`(?m)^plan: (\S+)$`).FindStringSubmatch(b.String())
		if tok == nil {
			t.Fatalf("preview prints no plan token:\n%s", b.String())
		}
		golden(t, "rollout", strings.ReplaceAll(b.String(), spec, "spec.json"), ro.ID, tok[1])
		if _, errs, code := r.run("rollout", "pause", ro.ID); code != 1 || !strings.Contains(errs, "umbra: 409") {
			t.Errorf("pause of a completed rollout: exit %d %q", code, errs)
		}
	})

	t.Run("rollout preview is the plan", func(t *testing.T) {
		r.t = t
		for i := range 12 {
			ring := "general"
			if i%4 == 0 {
				ring = "canary"
			}
			r.ok("things", "create", fmt.Sprintf("pv-%02d", i), "ring="+ring)
		}
		spec := filepath.Join(t.TempDir(), "spec.json")
		if err := os.WriteFile(spec, []byte(`{"name":"fw 2","target":"thingName:pv-*","patch":{"target_version":"2"},
			"waves":[{"name":"canary","query":"attributes.ring:canary"},{"name":"early","percent":25},{"name":"rest","percent":100}]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		preview := r.ok("rollout", "preview", "-f", spec)
		m := regexp.MustCompile(`(?m)^plan: (\S+)$`).FindStringSubmatch(preview)
		if m == nil {
			t.Fatalf("preview prints no plan token:\n%s", preview)
		}
		created := r.ok("rollout", "create", "-f", spec, "--plan", m[1], "--json")
		var ro struct{ ID, State string }
		if err := json.Unmarshal([]byte(created), &ro); err != nil || ro.State != "created" {
			t.Fatalf("rollout create --plan: %v %s", err, created)
		}
		r.ok("rollout", "start", ro.ID)
		table, _, _ := strings.Cut(preview, "plan: ")
		if frozen := r.ok("rollout", "preview", ro.ID); frozen != table {
			t.Fatalf("started plan differs from the preview:\npreview\n%s\nstarted\n%s", table, frozen)
		}
		// The fleet changes: create with the old token refuses and says so.
		r.ok("things", "create", "pv-99", "ring=canary")
		_, errs, code := r.run("rollout", "create", "-f", spec, "--plan", m[1])
		if code != 1 || !strings.Contains(errs, "fleet changed since the preview") || !strings.Contains(errs, "canary 3→4") {
			t.Fatalf("create after a fleet change: exit %d %q", code, errs)
		}
		if _, errs, code := r.run("rollout", "create", "-f", spec, "--plan", "junk"); code != 2 || !strings.Contains(errs, "SEED:FINGERPRINT:COUNTS") {
			t.Fatalf("bad token: exit %d %q", code, errs)
		}
	})

	t.Run("rollout status of a rolled back rollout", func(t *testing.T) {
		r.t = t
		for i, ring := range []string{"canary", "canary", "general", "general"} {
			id := fmt.Sprintf("rb-%d", i)
			r.ok("things", "create", id, "ring="+ring)
			httpPost(t, srv.HTTPURL()+"/things/"+id+"/shadow", `{"state":{"reported":{"firmware_version":"1.0"}}}`)
		}
		spec := filepath.Join(t.TempDir(), "spec.json")
		if err := os.WriteFile(spec, []byte(`{"name":"fw 3","target":"thingName:rb-*","patch":{"target_version":"3"},"onFailure":"rollback",
			"failureCondition":"shadow.reported.ota_status:failed",
			"waves":[{"name":"canary","query":"attributes.ring:canary","bakeTime":"1h"},{"name":"rest","percent":100}]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		var ro struct{ ID string }
		if err := json.Unmarshal([]byte(r.ok("rollout", "create", "-f", spec, "--start", "--json")), &ro); err != nil {
			t.Fatal(err)
		}
		// rb-0 installs 3, rb-1 reports a failed download at 40%.
		httpPost(t, srv.HTTPURL()+"/things/rb-0/shadow", `{"state":{"reported":{"firmware_version":"3","ota_status":"succeeded","ota_progress":100}}}`)
		httpPost(t, srv.HTTPURL()+"/things/rb-1/shadow", `{"state":{"reported":{"ota_status":"failed","ota_progress":40,"ota_error":"image verification failed"}}}`)
		_, errs, code := r.run("rollout", "status", ro.ID, "--watch")
		if code != 1 || !strings.Contains(errs, "ended rolled_back") {
			t.Fatalf("status --watch: exit %d %q", code, errs)
		}
		out := r.ok("rollout", "status", ro.ID, "--devices")
		for _, want := range []string{
			"state rolled_back",
			"canary  FAILED ",
			"rest    NOT_REACHED ",
			"devices 4: 1 succeeded, 1 failed (0 regressed), 0 in progress, 0 pending, 2 skipped, 2 rolled back; 1 run the new version",
			"note: rolled back: previous desired values restored on 2 devices; a plain rollback does not downgrade firmware already installed: 1 devices run the new version",
			"rb-0   0     rolled_back (was succeeded)  succeeded",
			"rb-1   0     rolled_back (was failed)     failed 40%: image verification failed  no           failureCondition ota_status=failed at ",
			"rb-2   1     skipped",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("status --devices lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("completion", func(t *testing.T) {
		r.t = t
		bash := r.ok("completion", "bash")
		for _, want := range []string{"complete -o default -F _umbra umbra", `__complete`} {
			if !strings.Contains(bash, want) {
				t.Errorf("bash completion lacks %q", want)
			}
		}
		zsh := r.ok("completion", "zsh")
		if !strings.HasPrefix(zsh, "#compdef umbra") || !strings.Contains(zsh, `__complete`) {
			t.Errorf("zsh completion:\n%s", zsh)
		}
		if _, _, code := r.run("completion", "fish"); code != 2 {
			t.Errorf("completion fish: exit %d", code)
		}
		if sh, err := exec.LookPath("bash"); err == nil {
			if out, err := exec.Command(sh, "-n", "-c", bash).CombinedOutput(); err != nil {
				t.Errorf("bash -n: %v %s", err, out)
			}
		}
	})
}
