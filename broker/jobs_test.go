package broker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/fakeclock"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// createDocJob registers things (when new) and creates a job document for
// them through the API; it returns the job id.
func createDocJob(t *testing.T, srv *brokertest.Server, name, target, doc string) string {
	t.Helper()
	body := httpDo(t, "POST", srv.HTTPURL()+"/api/jobs", fmt.Sprintf(`{"name":%q,"target":%q,"document":%s}`, name, target, doc), 201)
	return gjson.Get(body, "id").String()
}

func registerThings(t *testing.T, srv *brokertest.Server, things ...string) {
	t.Helper()
	for _, th := range things {
		httpDo(t, "POST", srv.HTTPURL()+"/api/things", fmt.Sprintf(`{"thingName":%q}`, th), 201)
	}
}

// normalized replaces the timestamp members of an AWS Jobs payload by 0
// after checking each is epoch seconds within [from, to].
func normalized(t *testing.T, payload []byte, from, to time.Time) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		t.Fatalf("payload is not JSON: %q", payload)
	}
	var walk func(any)
	walk = func(x any) {
		switch m := x.(type) {
		case map[string]any:
			for k, val := range m {
				switch k {
				case "timestamp", "queuedAt", "startedAt", "lastUpdatedAt":
					f, ok := val.(float64)
					if !ok || int64(f) < from.Unix() || int64(f) > to.Unix() {
						t.Fatalf("%s = %v, want epoch seconds within [%d, %d] in %s", k, val, from.Unix(), to.Unix(), payload)
					}
					m[k] = 0
				default:
					walk(val)
				}
			}
		case []any:
			for _, e := range m {
				walk(e)
			}
		}
	}
	walk(v)
	b, _ := json.Marshal(v)
	return string(b)
}

func expectGolden(t *testing.T, step string, m mt.Message, topic, golden string, from time.Time) {
	t.Helper()
	if m.Topic != topic {
		t.Fatalf("%s: reply on %q, want %q (payload %s)", step, m.Topic, topic, m.Payload)
	}
	got := normalized(t, m.Payload, from, time.Now())
	if !jsonEqual(got, golden) {
		t.Fatalf("%s on %s:\n got  %s\n want %s", step, topic, got, golden)
	}
}

// The AWS IoT Jobs device MQTT API, request by request, with the payload
// shapes of AWS's developer guide (jobs-mqtt-api, jobs-mqtt-https-api):
// get pending, start-next, describe (by id and $next), update with a stale
// expectedVersion (VersionMismatch carrying executionState), an invalid
// status (InvalidRequest), SUCCEEDED with includeJobExecutionState and
// includeJobDocument, notify and notify-next after completion, an update of
// a finished execution (InvalidStateTransition), an unknown job
// (ResourceNotFound), malformed JSON (InvalidJson) and a topic that maps to
// no operation (InvalidTopic); every reply echoes clientToken.
func TestJobsDeviceAPIGoldenWire(t *testing.T) {
	start := time.Now().Add(-time.Second)
	srv := brokertest.Start(t)
	const thing = "MyThing"
	registerThings(t, srv, thing)
	dev := mt.Connect(t, srv.MQTTURL(), thing)
	p := "$aws/things/" + thing + "/jobs"
	replies := dev.Subscribe(p+"/#", 1)
	// nextOn returns the next message on topic; others arriving meanwhile
	// wait their turn (AWS does not order notify against notify-next or
	// replies, and neither does the broker).
	var held []mt.Message
	nextOn := func(topic string) mt.Message {
		t.Helper()
		for i, m := range held {
			if m.Topic == topic {
				held = append(held[:i], held[i+1:]...)
				return m
			}
		}
		for {
			m := mt.Next(t, replies)
			if m.Topic == topic {
				return m
			}
			// The device's own requests come back through its # subscription.
			if strings.HasSuffix(m.Topic, "/accepted") || strings.HasSuffix(m.Topic, "/rejected") || strings.HasSuffix(m.Topic, "/notify") || strings.HasSuffix(m.Topic, "/notify-next") {
				held = append(held, m)
			}
		}
	}

	doc := `{"operation":"ota","firmware":{"version":"2.0.0","url":"https://example.com/fw.bin"}}`
	job := createDocJob(t, srv, "ota-022", "thingName:"+thing, doc)

	// Queuing notifies the device: the pending list, and the new head.
	expectGolden(t, "notify on queue", nextOn(p+"/notify"), p+"/notify",
		fmt.Sprintf(`{"timestamp":0,"jobs":{"QUEUED":[{"jobId":%q,"queuedAt":0,"lastUpdatedAt":0,"versionNumber":1,"executionNumber":1}]}}`, job), start)
	expectGolden(t, "notify-next on queue", nextOn(p+"/notify-next"), p+"/notify-next",
		fmt.Sprintf(`{"timestamp":0,"execution":{"jobId":%q,"thingName":"MyThing","jobDocument":%s,"status":"QUEUED","queuedAt":0,"lastUpdatedAt":0,"versionNumber":1,"executionNumber":1}}`, job, doc), start)

	dev.Publish(p+"/get", 1, false, `{"clientToken":"client-001"}`)
	expectGolden(t, "get pending", nextOn(p+"/get/accepted"), p+"/get/accepted",
		fmt.Sprintf(`{"inProgressJobs":[],"queuedJobs":[{"jobId":%q,"queuedAt":0,"lastUpdatedAt":0,"versionNumber":1,"executionNumber":1}],"timestamp":0,"clientToken":"client-001"}`, job), start)

	dev.Publish(p+"/start-next", 1, false, `{"statusDetails":{"step":"download"},"stepTimeoutInMinutes":30,"clientToken":"client-1"}`)
	expectGolden(t, "start-next", nextOn(p+"/start-next/accepted"), p+"/start-next/accepted",
		fmt.Sprintf(`{"execution":{"jobId":%q,"thingName":"MyThing","jobDocument":%s,"status":"IN_PROGRESS","statusDetails":{"step":"download"},"queuedAt":0,"startedAt":0,"lastUpdatedAt":0,"versionNumber":2,"executionNumber":1},"timestamp":0,"clientToken":"client-1"}`, job, doc), start)
	expectGolden(t, "notify on start", nextOn(p+"/notify"), p+"/notify",
		fmt.Sprintf(`{"timestamp":0,"jobs":{"IN_PROGRESS":[{"jobId":%q,"queuedAt":0,"startedAt":0,"lastUpdatedAt":0,"versionNumber":2,"executionNumber":1}]}}`, job), start)

	dev.Publish(p+"/"+job+"/get", 1, false, `{"includeJobDocument":false,"clientToken":"c2"}`)
	expectGolden(t, "describe", nextOn(p+"/"+job+"/get/accepted"), p+"/"+job+"/get/accepted",
		fmt.Sprintf(`{"execution":{"jobId":%q,"thingName":"MyThing","status":"IN_PROGRESS","statusDetails":{"step":"download"},"queuedAt":0,"startedAt":0,"lastUpdatedAt":0,"versionNumber":2,"executionNumber":1},"timestamp":0,"clientToken":"c2"}`, job), start)
	dev.Publish(p+"/$next/get", 1, false, `{"clientToken":"c3"}`)
	expectGolden(t, "describe $next", nextOn(p+"/$next/get/accepted"), p+"/$next/get/accepted",
		fmt.Sprintf(`{"execution":{"jobId":%q,"thingName":"MyThing","jobDocument":%s,"status":"IN_PROGRESS","statusDetails":{"step":"download"},"queuedAt":0,"startedAt":0,"lastUpdatedAt":0,"versionNumber":2,"executionNumber":1},"timestamp":0,"clientToken":"c3"}`, job, doc), start)

	dev.Publish(p+"/"+job+"/update", 1, false, `{"status":"IN_PROGRESS","statusDetails":{"progress":"50"},"expectedVersion":1,"clientToken":"c4"}`)
	expectGolden(t, "stale expectedVersion", nextOn(p+"/"+job+"/update/rejected"), p+"/"+job+"/update/rejected",
		`{"code":"VersionMismatch","message":"the expected version does not match the job execution version","clientToken":"c4","timestamp":0,"executionState":{"status":"IN_PROGRESS","statusDetails":{"step":"download"},"versionNumber":2}}`, start)

	dev.Publish(p+"/"+job+"/update", 1, false, `{"status":"QUEUED","clientToken":"c5"}`)
	expectGolden(t, "invalid status", nextOn(p+"/"+job+"/update/rejected"), p+"/"+job+"/update/rejected",
		`{"code":"InvalidRequest","message":"status \"QUEUED\": a device may set IN_PROGRESS, SUCCEEDED, FAILED or REJECTED","clientToken":"c5","timestamp":0}`, start)

	dev.Publish(p+"/"+job+"/update", 1, false, `{"status":"IN_PROGRESS","statusDetails":{"progress":"50"},"expectedVersion":2,"clientToken":"c6"}`)
	expectGolden(t, "progress", nextOn(p+"/"+job+"/update/accepted"), p+"/"+job+"/update/accepted", `{"timestamp":0,"clientToken":"c6"}`, start)

	// A second job queued behind the first: notify, but the head is unchanged.
	doc2 := `{"operation":"reboot"}`
	job2 := createDocJob(t, srv, "reboot", "thingName:"+thing, doc2)
	m := nextOn(p + "/notify")
	if len(gjson.GetBytes(m.Payload, "jobs.QUEUED").Array()) != 1 || len(gjson.GetBytes(m.Payload, "jobs.IN_PROGRESS").Array()) != 1 {
		t.Fatalf("notify after a second job: %s %s", m.Topic, m.Payload)
	}

	dev.Publish(p+"/"+job+"/update", 1, false, `{"status":"SUCCEEDED","statusDetails":{"progress":"100"},"expectedVersion":"3","includeJobExecutionState":true,"includeJobDocument":true,"clientToken":"c7"}`)
	expectGolden(t, "succeeded", nextOn(p+"/"+job+"/update/accepted"), p+"/"+job+"/update/accepted",
		fmt.Sprintf(`{"executionState":{"status":"SUCCEEDED","statusDetails":{"progress":"100"},"versionNumber":4},"jobDocument":%s,"timestamp":0,"clientToken":"c7"}`, doc), start)
	expectGolden(t, "notify after completion", nextOn(p+"/notify"), p+"/notify",
		fmt.Sprintf(`{"timestamp":0,"jobs":{"QUEUED":[{"jobId":%q,"queuedAt":0,"lastUpdatedAt":0,"versionNumber":1,"executionNumber":1}]}}`, job2), start)
	expectGolden(t, "notify-next after completion", nextOn(p+"/notify-next"), p+"/notify-next",
		fmt.Sprintf(`{"timestamp":0,"execution":{"jobId":%q,"thingName":"MyThing","jobDocument":%s,"status":"QUEUED","queuedAt":0,"lastUpdatedAt":0,"versionNumber":1,"executionNumber":1}}`, job2, doc2), start)

	dev.Publish(p+"/"+job+"/update", 1, false, `{"status":"IN_PROGRESS","clientToken":"c8"}`)
	expectGolden(t, "update after SUCCEEDED", nextOn(p+"/"+job+"/update/rejected"), p+"/"+job+"/update/rejected",
		`{"code":"InvalidStateTransition","message":"the job execution is already SUCCEEDED, it cannot become IN_PROGRESS","clientToken":"c8","timestamp":0,"executionState":{"status":"SUCCEEDED","statusDetails":{"progress":"100"},"versionNumber":4}}`, start)

	dev.Publish(p+"/no-such-job/update", 1, false, `{"status":"SUCCEEDED","clientToken":"c9"}`)
	expectGolden(t, "unknown job", nextOn(p+"/no-such-job/update/rejected"), p+"/no-such-job/update/rejected",
		`{"code":"ResourceNotFound","message":"job execution no-such-job of thing MyThing does not exist","clientToken":"c9","timestamp":0}`, start)

	dev.Publish(p+"/"+job2+"/update", 1, false, `{"status":"REJECTED",`)
	expectGolden(t, "malformed JSON", nextOn(p+"/"+job2+"/update/rejected"), p+"/"+job2+"/update/rejected",
		`{"code":"InvalidJson","message":"the request payload is not valid UTF-8 JSON","timestamp":0}`, start)

	dev.Publish(p+"/"+job2+"/bogus", 1, false, `{"clientToken":"c10"}`)
	expectGolden(t, "unknown operation", nextOn(p+"/"+job2+"/bogus/rejected"), p+"/"+job2+"/bogus/rejected",
		`{"code":"InvalidTopic","message":"the topic maps to no jobs operation","clientToken":"c10","timestamp":0}`, start)

	// The device rejects the second job without starting it: the list
	// empties, notify-next says so without an execution.
	dev.Publish(p+"/"+job2+"/update", 1, false, `{"status":"REJECTED","statusDetails":{"reason":"busy"},"clientToken":"c11"}`)
	expectGolden(t, "reject queued", nextOn(p+"/"+job2+"/update/accepted"), p+"/"+job2+"/update/accepted", `{"timestamp":0,"clientToken":"c11"}`, start)
	expectGolden(t, "notify empty", nextOn(p+"/notify"), p+"/notify", `{"timestamp":0,"jobs":{}}`, start)
	expectGolden(t, "notify-next empty", nextOn(p+"/notify-next"), p+"/notify-next", `{"timestamp":0}`, start)

	dev.Publish(p+"/start-next", 1, false, `{"clientToken":"c12"}`)
	expectGolden(t, "start-next with nothing pending", nextOn(p+"/start-next/accepted"), p+"/start-next/accepted", `{"timestamp":0,"clientToken":"c12"}`, start)

	if len(held) > 0 {
		t.Fatalf("unexpected messages: %v", held)
	}

	// The executions, as the API lists them.
	body := httpGet(t, srv.HTTPURL()+"/api/jobs/"+job+"/executions", 200)
	if gjson.Get(body, "executions.#").Int() != 1 || gjson.Get(body, "executions.0.status").String() != "SUCCEEDED" ||
		gjson.Get(body, "executions.0.statusDetails.progress").String() != "100" {
		t.Fatalf("executions of %s: %s", job, body)
	}
	body = httpGet(t, srv.HTTPURL()+"/api/jobs/"+job2, 200)
	if gjson.Get(body, "executions.REJECTED").Int() != 1 || gjson.Get(body, "progress.failed").Int() != 1 {
		t.Fatalf("job %s: %s", job2, body)
	}
}

// Executions are durable across a restart (state, version, statusDetails
// and the step timer); an expired step timer moves an execution to
// TIMED_OUT (notify-next then says nothing is pending); cancelling the job
// cancels the QUEUED executions, whose later updates are rejected with
// TerminalStateReached; force cancels IN_PROGRESS ones too.
func TestJobsDurableStepTimeoutAndCancel(t *testing.T) {
	clock := fakeclock.New(time.Now())
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.RolloutInterval = 20 * time.Millisecond
		o.RolloutClock = clock.Now
	})
	for _, th := range []string{"jd-a", "jd-b", "jd-c"} {
		httpDo(t, "POST", srv.HTTPURL()+"/api/things", fmt.Sprintf(`{"thingName":%q,"attributes":{"batch":"jd"}}`, th), 201)
	}
	job := createDocJob(t, srv, "timer", "attributes.batch:jd", `{"operation":"install"}`)

	a := mt.Connect(t, srv.MQTTURL(), "jd-a")
	aReplies := a.Subscribe("$aws/things/jd-a/jobs/start-next/accepted", 1)
	a.Publish("$aws/things/jd-a/jobs/start-next", 1, false, `{"statusDetails":{"step":"flash"},"stepTimeoutInMinutes":5}`)
	if m := mt.Next(t, aReplies); gjson.GetBytes(m.Payload, "execution.versionNumber").Int() != 2 {
		t.Fatalf("start-next: %s", m.Payload)
	}
	c := mt.Connect(t, srv.MQTTURL(), "jd-c")
	cReplies := c.Subscribe("$aws/things/jd-c/jobs/start-next/accepted", 1)
	c.Publish("$aws/things/jd-c/jobs/start-next", 1, false, `{}`)
	mt.Next(t, cReplies)
	a.Disconnect(0)
	c.Disconnect(0)

	srv = srv.Restart(t)
	execs := func() map[string]gjson.Result {
		out := map[string]gjson.Result{}
		for _, e := range gjson.Get(httpGet(t, srv.HTTPURL()+"/api/jobs/"+job+"/executions", 200), "executions").Array() {
			out[e.Get("thingName").String()] = e
		}
		return out
	}
	got := execs()
	if e := got["jd-a"]; e.Get("status").String() != "IN_PROGRESS" || e.Get("versionNumber").Int() != 2 || e.Get("statusDetails.step").String() != "flash" || e.Get("stepDeadline").Int() == 0 {
		t.Fatalf("jd-a after restart: %s", e.Raw)
	}
	if got["jd-b"].Get("status").String() != "QUEUED" {
		t.Fatalf("jd-b after restart: %s", got["jd-b"].Raw)
	}

	a = mt.Connect(t, srv.MQTTURL(), "jd-a")
	next := a.Subscribe("$aws/things/jd-a/jobs/notify-next", 1)
	clock.Add(5*time.Minute + time.Second)
	m := mt.Next(t, next)
	if gjson.GetBytes(m.Payload, "execution").Exists() {
		t.Fatalf("notify-next after the time-out: %s", m.Payload)
	}
	if e := execs()["jd-a"]; e.Get("status").String() != "TIMED_OUT" || e.Get("versionNumber").Int() != 3 {
		t.Fatalf("jd-a after its step timer: %s", e.Raw)
	}
	rej := a.Subscribe("$aws/things/jd-a/jobs/"+job+"/update/rejected", 1)
	a.Publish("$aws/things/jd-a/jobs/"+job+"/update", 1, false, `{"status":"SUCCEEDED"}`)
	if m := mt.Next(t, rej); gjson.GetBytes(m.Payload, "code").String() != "InvalidStateTransition" {
		t.Fatalf("update after TIMED_OUT: %s", m.Payload)
	}

	v := httpDo(t, "POST", srv.HTTPURL()+"/api/jobs/"+job+"/cancel", "", 200)
	if gjson.Get(v, "state").String() != "cancelled" {
		t.Fatalf("cancel: %s", v)
	}
	got = execs()
	if got["jd-b"].Get("status").String() != "CANCELED" || got["jd-c"].Get("status").String() != "IN_PROGRESS" {
		t.Fatalf("after cancel: b %s, c %s", got["jd-b"].Raw, got["jd-c"].Raw)
	}
	b := mt.Connect(t, srv.MQTTURL(), "jd-b")
	bRej := b.Subscribe("$aws/things/jd-b/jobs/"+job+"/update/rejected", 1)
	b.Publish("$aws/things/jd-b/jobs/"+job+"/update", 1, false, `{"status":"IN_PROGRESS","clientToken":"late"}`)
	m = mt.Next(t, bRej)
	if gjson.GetBytes(m.Payload, "code").String() != "TerminalStateReached" || gjson.GetBytes(m.Payload, "executionState.status").String() != "CANCELED" ||
		gjson.GetBytes(m.Payload, "clientToken").String() != "late" {
		t.Fatalf("update of a cancelled execution: %s", m.Payload)
	}
	httpDo(t, "POST", srv.HTTPURL()+"/api/jobs/"+job+"/cancel?force=maybe", "", 400)
	httpDo(t, "POST", srv.HTTPURL()+"/api/jobs/"+job+"/cancel", "", 409)
	httpDo(t, "POST", srv.HTTPURL()+"/api/jobs/"+job+"/cancel?force=true", "", 200)
	if e := execs()["jd-c"]; e.Get("status").String() != "CANCELED" {
		t.Fatalf("jd-c after a forced cancel: %s", e.Raw)
	}
}

// With authentication on, a device runs its own jobs (requests, replies,
// notifications) and nothing of another thing's: another thing's requests
// are dropped by the ACL (that execution is untouched) and its jobs topics
// cannot be subscribed to; a device cannot forge a notification.
func TestJobsDeviceACL(t *testing.T) {
	s := startSecured(t)
	for _, th := range []string{"jobs-a", "jobs-b"} {
		s.api(t, s.admin, "POST", "/api/things", fmt.Sprintf(`{"thingName":%q,"attributes":{"fleet":"acl"}}`, th), 201)
	}
	a := mt.Connect(t, s.tlsMQTTURL, "jobs-a", s.trust(nil), withSecret("jobs-a", s.issue(t, "jobs-a")))
	b := mt.Connect(t, s.tlsMQTTURL, "jobs-b", s.trust(nil), withSecret("jobs-b", s.issue(t, "jobs-b")))
	bNext := b.Subscribe("$aws/things/jobs-b/jobs/notify-next", 1)
	job := gjson.Get(s.api(t, s.operator, "POST", "/api/jobs", `{"name":"acl","target":"attributes.fleet:acl","document":{"op":"x"}}`, 201), "id").String()

	for _, f := range []string{"$aws/things/jobs-b/jobs/notify-next", "$aws/things/jobs-b/jobs/#", "$aws/things/+/jobs/notify"} {
		if code := subscribeCode(t, a.Client, f); code < 0x80 {
			t.Errorf("jobs-a subscribe %q granted, want refused", f)
		}
	}
	own := a.Subscribe("$aws/things/jobs-a/jobs/#", 1)
	for _, topic := range []string{
		"$aws/things/jobs-b/jobs/start-next",
		"$aws/things/jobs-b/jobs/" + job + "/update",
		"$aws/things/jobs-b/jobs/notify-next",
		"$aws/things/jobs-a/jobs/notify-next", // forging its own notification
		"$aws/things/jobs-a/jobs/start-next/accepted",
	} {
		a.Publish(topic, 0, false, `{"status":"SUCCEEDED","execution":{"jobId":"forged"}}`)
	}
	// Barrier: jobs-a's own request is answered after the dropped ones.
	a.Publish("$aws/things/jobs-a/jobs/start-next", 1, false, `{"clientToken":"mine"}`)
	for {
		m := mt.Next(t, own)
		if strings.Contains(string(m.Payload), "forged") {
			t.Fatalf("jobs-a received a forged message on %s: %s", m.Topic, m.Payload)
		}
		if m.Topic == "$aws/things/jobs-a/jobs/start-next/accepted" {
			if gjson.GetBytes(m.Payload, "execution.status").String() != "IN_PROGRESS" || gjson.GetBytes(m.Payload, "clientToken").String() != "mine" {
				t.Fatalf("own start-next: %s", m.Payload)
			}
			break
		}
	}
	body := s.api(t, s.viewer, "GET", "/api/jobs/"+job+"/executions", "", 200)
	for _, e := range gjson.Get(body, "executions").Array() {
		if e.Get("thingName").String() == "jobs-b" && (e.Get("status").String() != "QUEUED" || e.Get("versionNumber").Int() != 1) {
			t.Fatalf("jobs-b's execution changed by jobs-a: %s", e.Raw)
		}
	}
	// jobs-b saw its own queued notification only, never a forged one.
	if m := mt.Next(t, bNext); gjson.GetBytes(m.Payload, "execution.jobId").String() != job {
		t.Fatalf("jobs-b notify-next: %s", m.Payload)
	}
}

// A job document follows the bulk jobs' rules: the condition (version
// gate) decides who gets an execution, ineligible things are listed, and
// the rate paces how many are queued per step.
func TestJobDocumentConditionAndRate(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	for th, fw := range map[string]string{"gate-1": "2.1.0", "gate-2": "2.0.0", "gate-3": "1.9.0"} {
		httpDo(t, "POST", srv.HTTPURL()+"/api/things", fmt.Sprintf(`{"thingName":%q,"attributes":{"batch":"gate"}}`, th), 201)
		httpDo(t, "POST", srv.HTTPURL()+"/things/"+th+"/shadow", fmt.Sprintf(`{"state":{"reported":{"firmware_version":%q}}}`, fw), 200)
	}
	body := httpDo(t, "POST", srv.HTTPURL()+"/api/jobs", `{"name":"gated","target":"attributes.batch:gate","condition":"shadow.reported.firmware_version>=2.0.0",
		"ratePerSecond":1,"document":{"operation":"config","interval":30}}`, 201)
	id := gjson.Get(body, "id").String()
	if gjson.Get(body, "progress.remaining").Int() != 2 {
		t.Fatalf("with rate 1, the first step handles one thing: %s", body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for gjson.Get(body, "state").String() == "running" {
		if time.Now().After(deadline) {
			t.Fatalf("job still running: %s", body)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation: the loop checks the condition
		body = httpGet(t, srv.HTTPURL()+"/api/jobs/"+id, 200)
	}
	if gjson.Get(body, "ineligibleThings").Raw != `["gate-3"]` || gjson.Get(body, "executions.QUEUED").Int() != 2 || gjson.Get(body, "progress.pending").Int() != 2 {
		t.Fatalf("gated job: %s", body)
	}
	for _, e := range gjson.Get(httpGet(t, srv.HTTPURL()+"/api/jobs/"+id+"/executions", 200), "executions").Array() {
		if e.Get("thingName").String() == "gate-3" {
			t.Fatalf("the ineligible thing got an execution: %s", e.Raw)
		}
	}
	// Refused specs: a document and a patch, a document that is no object.
	httpDo(t, "POST", srv.HTTPURL()+"/api/jobs", `{"name":"x","target":"*","patch":{"a":1},"document":{"b":2}}`, 400)
	httpDo(t, "POST", srv.HTTPURL()+"/api/jobs", `{"name":"x","target":"*","document":[1]}`, 400)
}

// The live event stream carries job execution changes as "job" events.
func TestJobExecutionEvents(t *testing.T) {
	srv := brokertest.Start(t)
	registerThings(t, srv, "ev-dev")
	ctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.HTTPURL()+"/api/events?thing=ev-dev&types=job", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() (string, string) {
		t.Helper()
		var typ string
		for lines.Scan() {
			l := lines.Text()
			switch {
			case strings.HasPrefix(l, "event: "):
				typ = strings.TrimPrefix(l, "event: ")
			case strings.HasPrefix(l, "data: "):
				return typ, strings.TrimPrefix(l, "data: ")
			}
		}
		t.Fatalf("stream ended: %v", lines.Err())
		return "", ""
	}
	job := createDocJob(t, srv, "evented", "thingName:ev-dev", `{"op":"x"}`)
	if typ, data := next(); typ != "job" || gjson.Get(data, "thing").String() != "ev-dev" ||
		gjson.Get(data, "data.execution.jobId").String() != job || gjson.Get(data, "data.execution.status").String() != "QUEUED" {
		t.Fatalf("queued event %s %s", typ, data)
	}
	dev := mt.Connect(t, srv.MQTTURL(), "ev-dev")
	dev.Publish("$aws/things/ev-dev/jobs/start-next", 1, false, `{}`)
	if typ, data := next(); typ != "job" || gjson.Get(data, "data.execution.status").String() != "IN_PROGRESS" {
		t.Fatalf("started event %s %s", typ, data)
	}
}
