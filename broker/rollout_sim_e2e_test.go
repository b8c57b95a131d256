package broker_test

// End-to-end rollout tests on a simulated fleet: a real in-process Umbra,
// things registered through the REST API, and sim devices (the seed's
// firmware loop, with injected faults) connected over MQTT.

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/fakeclock"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/sim"
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
	return startSimFleetWith(t, srv, n, canaryEvery, nil, faults...)
}

func startSimFleetWith(t *testing.T, srv *brokertest.Server, n, canaryEvery int, modify func(*sim.Config), faults ...string) *simFleet {
	t.Helper()
	cfg := sim.Config{Broker: srv.MQTTURL(), Devices: n, IDPattern: "sim-%04d", TelemetryInterval: -1,
		OTADuration: 200 * time.Millisecond, RebootDelay: 100 * time.Millisecond, ConnectTimeout: 10 * time.Second}
	if modify != nil {
		modify(&cfg)
	}
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

// wait returns the first event of rollout id whose type is one of types
// (a type, or type@wave).
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
				if ev.Get("type").String() == typ || ev.Get("type").String()+"@"+ev.Get("wave").String() == typ {
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

// (b) A fault that appears only after 30 s of bake (engine time, driven by
// a fake clock) still halts the rollout.
func TestSimFaultAfter30sOfBakeHalts(t *testing.T) {
	clock := fakeclock.New(time.Now())
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.RolloutInterval = 20 * time.Millisecond
		o.RolloutClock = clock.Now
	})
	events := watchEvents(t, srv)
	ota := watchOTA(t, srv)
	// The canaries crash 3 s (real time) after booting into 5.0; by then
	// the test has moved the rollout's clock 31 s into the 60 s bake.
	fleet := startSimFleet(t, srv, 20, 5, "crash-loop:version=5.0,delay=3s")
	id := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", crashSpec("60s"), 201), "id").String()
	baking := events.wait(t, srv, id, "baking", "halted")
	if baking.Get("type").String() != "baking" {
		t.Fatalf("halted before the bake: %s", baking.Raw)
	}
	clock.Add(31 * time.Second)
	end := events.wait(t, srv, id, "halted", "completed", "wave_started@1")
	if end.Get("type").String() != "halted" {
		t.Fatalf("want halted, got %s; events %v", end.Raw, events.types(id))
	}
	if into := end.Get("time").Int() - baking.Get("time").Int(); into < 30_000 || into >= 60_000 {
		t.Fatalf("halted %d ms into the bake, want after 30 s and before its end", into)
	}
	for _, th := range fleet.ids {
		if !fleet.canary[th] && ota.notified(th) {
			t.Fatalf("%s outside the canary was sent the OTA", th)
		}
	}
}

// (c) A healthy firmware completes every wave, with the same health gates.
func TestSimHealthyFirmwareCompletesAllWaves(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	events := watchEvents(t, srv)
	fleet := startSimFleet(t, srv, 20, 5)
	id := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", crashSpec("300ms"), 201), "id").String()
	end := events.wait(t, srv, id, "halted", "completed", "rolled_back")
	v := httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200)
	if end.Get("type").String() != "completed" {
		t.Fatalf("ended %s: %s", end.Raw, v)
	}
	for i, w := range gjson.Get(v, "waves").Array() {
		if w.Get("state").String() != "passed" || w.Get("succeeded").Int() != w.Get("size").Int() || w.Get("installed").Int() != w.Get("size").Int() {
			t.Fatalf("wave %d: %s", i, w.Raw)
		}
	}
	if gjson.Get(v, "totals.succeeded").Int() != 20 || gjson.Get(v, "totals.size").Int() != 20 {
		t.Fatalf("totals %s", gjson.Get(v, "totals").Raw)
	}
	for i := range fleet.Devices() {
		if fw := fleet.Firmware(i); fw != "5.0" {
			t.Fatalf("%s runs %s", fleet.ID(i), fw)
		}
	}
	devs := gjson.Get(httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id+"/devices", 200), "devices").Array()
	for _, d := range devs {
		if d.Get("state").String() != "succeeded" || d.Get("ota.status").String() != "succeeded" || d.Get("ota.progress").Float() != 100 {
			t.Fatalf("device %s", d.Raw)
		}
	}
}

// (g) A canary that selects no device, or a target that matches nothing, is
// refused with the reason, unless allowEmpty.
func TestSimEmptyCanaryRefused(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	startSimFleet(t, srv, 10, 1000) // only sim-0000 is a canary
	spec := `{"name":"fw","target":"thingName:sim-*","patch":{"ota_url":"u","target_version":"5.0"},%s
	 "waves":[{"name":"canary","query":"attributes.deployment_ring:canary-typo"},{"name":"rest","percent":100}]}`
	got := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", fmt.Sprintf(spec, ""), 400)
	if gjson.Get(got, "field").String() != "waves[0]" || !strings.Contains(gjson.Get(got, "message").String(), "canary") ||
		!strings.Contains(gjson.Get(got, "message").String(), "selects no device") {
		t.Fatalf("empty canary: %s", got)
	}
	got = httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", strings.Replace(fmt.Sprintf(spec, ""), "thingName:sim-*", "thingName:nope-*", 1), 400)
	if gjson.Get(got, "field").String() != "target" || !strings.Contains(gjson.Get(got, "message").String(), "matches no device") {
		t.Fatalf("empty target: %s", got)
	}
	pv := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts/preview", fmt.Sprintf(spec, ""), 200)
	if gjson.Get(pv, "empty.0").String() != "waves[0]" {
		t.Fatalf("preview does not flag the empty wave: %s", pv)
	}
	// Created while the canary is empty, then the fleet changes: start
	// refuses too.
	created := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", fmt.Sprintf(spec, `"allowEmpty":true,`), 201)
	if gjson.Get(created, "state").String() != "created" {
		t.Fatalf("allowEmpty: %s", created)
	}
	noEmpty := strings.Replace(fmt.Sprintf(spec, ""), "canary-typo", "canary", 1)
	id := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", noEmpty, 201), "id").String()
	httpDo(t, "DELETE", srv.HTTPURL()+"/api/things/sim-0000", "", 204)
	got = httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts/"+id+"/start", "", 400)
	if gjson.Get(got, "field").String() != "waves[0]" {
		t.Fatalf("start with an empty canary: %s", got)
	}
}

// prepareDesired gives every device a desired key the firmware does not
// know (so it stays in desired: feature_flag "a") and makes it report
// target_version 1.0.0 (converged, so absent from desired).
func prepareDesired(t *testing.T, srv *brokertest.Server, fleet *simFleet) {
	for _, th := range fleet.ids {
		httpDo(t, "POST", srv.HTTPURL()+"/things/"+th+"/shadow",
			`{"state":{"desired":{"feature_flag":"a","target_version":"1.0.0","ota_url":"https://fw.example/1.0.0.bin"}}}`, 200)
	}
	waitCount(t, srv, "shadow.reported.target_version:1.0.0", len(fleet.ids))
	waitCount(t, srv, "shadow.desired.target_version:*", 0)
}

func rollbackSpec(extra string) string {
	return `{"name":"fw 5.0","target":"thingName:sim-*","start":true,"onFailure":"rollback",` + extra + `
 "patch":{"ota_url":"https://fw.example/5.0.bin","target_version":"5.0","feature_flag":"b"},
 "health":{"increaseOf":["boot_count"],"errorCondition":"shadow.reported.reset_reason:panic"},
 "waves":[{"name":"canary","query":"attributes.deployment_ring:canary","bakeTime":"30s"},{"name":"rest","percent":100}]}`
}

// (e) Rollback restores desired exactly: a key absent from desired before
// the rollout is removed again (not set to the reported value), a present
// one gets its old value; status says that installed firmware stays.
func TestSimRollbackRestoresDesiredExactly(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	events := watchEvents(t, srv)
	fleet := startSimFleet(t, srv, 10, 5, "crash-loop:version=5.0,delay=1s")
	prepareDesired(t, srv, fleet)
	id := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", rollbackSpec(""), 201), "id").String()
	if end := events.wait(t, srv, id, "rolled_back", "completed", "halted"); end.Get("type").String() != "rolled_back" {
		t.Fatalf("ended %s", end.Raw)
	}
	for _, th := range fleet.ids {
		desired := gjson.Get(httpGet(t, srv.HTTPURL()+"/things/"+th+"/shadow", 200), "state.desired")
		if desired.Get("feature_flag").String() != "a" || desired.Get("target_version").Exists() || desired.Get("ota_url").Exists() {
			t.Fatalf("%s desired after rollback: %s (want feature_flag a, no target_version, no ota_url)", th, desired.Raw)
		}
	}
	v := httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200)
	if n := gjson.Get(v, "totals.rolledBack").Int(); n != 2 {
		t.Fatalf("rolled back %d devices, want the 2 canaries: %s", n, v)
	}
	if notice := gjson.Get(v, "notice").String(); !strings.Contains(notice, "does not downgrade") || !strings.Contains(notice, "2 devices run the new version") {
		t.Fatalf("notice %q", notice)
	}
	for _, d := range gjson.Get(httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id+"/devices?wave=0", 200), "devices").Array() {
		if d.Get("state").String() != "rolled_back" || d.Get("before").String() == "" {
			t.Fatalf("canary %s", d.Raw)
		}
	}
}

// (e) rollbackPatch actually downgrades: the canaries that installed the
// crash-looping 5.0 are sent back to 1.0.0 and install it.
func TestSimRollbackPatchDowngrades(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	events := watchEvents(t, srv)
	fleet := startSimFleet(t, srv, 10, 5, "crash-loop:version=5.0,delay=1s")
	prepareDesired(t, srv, fleet)
	id := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts",
		rollbackSpec(`"rollbackPatch":{"target_version":"1.0.0","ota_url":"https://fw.example/1.0.0.bin"},`), 201), "id").String()
	if end := events.wait(t, srv, id, "rolled_back", "completed", "halted"); end.Get("type").String() != "rolled_back" {
		t.Fatalf("ended %s", end.Raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fleet.WaitFirmware(ctx, "1.0.0", 0, 5); err != nil {
		t.Fatalf("canaries not downgraded: %s, %s", fleet.Firmware(0), fleet.Firmware(5))
	}
	waitCount(t, srv, "shadow.reported.firmware_version:1.0.0", 10)
	// The status follows: no device runs 5.0 any more.
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		v := httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200)
		if gjson.Get(v, "totals.installed").Int() == 0 && strings.Contains(gjson.Get(v, "notice").String(), "rollbackPatch written") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after downgrade: %s", v)
		}
		<-tick.C
	}
}

// (d) Preview equals the created plan for the same spec; when the fleet
// changed in between, create says so instead of silently differing.
func TestSimPreviewIsThePlan(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	startSimFleet(t, srv, 30, 10)
	spec := `{"name":"fw","target":"thingName:sim-*","patch":{"ota_url":"u","target_version":"5.0"},%s
	 "waves":[{"name":"canary","query":"attributes.deployment_ring:canary"},{"name":"early","percent":20},{"name":"rest","percent":100}]}`
	pv := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts/preview", fmt.Sprintf(spec, ""), 200)
	plan := gjson.Get(pv, "plan").Raw
	if gjson.Get(pv, "plan.seed").String() == "" || gjson.Get(pv, "plan.fingerprint").String() == "" {
		t.Fatalf("preview has no plan token: %s", pv)
	}
	// The same seed previews the same waves.
	again := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts/preview", fmt.Sprintf(spec, `"plan":`+plan+`,`), 200)
	if gjson.Get(again, "waves").Raw != gjson.Get(pv, "waves").Raw {
		t.Fatalf("preview with the seed differs:\n%s\n%s", pv, again)
	}
	created := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", fmt.Sprintf(spec, `"start":true,"plan":`+plan+`,`), 201)
	id := gjson.Get(created, "id").String()
	frozen := httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id+"/preview", 200)
	if gjson.Get(frozen, "waves").Raw != gjson.Get(pv, "waves").Raw {
		t.Fatalf("created plan differs from the preview:\npreview %s\ncreated %s", gjson.Get(pv, "waves"), gjson.Get(frozen, "waves"))
	}
	for i, w := range gjson.Get(pv, "waves").Array() {
		devs := gjson.Get(httpGet(t, srv.HTTPURL()+fmt.Sprintf("/api/rollouts/%s/devices?wave=%d", id, i), 200), "devices.#.thing").Raw
		if devs != w.Get("things").Raw {
			t.Fatalf("wave %d devices %s, previewed %s", i, devs, w.Get("things").Raw)
		}
	}
	// The fleet changes between preview and create: create refuses and says
	// how the plan moved.
	pv2 := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts/preview", fmt.Sprintf(spec, ""), 200)
	httpDo(t, "POST", srv.HTTPURL()+"/api/things", `{"thingName":"sim-9999","attributes":{"deployment_ring":"canary"}}`, 201)
	got := httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", fmt.Sprintf(spec, `"plan":`+gjson.Get(pv2, "plan").Raw+`,`), 409)
	if gjson.Get(got, "field").String() != "plan" || !strings.Contains(gjson.Get(got, "message").String(), "fleet changed since the preview") ||
		!strings.Contains(gjson.Get(got, "message").String(), "canary 3→4") {
		t.Fatalf("create after a fleet change: %s", got)
	}
}

// TestSimHaltLatency measures, on a simulated fleet, the time from a
// fault's first report (the first accepted shadow update in which a canary
// reports reset_reason panic after installing the new firmware) to the
// rollout's halted event, both as an operator's MQTT client sees them. It
// is a measurement, not a pass/fail timing: run it explicitly, e.g.
//
//	UMBRA_HALT_BENCH_DEVICES=1000 go test ./broker -run TestSimHaltLatency -count=1 -v
//
// (UMBRA_HALT_BENCH_INTERVAL sets the engine's step interval; default 1s,
// the broker's default).
func TestSimHaltLatency(t *testing.T) {
	var n int
	if _, err := fmt.Sscan(os.Getenv("UMBRA_HALT_BENCH_DEVICES"), &n); err != nil || n < 100 {
		t.Skip("set UMBRA_HALT_BENCH_DEVICES (>= 100) to run this measurement")
	}
	interval := time.Second
	if s := os.Getenv("UMBRA_HALT_BENCH_INTERVAL"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		interval = d
	}
	if _, err := sim.RaiseFileLimit(uint64(2*n + 1024)); err != nil {
		t.Logf("file limit: %v", err)
	}
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = interval })
	var mu sync.Mutex
	var firstFault, halted time.Time
	var haltMsg string
	done := make(chan struct{})
	c := mt.Connect(t, srv.MQTTURL(), "latency-watch")
	c.Client.Subscribe("$aws/things/+/shadow/update/accepted", 0, func(_ paho.Client, m paho.Message) {
		if gjson.GetBytes(m.Payload(), "state.reported.reset_reason").String() == "panic" {
			mu.Lock()
			if firstFault.IsZero() {
				firstFault = time.Now()
			}
			mu.Unlock()
		}
	}).Wait()
	c.Client.Subscribe("$umbra/rollouts/+/events", 1, func(_ paho.Client, m paho.Message) {
		if typ := gjson.GetBytes(m.Payload(), "type").String(); typ == "halted" || typ == "completed" {
			mu.Lock()
			if halted.IsZero() {
				halted, haltMsg = time.Now(), typ+": "+gjson.GetBytes(m.Payload(), "message").String()
				close(done)
			}
			mu.Unlock()
		}
	}).Wait()
	t0 := time.Now()
	fleet := startSimFleet(t, srv, n, 100, "crash-loop:version=5.0,delay=2s")
	t.Logf("%d devices registered and connected in %v", n, time.Since(t0).Round(time.Millisecond))
	httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", crashSpec("10m"), 201)
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("no halt within 2 minutes")
	}
	mu.Lock()
	defer mu.Unlock()
	if firstFault.IsZero() || !strings.HasPrefix(haltMsg, "halted") {
		t.Fatalf("first fault %v, end %q", firstFault, haltMsg)
	}
	t.Logf("devices %d (canaries %d), step interval %v: first fault report -> halted event: %v (%s)",
		n, len(fleet.canary), interval, halted.Sub(firstFault).Round(time.Millisecond), haltMsg)
}

// Each device's OTA progress, as it reports it (reported.ota_status,
// ota_progress), is shown per device while the update runs, and the
// outcome at the end.
func TestSimOTAProgressShownPerDevice(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	events := watchEvents(t, srv)
	startSimFleetWith(t, srv, 4, 4, func(c *sim.Config) { c.OTADuration = 2 * time.Second })
	id := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", `{"name":"fw","target":"thingName:sim-*","start":true,
	 "patch":{"ota_url":"https://fw.example/5.0.bin","target_version":"5.0"},"waves":[{"name":"all","percent":100}]}`, 201), "id").String()
	seen := map[string]bool{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(60 * time.Second)
	for !seen["downloading"] {
		for _, d := range gjson.Get(httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id+"/devices", 200), "devices").Array() {
			if st, p := d.Get("ota.status").String(), d.Get("ota.progress").Float(); st == "downloading" && p > 0 && p < 100 {
				if d.Get("state").String() != "in_progress" {
					t.Fatalf("downloading device not in progress: %s", d.Raw)
				}
				seen[st] = true
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("never saw a device downloading with its progress")
		}
		<-tick.C
	}
	if end := events.wait(t, srv, id, "completed", "halted"); end.Get("type").String() != "completed" {
		t.Fatalf("ended %s", end.Raw)
	}
	for _, d := range gjson.Get(httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id+"/devices", 200), "devices").Array() {
		if d.Get("ota.status").String() != "succeeded" || d.Get("state").String() != "succeeded" {
			t.Fatalf("device at the end: %s", d.Raw)
		}
	}
}
