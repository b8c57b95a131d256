package broker_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// otaFleet runs n devices as real MQTT clients with the seed's OTA
// firmware: on a delta carrying target_version they "download" and report
// the new version, or report ota_status failed when faulty says so. It
// records every device that received an OTA delta.
type otaFleet struct {
	mu       sync.Mutex
	received map[string]bool
}

func startOTAFleet(t *testing.T, srv *brokertest.Server, n int, faulty func(id string) bool) (*otaFleet, []string) {
	f := &otaFleet{received: map[string]bool{}}
	var ids []string
	for i := range n {
		id := fmt.Sprintf("esp32-%03d", i)
		ids = append(ids, id)
		ring := "general"
		if i%50 == 0 {
			ring = "canary"
		}
		httpDo(t, "POST", srv.HTTPURL()+"/api/things", fmt.Sprintf(`{"thingName":%q,"attributes":{"deployment_ring":%q}}`, id, ring), 201)
		var c paho.Client = mt.Connect(t, srv.MQTTURL(), id).Client
		prefix := "$aws/things/" + id + "/shadow"
		tok := c.Subscribe(prefix+"/update/delta", 1, func(_ paho.Client, m paho.Message) {
			tv := gjson.GetBytes(m.Payload(), "state.target_version")
			if !tv.Exists() {
				return
			}
			f.mu.Lock()
			again := f.received[id]
			f.received[id] = true
			f.mu.Unlock()
			if again && faulty != nil && faulty(id) {
				// Real firmware does not retry a version that failed; every
				// report re-publishes the pending delta, so reacting to each
				// would loop until the per-thing rate limit stops it.
				return
			}
			report := fmt.Sprintf(`{"state":{"reported":{"firmware_version":%q,"target_version":%q,"ota_status":"succeeded"}}}`, tv.String(), tv.String())
			if faulty != nil && faulty(id) {
				report = `{"state":{"reported":{"ota_status":"failed"}}}`
			}
			c.Publish(prefix+"/update", 1, false, report) // not waited on: runs in paho's callback
		})
		tok.Wait()
		acc := make(chan struct{}, 1)
		c.Subscribe(prefix+"/update/accepted", 1, func(paho.Client, paho.Message) {
			select {
			case acc <- struct{}{}:
			default:
			}
		}).Wait()
		c.Publish(prefix+"/update", 1, false, `{"state":{"reported":{"firmware_version":"1.0","target_version":"1.0"}}}`).Wait()
		<-acc
		c.Unsubscribe(prefix + "/update/accepted").Wait()
	}
	return f, ids
}

func (f *otaFleet) got(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.received[id]
}

// waitRollout waits for a terminal rollout event on MQTT.
func waitRollout(t *testing.T, srv *brokertest.Server, events <-chan mt.Message, id string) string {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case m := <-events:
			if !strings.Contains(m.Topic, id) {
				continue
			}
			switch typ := gjson.GetBytes(m.Payload, "type").String(); typ {
			case "completed", "halted", "rolled_back", "cancelled":
				if typ == "halted" && gjson.GetBytes(m.Payload, "message").String() == "" {
					t.Fatalf("halt without reason: %s", m.Payload)
				}
				return typ
			}
		case <-deadline:
			t.Fatalf("rollout did not finish within 60 s: %s", httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200))
			return ""
		}
	}
}

const otaRollout = `{"name":"fw 1.1","target":"thingName:esp32-*","patch":{"ota_url":"https://fw.example/1.1.bin","target_version":"1.1"},
 "failureCondition":"shadow.reported.ota_status:failed","onFailure":"%s","start":true,
 "waves":[{"name":"canary","query":"attributes.deployment_ring:canary"},{"name":"early adopters","percent":10},
          {"name":"wave","percent":50},{"name":"all","percent":100}]}`

func TestRolloutOfFourWavesCompletesOnRealDevices(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	ops := mt.Connect(t, srv.MQTTURL(), "ops")
	events := ops.Subscribe("$umbra/rollouts/#", 1)
	fleet, ids := startOTAFleet(t, srv, 200, nil)
	created := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", fmt.Sprintf(otaRollout, "halt"), 201)
	id := gjson.Get(created, "id").String()
	if got := waitRollout(t, srv, events, id); got != "completed" {
		t.Fatalf("rollout ended %s: %s", got, httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200))
	}
	v := httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200)
	var sizes []int64
	for _, w := range gjson.Get(v, "waves").Array() {
		if w.Get("succeeded").Int() != w.Get("size").Int() {
			t.Fatalf("wave %s", w.Raw)
		}
		sizes = append(sizes, w.Get("size").Int())
	}
	if fmt.Sprint(sizes) != "[4 20 88 88]" {
		t.Fatalf("wave sizes %v", sizes)
	}
	for _, id := range ids {
		if !fleet.got(id) {
			t.Fatalf("%s never received the OTA", id)
		}
	}
	count := httpGet(t, srv.HTTPURL()+"/api/aggregations/count?query=shadow.reported.firmware_version:1.1", 200)
	if gjson.Get(count, "count").Int() != 200 {
		t.Fatalf("devices on 1.1: %s", count)
	}
}

func TestFaultyCanariesHaltTheRolloutAndRollBack(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	ops := mt.Connect(t, srv.MQTTURL(), "ops")
	events := ops.Subscribe("$umbra/rollouts/#", 1)
	canaries := []string{"esp32-000", "esp32-050", "esp32-100", "esp32-150"}
	fleet, ids := startOTAFleet(t, srv, 200, func(id string) bool { return id == "esp32-050" })
	created := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", fmt.Sprintf(otaRollout, "rollback"), 201)
	id := gjson.Get(created, "id").String()
	if got := waitRollout(t, srv, events, id); got != "rolled_back" {
		t.Fatalf("rollout ended %s", got)
	}
	v := httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200)
	if gjson.Get(v, "state").String() != "rolled_back" || !strings.Contains(gjson.Get(v, "reason").String(), "canary") {
		t.Fatalf("rollout: %s", v)
	}
	for _, d := range ids {
		if fleet.got(d) && !slices.Contains(canaries, d) {
			t.Fatalf("%s outside the canary wave received the OTA desired state", d)
		}
		doc := httpGet(t, srv.HTTPURL()+"/things/"+d+"/shadow", 200)
		if gjson.Get(doc, "state.desired.target_version").String() == "1.1" {
			t.Fatalf("%s still told to install 1.1 after rollback: %s", d, doc)
		}
	}
	devs := httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id+"/devices?state=failed", 200)
	var failed []struct{ Thing, Reason string }
	_ = json.Unmarshal([]byte(gjson.Get(devs, "devices").Raw), &failed)
	if len(failed) != 1 || failed[0].Thing != "esp32-050" || !strings.HasPrefix(failed[0].Reason, "failure condition: ota_status=failed") {
		t.Fatalf("failed devices: %s", devs)
	}
}

// The rollout and job API rejects bad input with the field named.
func TestRolloutAPIBadInput(t *testing.T) {
	srv := brokertest.Start(t)
	for body, field := range map[string]string{
		`{"name":"x","target":"*","patch":{"a":1},"successCondition":"shadow.reported.a:1","waves":[]}`:                      "waves",
		`{"name":"x","target":"attributes.:","patch":{"target_version":"1"},"waves":[{"name":"a","percent":100}]}`:           "target",
		`{"name":"x","target":"*","patch":{"target_version":"1"},"waves":[{"name":"a","percent":100}],"onFailure":"ignore"}`: "onFailure",
		`{"name":"x","target":"*","patch":"nope","waves":[{"name":"a","percent":100}]}`:                                      "patch",
		`{"name":"x","target":"*","patch":{"target_version":"1"},"waves":[{"name":"a","percent":100}],"colour":1}`:           "colour",
	} {
		got := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", body, 400)
		if gjson.Get(got, "field").String() != field {
			t.Errorf("%s: %s, want field %s", body, got, field)
		}
	}
	httpGet(t, srv.HTTPURL()+"/api/rollouts/ro-nope", 404)
	httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts/ro-nope/pause", "", 404)
	created := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", `{"name":"x","target":"*","allowEmpty":true,"patch":{"target_version":"1"},"waves":[{"name":"a","percent":100}]}`, 201)
	httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts/"+gjson.Get(created, "id").String()+"/resume", "", 409)
	job := httpDo(t, "POST", srv.HTTPURL()+"/api/jobs", `{"name":"cfg","target":"*","patch":{"telemetry_interval_s":300}}`, 201)
	if gjson.Get(job, "state").String() != "completed" {
		t.Fatalf("job: %s", job)
	}
	httpDo(t, "POST", srv.HTTPURL()+"/api/jobs", `{"name":"cfg","patch":{"x":1}}`, 400)
}
