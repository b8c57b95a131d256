package broker_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/sim"
)

// jobsDevice is a device that runs jobs through the AWS IoT Jobs API the
// way AWS's samples do: on notify-next with a QUEUED execution it calls
// start-next, reports IN_PROGRESS with progress in statusDetails, then
// SUCCEEDED, or FAILED with a reason when faulty.
func jobsDevice(t *testing.T, srv *brokertest.Server, id string, faulty bool) {
	t.Helper()
	c := mt.Connect(t, srv.MQTTURL(), id)
	p := "$aws/things/" + id + "/jobs"
	next := c.Subscribe(p+"/notify-next", 1)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			var m mt.Message
			select {
			case <-done:
				return
			case m = <-next:
			}
			ex := gjson.GetBytes(m.Payload, "execution")
			if ex.Get("status").String() != "QUEUED" {
				continue
			}
			job := ex.Get("jobId").String()
			c.Client.Publish(p+"/start-next", 1, false, `{"statusDetails":{"progress":"0"}}`).Wait()
			c.Client.Publish(p+"/"+job+"/update", 1, false, `{"status":"IN_PROGRESS","statusDetails":{"progress":"50"},"expectedVersion":2}`).Wait()
			final := `{"status":"SUCCEEDED","statusDetails":{"progress":"100"},"expectedVersion":3}`
			if faulty {
				final = `{"status":"FAILED","statusDetails":{"progress":"60","reason":"flash-write-error"},"expectedVersion":3}`
			}
			c.Client.Publish(p+"/"+job+"/update", 1, false, final).Wait()
		}
	}()
}

func jobsRolloutSpec(target string) string {
	return `{"name":"ota via jobs","target":"` + target + `","start":true,
 "jobDocument":{"operation":"ota","firmware":{"version":"3.0.0","url":"https://fw.example/3.0.bin"}},
 "waves":[{"name":"canary","query":"attributes.ring:canary"},{"name":"early","query":"attributes.ring:early"},{"name":"rest","percent":100}]}`
}

// A rollout delivered through a job document instead of desired state:
// waves go out as job executions, SUCCEEDED executions pass a wave, and a
// FAILED execution (its statusDetails in the failure) halts the rollout at
// the wave gate, cancelling the executions still QUEUED; the last wave is
// never queued and no desired state is written. A healthy fleet completes.
func TestRolloutThroughJobDocument(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	rings := map[string]string{"jr-1": "canary", "jr-2": "canary", "jr-3": "early", "jr-4": "early", "jr-5": "rest", "jr-6": "rest", "jr-7": "early"}
	for th, ring := range rings {
		httpDo(t, "POST", srv.HTTPURL()+"/api/things", fmt.Sprintf(`{"thingName":%q,"attributes":{"ring":%q,"fleet":"jr"}}`, th, ring), 201)
		if th != "jr-7" { // jr-7 is off: its execution stays QUEUED
			jobsDevice(t, srv, th, th == "jr-4")
		}
	}
	id := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", jobsRolloutSpec("attributes.fleet:jr"), 201), "id").String()
	v := waitRolloutState(t, srv, id, "halted", "completed").Raw
	if gjson.Get(v, "state").String() != "halted" || !strings.Contains(gjson.Get(v, "reason").String(), "wave early") {
		t.Fatalf("want halted in wave early: %s", v)
	}
	if w := gjson.Get(v, "waves.0"); w.Get("succeeded").Int() != 2 || w.Get("state").String() != "passed" {
		t.Fatalf("canary: %s", w.Raw)
	}
	if w := gjson.Get(v, "waves.2"); w.Get("skipped").Int() != 2 {
		t.Fatalf("rest: %s", w.Raw)
	}
	devs := httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id+"/devices?state=failed", 200)
	d := gjson.Get(devs, "devices.0")
	if d.Get("thing").String() != "jr-4" || d.Get("failure.gate").String() != "jobExecution" ||
		d.Get("failure.value").String() != "FAILED (progress=60, reason=flash-write-error)" || d.Get("ota.error").String() != "flash-write-error" {
		t.Fatalf("failed device: %s", devs)
	}
	execs := httpGet(t, srv.HTTPURL()+"/api/jobs/"+id+"/executions", 200)
	byThing := map[string]string{}
	for _, e := range gjson.Get(execs, "executions").Array() {
		byThing[e.Get("thingName").String()] = e.Get("status").String()
	}
	// The halt cancelled the execution still QUEUED (AWS's abort).
	// jr-3 may be anywhere in its run when jr-4's failure halts the wave.
	switch byThing["jr-3"] {
	case "SUCCEEDED", "IN_PROGRESS", "CANCELED":
		byThing["jr-3"] = "any"
	}
	want := map[string]string{"jr-1": "SUCCEEDED", "jr-2": "SUCCEEDED", "jr-3": "any", "jr-4": "FAILED", "jr-7": "CANCELED"}
	if fmt.Sprint(byThing) != fmt.Sprint(want) {
		t.Fatalf("executions %v, want %v", byThing, want)
	}
	// Delivery was through the job only: no desired state written.
	if doc := httpDo(t, "GET", srv.HTTPURL()+"/things/jr-1/shadow", "", 404); doc == "" {
		t.Fatal("empty 404 body")
	}

	// A healthy fleet completes.
	for _, th := range []string{"ok-1", "ok-2", "ok-3"} {
		ring := map[string]string{"ok-1": "canary", "ok-2": "early", "ok-3": "rest"}[th]
		httpDo(t, "POST", srv.HTTPURL()+"/api/things", fmt.Sprintf(`{"thingName":%q,"attributes":{"ring":%q,"fleet":"ok"}}`, th, ring), 201)
		jobsDevice(t, srv, th, false)
	}
	id2 := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", jobsRolloutSpec("attributes.fleet:ok"), 201), "id").String()
	v = waitRolloutState(t, srv, id2, "completed", "halted").Raw
	if gjson.Get(v, "state").String() != "completed" || gjson.Get(v, "totals.succeeded").Int() != 3 {
		t.Fatalf("healthy fleet: %s", v)
	}
	var dl struct {
		Devices []struct{ OTA struct{ Status string } }
	}
	if err := json.Unmarshal([]byte(httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id2+"/devices", 200)), &dl); err != nil || len(dl.Devices) != 3 || dl.Devices[0].OTA.Status != "succeeded" {
		t.Fatalf("devices: %v %+v", err, dl)
	}

	// A spec with both a patch and a job document is refused.
	body := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", `{"name":"x","target":"*","patch":{"target_version":"1"},"jobDocument":{"a":1},"waves":[{"name":"all","percent":100}]}`, 400)
	if !strings.Contains(body, "jobDocument") {
		t.Fatalf("patch and jobDocument: %s", body)
	}
}

// Simulated Jobs-API devices (umbra sim --jobs-api) run a rollout delivered
// through a job document: they download (IN_PROGRESS with progress),
// reboot into the new firmware and report SUCCEEDED; a fail-update fault
// for that version makes the canary report FAILED with its reason, which
// halts the rollout at the canary gate.
func TestSimJobsAPIDevicesRunJobRollout(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	startSimFleetWith(t, srv, 6, 3, func(c *sim.Config) { c.JobsAPI = true }, "fail-update:version=9.9")
	spec := func(version string) string {
		return `{"name":"fw ` + version + `","target":"thingName:sim-*","start":true,
 "jobDocument":{"operation":"ota","firmware":{"version":"` + version + `","url":"https://fw.example/` + version + `.bin"}},
 "health":{"errorCondition":"shadow.reported.reset_reason:panic"},
 "waves":[{"name":"canary","query":"attributes.deployment_ring:canary"},{"name":"rest","percent":100}]}`
	}
	id := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", spec("2.0.0"), 201), "id").String()
	v := waitRolloutState(t, srv, id, "completed", "halted").Raw
	if gjson.Get(v, "state").String() != "completed" || gjson.Get(v, "totals.succeeded").Int() != 6 {
		t.Fatalf("rollout 2.0.0: %s", v)
	}
	waitCount(t, srv, "shadow.reported.firmware_version:2.0.0", 6)
	for _, e := range gjson.Get(httpGet(t, srv.HTTPURL()+"/api/jobs/"+id+"/executions", 200), "executions").Array() {
		if e.Get("status").String() != "SUCCEEDED" || e.Get("statusDetails.firmware_version").String() != "2.0.0" {
			t.Fatalf("execution: %s", e.Raw)
		}
	}

	id = gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", spec("9.9"), 201), "id").String()
	v = waitRolloutState(t, srv, id, "completed", "halted").Raw
	if gjson.Get(v, "state").String() != "halted" || !strings.Contains(gjson.Get(v, "reason").String(), "wave canary") ||
		!strings.Contains(gjson.Get(v, "reason").String(), "image verification failed") {
		t.Fatalf("rollout 9.9: %s", v)
	}
	if n := gjson.Get(v, "waves.1.skipped").Int(); n != 4 {
		t.Fatalf("rest wave skipped %d, want 4: %s", n, v)
	}
}
