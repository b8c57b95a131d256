package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// umbra jobs create --document FILE queues an AWS IoT Jobs execution for
// each targeted thing; a device runs it over MQTT; jobs executions lists
// the executions, jobs get --watch --until converged waits for them to end;
// cancel --force cancels IN_PROGRESS ones; bad input is a usage error.
func TestCLIJobDocuments(t *testing.T) {
	bin := buildUmbra(t)
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	r := &cliRunner{t: t, bin: bin, home: t.TempDir(), srv: srv.HTTPURL()}
	r.ok("things", "create", "cam-1", "site=dock")
	r.ok("things", "create", "cam-2", "site=dock")
	dir := t.TempDir()
	docFile := filepath.Join(dir, "reboot.json")
	if err := os.WriteFile(docFile, []byte(`{"operation":"reboot","delaySeconds":5}`), 0o600); err != nil {
		t.Fatal(err)
	}

	dev := mt.Connect(t, srv.MQTTURL(), "cam-1")
	next := dev.Subscribe("$aws/things/cam-1/jobs/notify-next", 1)
	var job struct{ ID string }
	if err := json.Unmarshal([]byte(r.ok("jobs", "create", "reboot-dock", "--target", "attributes.site:dock", "--document", docFile, "--json")), &job); err != nil || job.ID == "" {
		t.Fatalf("jobs create --document: %v %+v", err, job)
	}
	m := mt.Next(t, next)
	if gjson.GetBytes(m.Payload, "execution.jobId").String() != job.ID || gjson.GetBytes(m.Payload, "execution.jobDocument.operation").String() != "reboot" {
		t.Fatalf("notify-next: %s", m.Payload)
	}
	acc := dev.Subscribe("$aws/things/cam-1/jobs/"+job.ID+"/update/accepted", 1)
	dev.Publish("$aws/things/cam-1/jobs/"+job.ID+"/update", 1, false, `{"status":"SUCCEEDED","statusDetails":{"uptime":"3"}}`)
	mt.Next(t, acc)

	out := r.ok("jobs", "executions", job.ID)
	if !regexpMatch(`(?m)^cam-1\s+SUCCEEDED\s+2\s+\S+\s+uptime=3$`, out) || !regexpMatch(`(?m)^cam-2\s+QUEUED\s+1\s`, out) {
		t.Fatalf("jobs executions:\n%s", out)
	}
	two := mt.Connect(t, srv.MQTTURL(), "cam-2")
	started := two.Subscribe("$aws/things/cam-2/jobs/start-next/accepted", 1)
	two.Publish("$aws/things/cam-2/jobs/start-next", 1, false, `{}`)
	mt.Next(t, started)
	out = r.ok("jobs", "cancel", job.ID, "--force")
	if !strings.Contains(out, "cancelled") {
		t.Fatalf("jobs cancel --force:\n%s", out)
	}
	if out := r.ok("jobs", "executions", job.ID); !regexpMatch(`(?m)^cam-2\s+CANCELED\s+3\s`, out) {
		t.Fatalf("after cancel --force:\n%s", out)
	}
	// Every execution ended: the watch returns (with the cancellation as
	// its exit status).
	if _, _, code := r.run("jobs", "get", job.ID, "--watch", "--until", "converged"); code != 1 {
		t.Fatalf("jobs get --watch --until converged of a cancelled job: exit %d, want 1", code)
	}

	if _, errs, code := r.run("jobs", "create", "x", "--target", "*", "--document", docFile, "--set", "a=b"); code != 2 || !strings.Contains(errs, "not both") {
		t.Fatalf("--document with --set: exit %d, %s", code, errs)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`["not","an","object"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := r.run("jobs", "create", "x", "--target", "*", "--document", bad); code != 2 || !strings.Contains(errs, "not a JSON object") {
		t.Fatalf("--document with an array: exit %d, %s", code, errs)
	}
	if _, errs, code := r.run("jobs", "executions", "job-nope"); code == 0 || !strings.Contains(errs, "not found") {
		t.Fatalf("executions of an unknown job: exit %d, %s", code, errs)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
