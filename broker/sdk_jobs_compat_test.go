package broker_test

import (
	"fmt"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
)

// aws-iot-device-sdk-v2's jobs client (iotjobs.IotJobsClientv2, MQTT 5 over
// plain TCP) against Umbra's AWS IoT Jobs device API: notify and
// notify-next streams, get pending, start-next with a step timer, a progress
// update, an update with a stale expectedVersion (VersionMismatch), describe,
// SUCCEEDED, notify-next naming the next job after completion, rejected
// updates (InvalidStateTransition, ResourceNotFound), FAILED with
// statusDetails, and notify-next without an execution once nothing is
// pending. Skipped like the other SDK tests where node or the SDK is missing
// (a failure under CI).
func TestSDKCompatV2Jobs(t *testing.T) {
	e := sdkSetup(t)
	srv := brokertest.Start(t)
	const thing = "sdk-v2-jobs-device"
	registerThings(t, srv, thing)
	r := e.run(t, "v2_jobs.js", map[string]string{"UMBRA_HOST": "127.0.0.1", "UMBRA_PORT": port(t, srv.MQTTAddr()), "UMBRA_THING": thing})
	expect(t, r.next("connected"), "reasonCode", "0")
	r.next("streams-open")

	doc1 := `{"operation":"ota","version":"2.0.0"}`
	doc2 := `{"operation":"reboot"}`
	job1 := createDocJob(t, srv, "sdk-ota", "thingName:"+thing, doc1)
	job2 := createDocJob(t, srv, "sdk-reboot", "thingName:"+thing, doc2)
	r.proceed()

	s := r.next("notify-next")
	expect(t, s, "jobId", fmt.Sprintf("%q", job1))
	expect(t, s, "status", `"QUEUED"`)
	expect(t, s, "jobDocument", doc1)
	expect(t, r.next("notify"), "queued", fmt.Sprintf("[%q,%q]", job1, job2))

	s = r.next("get-pending")
	expect(t, s, "inProgress", "[]")
	expect(t, s, "queued", fmt.Sprintf("[%q,%q]", job1, job2))
	expect(t, s, "hasToken", "true")
	if s.Get("timestamp").Type != gjson.Number {
		t.Fatalf("get-pending timestamp: %s", s.Raw)
	}

	s = r.next("start-next")
	expect(t, s, "jobId", fmt.Sprintf("%q", job1))
	expect(t, s, "status", `"IN_PROGRESS"`)
	expect(t, s, "versionNumber", "2")
	expect(t, s, "statusDetails", `{"step":"download","progress":"0"}`)
	expect(t, s, "jobDocument", doc1)

	expect(t, r.next("progress"), "executionState", `{"status":"IN_PROGRESS","statusDetails":{"step":"download","progress":"50"},"versionNumber":3}`)
	s = r.next("version-conflict")
	expect(t, s, "code", `"VersionMismatch"`)
	expect(t, s, "executionState", `{"status":"IN_PROGRESS","statusDetails":{"step":"download","progress":"50"},"versionNumber":3}`)

	s = r.next("describe")
	expect(t, s, "status", `"IN_PROGRESS"`)
	expect(t, s, "versionNumber", "3")

	s = r.next("succeeded")
	expect(t, s, "executionState", `{"status":"SUCCEEDED","statusDetails":{"step":"done","progress":"100"},"versionNumber":4}`)
	expect(t, s, "jobDocument", doc1)
	s = r.next("notify-next-after")
	expect(t, s, "jobId", fmt.Sprintf("%q", job2))
	expect(t, s, "status", `"QUEUED"`)

	s = r.next("rejected-update")
	expect(t, s, "code", `"InvalidStateTransition"`)
	expect(t, s, "executionState.status", `"SUCCEEDED"`)
	expect(t, r.next("unknown-job"), "code", `"ResourceNotFound"`)

	s = r.next("failed")
	expect(t, s, "jobId", fmt.Sprintf("%q", job2))
	expect(t, s, "executionState", `{"status":"FAILED","statusDetails":{"reason":"checksum-mismatch"},"versionNumber":3}`)
	r.next("notify-next-empty")
	r.finish()

	// The server's side: the executions the API lists.
	body := httpGet(t, srv.HTTPURL()+"/api/jobs/"+job2+"/executions", 200)
	if gjson.Get(body, "executions.0.status").String() != "FAILED" || gjson.Get(body, "executions.0.statusDetails.reason").String() != "checksum-mismatch" {
		t.Fatalf("executions of %s: %s", job2, body)
	}
}
