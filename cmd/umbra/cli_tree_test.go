package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
)

// The command tree through the real binary against an in-process server:
// did-you-mean, -o json|yaml|wide, aliases, --help everywhere, lazy
// connecting and dynamic completion.
func TestCLITree(t *testing.T) {
	bin := buildUmbra(t)
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	r := &cliRunner{t: t, bin: bin, home: t.TempDir(), srv: srv.HTTPURL()}

	r.ok("things", "create", "tree-001", "ring=canary")
	r.ok("things", "create", "tree-002", "ring=general")
	r.ok("shadow", "update", "tree-001", `{"state":{"reported":{"big":100000000000000000001,"price":1.50}}}`)
	r.ok("groups", "create", "lab")
	spec := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(spec, []byte(`{"name":"fw","target":"thingName:tree-*","patch":{"target_version":"2"},"waves":[{"name":"all","percent":100}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var ro struct{ ID string }
	if out := r.ok("rollouts", "create", "-f", spec, "-o", "json"); json.Unmarshal([]byte(out), &ro) != nil || ro.ID == "" {
		t.Fatalf("rollouts create -o json: %s", out)
	}

	t.Run("did you mean", func(t *testing.T) {
		r.t = t
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"thnigs", "ls"}, `unknown command "thnigs" (did you mean "things"?)`},
			{[]string{"rolout", "ls"}, `(did you mean "rollout"?)`},
			{[]string{"sevre"}, `(did you mean "serve"?)`},
			{[]string{"things", "lss"}, `unknown command "lss" (did you mean "ls"?)`},
			{[]string{"rollouts", "stauts", "x"}, `(did you mean "status"?)`},
			{[]string{"groups", "remvoe"}, `(did you mean "remove"?)`},
		} {
			_, errs, code := r.run(c.args...)
			if code != 2 || !strings.Contains(errs, c.want) {
				t.Errorf("umbra %v: exit %d, stderr %q; want exit 2 and %q", c.args, code, firstLine(errs), c.want)
			}
		}
		if _, errs, _ := r.run("zzzzzzzz"); strings.Contains(errs, "did you mean") {
			t.Errorf("a word close to nothing got a suggestion: %s", firstLine(errs))
		}
	})

	t.Run("output formats", func(t *testing.T) {
		r.t = t
		asJSON := r.ok("things", "ls", "-o", "json")
		if old := r.ok("things", "ls", "--json"); old != asJSON {
			t.Errorf("--json and -o json differ:\n%s\n%s", old, asJSON)
		}
		var doc struct {
			Things []struct {
				Name string `json:"thingName"`
			} `json:"things"`
		}
		if err := json.Unmarshal([]byte(asJSON), &doc); err != nil || len(doc.Things) != 2 {
			t.Errorf("things ls -o json: %v %s", err, asJSON)
		}
		y := r.ok("things", "ls", "-o", "yaml")
		var ydoc struct {
			Things []struct {
				Name string `yaml:"thingName"`
			} `yaml:"things"`
		}
		if err := yaml.Unmarshal([]byte(y), &ydoc); err != nil || len(ydoc.Things) != 2 || ydoc.Things[0].Name != "tree-001" {
			t.Errorf("things ls -o yaml: %v %+v\n%s", err, ydoc, y)
		}
		if strings.Contains(y, "{") || strings.Contains(y, `"`) {
			t.Errorf("-o yaml is not block-style YAML:\n%s", y)
		}
		// YAML keeps the shadow's numbers exactly, as -o json does.
		sy := r.ok("shadow", "get", "tree-001", "-o", "yaml")
		for _, want := range []string{"big: 100000000000000000001", "price: 1.50"} {
			if !strings.Contains(sy, want) {
				t.Errorf("shadow get -o yaml lacks %q:\n%s", want, sy)
			}
		}
		// -o wide is the table with more columns where there are more
		// (things ls: the times), the same table elsewhere.
		wide, table := r.ok("things", "ls", "-o", "wide"), r.ok("things", "ls")
		if !strings.Contains(wide, "CREATED") || !strings.Contains(wide, "UPDATED") || strings.Contains(table, "CREATED") ||
			!strings.Contains(wide, "ring=canary") || len(strings.Split(wide, "\n")) != len(strings.Split(table, "\n")) || !timeRE.MatchString(wide) {
			t.Errorf("-o wide:\n%s\ntable:\n%s", wide, table)
		}
		if wide, table := r.ok("groups", "ls", "-o", "wide"), r.ok("groups", "ls"); wide != table {
			t.Errorf("groups ls -o wide:\n%s\ntable:\n%s", wide, table)
		}
		if _, errs, code := r.run("things", "ls", "-o", "xml"); code != 2 || !strings.Contains(errs, `-o "xml": want json, yaml or wide`) {
			t.Errorf("-o xml: exit %d %s", code, errs)
		}
	})

	t.Run("aliases", func(t *testing.T) {
		r.t = t
		if a, b := r.ok("rollout", "ls"), r.ok("rollouts", "ls"); a != b || !strings.Contains(a, ro.ID) {
			t.Errorf("rollout ls / rollouts ls:\n%s\n%s", a, b)
		}
		if a, b := r.ok("thing", "get", "tree-002"), r.ok("things", "get", "tree-002"); a != b {
			t.Errorf("thing get / things get:\n%s\n%s", a, b)
		}
		// get on every noun that has ls: a rollout's get is its status.
		if a, b := r.ok("rollouts", "get", ro.ID, "-o", "json"), r.ok("rollouts", "status", ro.ID, "-o", "json"); !strings.Contains(a, ro.ID) || a != b {
			t.Errorf("rollouts get / rollouts status:\n%s\n%s", a, b)
		}
		r.ok("things", "list")
		r.ok("things", "create", "tree-del")
		r.ok("things", "delete", "tree-del")
		if _, _, code := r.run("things", "get", "tree-del"); code != 1 {
			t.Errorf("things delete did not delete: get exits %d", code)
		}
		r.ok("shadow", "update", "tree-002", "--desired", "a=1")
		r.ok("shadow", "rm", "tree-002")
		r.ok("shadow", "update", "tree-002", "--desired", "a=1")
		r.ok("shadow", "delete", "tree-002")
		if _, _, code := r.run("shadow", "get", "tree-002"); code != 1 {
			t.Errorf("shadow rm/delete did not delete: get exits %d", code)
		}
	})

	t.Run("watch verbs", func(t *testing.T) {
		r.t = t
		var job struct{ ID string }
		if out := r.ok("jobs", "create", "w", "--target", "thingName:tree-001", "--set", "k=v", "-o", "json"); json.Unmarshal([]byte(out), &job) != nil || job.ID == "" {
			t.Fatalf("jobs create: %s", out)
		}
		if a, b := r.ok("jobs", "watch", job.ID), r.ok("jobs", "get", job.ID, "--watch"); !strings.Contains(a, job.ID) || lastLine(a) != lastLine(b) {
			t.Errorf("jobs watch / jobs get --watch:\n%s\n%s", a, b)
		}
		r.ok("rollouts", "cancel", ro.ID)
		a, aerr, acode := r.run("rollouts", "watch", ro.ID)
		b, berr, bcode := r.run("rollouts", "status", ro.ID, "--watch")
		if acode != bcode || a != b || aerr != berr || !strings.Contains(a, "cancel") {
			t.Errorf("rollouts watch (exit %d):\n%s%s\nstatus --watch (exit %d):\n%s%s", acode, a, aerr, bcode, b, berr)
		}
	})

	t.Run("help everywhere", func(t *testing.T) {
		r.t = t
		var cmds [][]string
		for _, c := range topCommands {
			if c != "version" && c != "help" {
				cmds = append(cmds, []string{c})
			}
		}
		for _, g := range clientGroups {
			cmds = append(cmds, []string{g.name})
			for _, a := range g.aliases {
				cmds = append(cmds, []string{a})
			}
			for _, v := range g.verbs {
				if v.name != g.name {
					cmds = append(cmds, []string{g.name, v.name})
				}
				for _, a := range v.aliases {
					cmds = append(cmds, []string{g.name, a})
				}
			}
		}
		cmds = append(cmds, []string{"db", "check"}, []string{"db", "backup"})
		for _, c := range cmds {
			for _, h := range []string{"--help", "-h"} {
				out, errs, code := r.run(append(c, h)...)
				if code != 0 || !strings.Contains(out+errs, "Usage") {
					t.Errorf("umbra %s %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(c, " "), h, code, out, errs)
				}
			}
		}
		if len(cmds) < 40 {
			t.Errorf("walked only %d commands", len(cmds))
		}
	})

	t.Run("parse does not connect", func(t *testing.T) {
		r.t = t
		// A usage mistake is reported as such even when the connection
		// settings are broken: parsing no longer reads them.
		cmd := exec.Command(bin, "rollouts", "create")
		cmd.Env = []string{"HOME=" + r.home, "UMBRA_CLI_CONFIG=" + filepath.Join(t.TempDir(), "missing.yaml")}
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "missing -f spec.json") {
			t.Errorf("rollouts create with a broken config: exit %d %s", cmd.ProcessState.ExitCode(), out)
		}
	})

	t.Run("dynamic completion", func(t *testing.T) {
		r.t = t
		lines := func(s string) []string { return strings.Fields(s) }
		for _, c := range []struct {
			args []string
			want []string
		}{
			{[]string{"__complete", "things", "get", ""}, []string{"tree-001", "tree-002"}},
			{[]string{"__complete", "shadow", "get", "--name", "x", "tree-00"}, []string{"tree-001", "tree-002"}},
			{[]string{"__complete", "thing", "rm", "tree-001"}, []string{"tree-001"}},
			{[]string{"__complete", "groups", "add", "lab", ""}, []string{"tree-001", "tree-002"}},
			{[]string{"__complete", "groups", "get", ""}, []string{"lab"}},
			{[]string{"__complete", "rollouts", "status", ""}, []string{ro.ID}},
			{[]string{"__complete", "rollout", "start", ro.ID[:4]}, []string{ro.ID}},
			{[]string{"__complete", "rollouts", "st"}, []string{"start", "status"}},
			{[]string{"__complete", "rol"}, []string{"rollouts"}},
			{[]string{"__complete", "things", "ls", "-o", ""}, []string{"json", "wide", "yaml"}},
			{[]string{"__complete", "things", "create", ""}, nil},
		} {
			if got := lines(r.ok(c.args...)); strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Errorf("umbra %v: got %q, want %q", c.args, got, c.want)
			}
		}
		// A server that cannot be reached: no ids, no error, verbs still.
		if out, errs, code := r.run("__complete", "--server", "http://127.0.0.1:1", "things", "get", ""); code != 0 || out != "" || errs != "" {
			t.Errorf("unreachable server: exit %d %q %q", code, out, errs)
		}
		// The bash script, loaded into bash, completes thing names.
		sh, err := exec.LookPath("bash")
		if err != nil {
			t.Skip("no bash")
		}
		script := r.ok("completion", "bash")
		cmd := exec.Command(sh, "-c", script+`
COMP_WORDS=("$UMBRA_BIN" rollouts status ""); COMP_CWORD=3; _umbra; printf '%s\n' "${COMPREPLY[@]}"
COMP_WORDS=("$UMBRA_BIN" things get tree-00); COMP_CWORD=3; _umbra; printf '%s\n' "${COMPREPLY[@]}"`)
		cmd.Env = []string{"HOME=" + r.home, "UMBRA_SERVER=" + r.srv, "UMBRA_BIN=" + bin, "PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		if got := strings.Join(lines(string(out)), " "); err != nil || got != ro.ID+" tree-001 tree-002" {
			t.Errorf("bash completion: %v %q", err, out)
		}
	})
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}
