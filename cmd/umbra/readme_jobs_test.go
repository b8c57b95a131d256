package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/sim"
)

// The README's "OTA with the AWS IoT Jobs API" block, verbatim, as
// TestREADMERehearsal runs its block: a job document completes on the
// canaries, a firmware rollout delivered through a job document completes on
// every simulated Jobs-API device (all run 2.0.0), and one whose image fails
// verification halts in the canary with FAILED executions carrying their
// reason, no other device ever getting it.
func TestREADMEJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two rollouts on a simulated fleet")
	}
	run := runREADMEBlock(t, "TestREADMEJobs", 3*time.Minute, "sim-jobs.log", "awk", "sed")
	srv := run.srv
	text := run.out
	canaries := 0
	for i := range 20 {
		if sim.RingOf(fmt.Sprintf("jobs-dev-%03d", i), []sim.RingShare{{Name: "canary", Share: 0.25}}) == "canary" {
			canaries++
		}
	}
	// Step 2: the canaries' executions of the reboot job succeeded.
	if n := len(regexp.MustCompile(`(?m)^jobs-dev-\d+\s+SUCCEEDED\s`).FindAllString(text, -1)); canaries == 0 || n != canaries {
		t.Errorf("want the %d canaries' SUCCEEDED executions listed, found %d", canaries, n)
	}
	// Step 3: every device runs 2.0.0.
	if !regexp.MustCompile(`(?m)^2\.0\.0\s+20$`).MatchString(text) {
		t.Errorf("the firmware buckets do not show 20 devices on 2.0.0")
	}
	// Step 4: halted in the canary; FAILED executions with the reason.
	for _, want := range []string{"did not complete", "FAILED", "reason=image verification failed"} {
		if !strings.Contains(text, want) {
			t.Errorf("the README block's output lacks %q", want)
		}
	}
	var list struct{ Rollouts []struct{ ID, State string } }
	getJSON(t, srv.HTTPURL()+"/api/rollouts", &list)
	states := map[string]int{}
	var halted string
	for _, r := range list.Rollouts {
		states[r.State]++
		if r.State == "halted" {
			halted = r.ID
		}
	}
	if states["completed"] != 1 || states["halted"] != 1 {
		t.Fatalf("rollout states %v, want one completed and one halted", states)
	}
	var execs struct {
		Executions []struct{ ThingName, Status string }
	}
	getJSON(t, srv.HTTPURL()+"/api/jobs/"+halted+"/executions", &execs)
	if canaries == 0 || len(execs.Executions) != canaries {
		t.Errorf("the halted rollout queued %d executions, want only the %d canaries': %+v", len(execs.Executions), canaries, execs)
	}
	for _, e := range execs.Executions {
		if e.Status != "FAILED" {
			t.Errorf("%s: %s, want FAILED", e.ThingName, e.Status)
		}
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, v) != nil {
		t.Fatalf("GET %s: HTTP %d %s", url, resp.StatusCode, b)
	}
}
