package broker_test

// End-to-end rollout tests on a simulated fleet: a real in-process Umbra,
// things registered through the REST API, and sim devices (the seed's
// firmware loop, with injected faults) connected over MQTT.

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/sim"
)

// simFleet is a sim fleet registered through the API: every canaryEvery-th
// device is in ring canary, the others in general.
type simFleet struct {
	*sim.Fleet
	ids    []string
	canary map[string]bool
}

func startSimFleet(t *testing.T, srv *brokertest.Server, n, canaryEvery int, faults ...string) *simFleet {
	t.Helper()
	cfg := sim.Config{Broker: srv.MQTTURL(), Devices: n, IDPattern: "sim-%04d", TelemetryInterval: -1,
		OTADuration: 200 * time.Millisecond, RebootDelay: 100 * time.Millisecond, ConnectTimeout: 10 * time.Second}
	for _, f := range faults {
		ft, err := sim.ParseFault(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Faults = append(cfg.Faults, ft)
	}
	fl, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &simFleet{Fleet: fl, canary: map[string]bool{}}
	for i := range n {
		id := fl.ID(i)
		ring := "general"
		if i%canaryEvery == 0 {
			ring = "canary"
			f.canary[id] = true
		}
		f.ids = append(f.ids, id)
		httpDo(t, "POST", srv.HTTPURL()+"/api/things", fmt.Sprintf(`{"thingName":%q,"attributes":{"deployment_ring":%q}}`, id, ring), 201)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := fl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = fl.Stop(ctx)
	})
	waitCount(t, srv, "shadow.reported.firmware_version:1.0.0", n)
	return f
}

// waitCount polls the fleet index until query matches want things.
func waitCount(t *testing.T, srv *brokertest.Server, query string, want int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got := gjson.Get(httpGet(t, srv.HTTPURL()+"/api/aggregations/count?query="+url.QueryEscape(query), 200), "count").Int()
		if int(got) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s matches %d things, want %d", query, got, want)
		}
		<-tick.C
	}
}

// otaWatch records every thing that was ever sent a delta with
// target_version, as seen by an operator subscribed to all deltas.
type otaWatch struct {
	mu   sync.Mutex
	got  map[string]string // thing → last target_version in a delta
	seen int
}

func watchOTA(t *testing.T, srv *brokertest.Server) *otaWatch {
	w := &otaWatch{got: map[string]string{}}
	c := mt.Connect(t, srv.MQTTURL(), "ota-watch")
	tok := c.Client.Subscribe("$aws/things/+/shadow/update/delta", 1, func(_ paho.Client, m paho.Message) {
		if tv := gjson.GetBytes(m.Payload(), "state.target_version"); tv.Exists() {
			thing := strings.Split(m.Topic(), "/")[2]
			w.mu.Lock()
			w.got[thing] = tv.String()
			w.seen++
			w.mu.Unlock()
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe deltas: %v", tok.Error())
	}
	return w
}

func (w *otaWatch) notified(thing string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.got[thing]
	return ok
}

// eventLog records a rollout's events as published on MQTT.
type eventLog struct {
	mu     sync.Mutex
	events []gjson.Result
	signal chan struct{}
}

func watchEvents(t *testing.T, srv *brokertest.Server) *eventLog {
	l := &eventLog{signal: make(chan struct{}, 1)}
	c := mt.Connect(t, srv.MQTTURL(), "rollout-watch")
	tok := c.Client.Subscribe("$umbra/rollouts/+/events", 1, func(_ paho.Client, m paho.Message) {
		l.mu.Lock()
		l.events = append(l.events, gjson.ParseBytes(m.Payload()))
		l.mu.Unlock()
		select {
		case l.signal <- struct{}{}:
		default:
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe events: %v", tok.Error())
	}
	return l
}

// wait returns the first event of rollout id whose type is one of types.
func (l *eventLog) wait(t *testing.T, srv *brokertest.Server, id string, types ...string) gjson.Result {
	t.Helper()
	deadline := time.NewTimer(90 * time.Second)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for _, ev := range l.events {
			if ev.Get("rollout").String() != id {
				continue
			}
			for _, typ := range types {
				if ev.Get("type").String() == typ {
					l.mu.Unlock()
					return ev
				}
			}
		}
		l.mu.Unlock()
		select {
		case <-l.signal:
		case <-deadline.C:
			t.Fatalf("rollout %s: no %v event within 90 s: %s", id, types, httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200))
		}
	}
}

func (l *eventLog) types(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ev := range l.events {
		if ev.Get("rollout").String() == id {
			out = append(out, ev.Get("type").String()+"@"+ev.Get("wave").String())
		}
	}
	return out
}

// crashSpec is issue 15's reproduction: health gates on boot_count and a
// panic reset reason, canary with a bake, then the rest.
func crashSpec(bake string) string {
	return `{"name":"fw 5.0","target":"thingName:sim-*","start":true,
 "patch":{"ota_url":"https://fw.example/5.0.bin","target_version":"5.0"},
 "failureCondition":"shadow.reported.ota_status:failed",
 "health":{"increaseOf":["boot_count"],"errorCondition":"shadow.reported.reset_reason:panic"},
 "waves":[{"name":"canary","query":"attributes.deployment_ring:canary","bakeTime":"` + bake + `"},
          {"name":"early","percent":50},{"name":"rest","percent":100}]}`
}

// (a) A firmware that installs fine and then crash-loops halts the rollout
// in the canary during the bake; no device outside the canary is ever
// notified.
func TestSimCrashLoopAfterInstallHaltsInCanaryBake(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	events := watchEvents(t, srv)
	ota := watchOTA(t, srv)
	fleet := startSimFleet(t, srv, 20, 5, "crash-loop:version=5.0,delay=1500ms")
	id := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", crashSpec("5s"), 201), "id").String()

	end := events.wait(t, srv, id, "halted", "completed", "rolled_back")
	v := httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200)
	if end.Get("type").String() != "halted" {
		t.Fatalf("rollout ended %s (events %v): %s", end.Get("type"), events.types(id), v)
	}
	types := strings.Join(events.types(id), " ")
	if !strings.Contains(types, "baking@0") || strings.Contains(types, "wave_started@1") {
		t.Fatalf("want a halt during the canary's bake, events: %s", types)
	}
	if r := gjson.Get(v, "reason").String(); !strings.Contains(r, "wave canary") || !strings.Contains(r, "regressed") {
		t.Fatalf("reason %q", r)
	}
	if s := gjson.Get(v, "waves.0.state").String() + "/" + gjson.Get(v, "waves.1.state").String() + "/" + gjson.Get(v, "waves.2.state").String(); s != "failed/not_reached/not_reached" {
		t.Fatalf("wave badges %s: %s", s, v)
	}
	regressed := gjson.Get(httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id+"/devices?state=regressed", 200), "devices").Array()
	if len(regressed) == 0 {
		t.Fatalf("no regressed device: %s", httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id+"/devices", 200))
	}
	for _, d := range regressed {
		gate := d.Get("failure.gate").String()
		if !fleet.canary[d.Get("thing").String()] || (gate != "health.errorCondition" && gate != "health.increaseOf") ||
			d.Get("failure.value").String() == "" || d.Get("failure.time").Int() == 0 || !d.Get("installed").Bool() {
			t.Fatalf("regressed device %s", d.Raw)
		}
	}
	for _, th := range fleet.ids {
		if !fleet.canary[th] && ota.notified(th) {
			t.Fatalf("%s outside the canary was sent the OTA", th)
		}
		if fleet.canary[th] && !ota.notified(th) {
			t.Fatalf("canary %s never notified", th)
		}
	}
	if n := gjson.Get(v, "totals.skipped").Int(); n != 16 {
		t.Fatalf("skipped %d, want 16: %s", n, v)
	}
}
