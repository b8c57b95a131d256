package sim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/sim"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/shadow"
)

// wait bounds every wait on the fleet (generous for a loaded -race run).
const wait = 45 * time.Second

type doc struct {
	State struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
		Delta    map[string]any `json:"delta"`
	} `json:"state"`
}

func getShadow(t testing.TB, srv *brokertest.Server, thing string) (doc, bool) {
	t.Helper()
	resp := srv.Shadows().Handle(context.Background(), shadow.Request{
		Ref: shadow.Ref{Thing: thing}, Op: shadow.OpGet, Payload: []byte("{}"), Origin: shadow.OriginInternal,
	})
	if resp.Err != nil {
		return doc{}, false
	}
	var d doc
	if err := json.Unmarshal(resp.Payload, &d); err != nil {
		t.Fatalf("%s: get/accepted %s: %v", thing, resp.Payload, err)
	}
	return d, true
}

func setDesired(t *testing.T, srv *brokertest.Server, thing string, desired map[string]any) {
	t.Helper()
	p, _ := json.Marshal(map[string]any{"state": map[string]any{"desired": desired}})
	resp := srv.Shadows().Handle(context.Background(), shadow.Request{
		Ref: shadow.Ref{Thing: thing}, Op: shadow.OpUpdate, Payload: p, Origin: shadow.OriginInternal, Principal: "test-app",
	})
	if resp.Err != nil {
		t.Fatalf("%s: set desired: %v", thing, resp.Err)
	}
}

// eventually polls cond for every device in ids until all hold, failing
// with the first device that does not.
func eventually(t *testing.T, srv *brokertest.Server, what string, ids []string, cond func(doc) bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	pending := append([]string(nil), ids...)
	for {
		rest := pending[:0]
		for _, id := range pending {
			d, ok := getShadow(t, srv, id)
			if !ok || !cond(d) {
				rest = append(rest, id)
			}
		}
		pending = rest
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			d, _ := getShadow(t, srv, pending[0])
			t.Fatalf("%s: %d devices never got there; %s has desired=%v reported=%v", what, len(pending), pending[0], d.State.Desired, d.State.Reported)
		}
		<-tick.C
	}
}

// eventuallyEach is eventually with a condition that knows the device.
func eventuallyEach(t *testing.T, srv *brokertest.Server, what string, ids []string, cond func(string, doc) bool) {
	t.Helper()
	for _, id := range ids {
		eventually(t, srv, what+": "+id, []string{id}, func(d doc) bool { return cond(id, d) })
	}
}

func ids(f *sim.Fleet, idx ...int) []string {
	out := make([]string, 0, len(idx))
	for _, i := range idx {
		out = append(out, f.ID(i))
	}
	return out
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func startFleet(t *testing.T, cfg sim.Config) *sim.Fleet {
	t.Helper()
	f, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = f.Stop(ctx)
	})
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSeedFirmware runs 200 devices through the seed's loop: boot report,
// delta → act → report → convergence, old firmware ignoring a key it does
// not know, telemetry, /get after a reconnect, and an OTA rollout to a few
// devices where a fault injection fails the update on hardware rev D.
func TestSeedFirmware(t *testing.T) {
	srv := brokertest.Start(t)
	const n = 200
	telemetry := make(chan string, 4096)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(srv.MQTTURL()).SetClientID("telemetry-sub").SetOrderMatters(false))
	if tok := sub.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("things/+/telemetry", 0, func(_ paho.Client, m paho.Message) {
		var v map[string]any
		if json.Unmarshal(m.Payload(), &v) == nil && v["temp_c"] != nil {
			select {
			case telemetry <- m.Topic():
			default:
			}
		}
	}); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal("subscribe to telemetry failed")
	}

	fault, err := sim.ParseFault("fail-update:version=1.1,hardware_rev=D,rate=100%")
	if err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, sim.Config{
		Broker: srv.MQTTURL(), Devices: n, IDPattern: "dev-%04d",
		TelemetryInterval: 200 * time.Millisecond,
		Features:          map[string]string{"brightness": "1.1"},
		OTADuration:       100 * time.Millisecond, RebootDelay: 50 * time.Millisecond,
		Faults: []sim.Fault{fault},
	})
	everyone := ids(f, all(n)...)

	// Boot: every device reports its state and self-reported tags.
	eventually(t, srv, "boot report", everyone, func(d doc) bool {
		r := d.State.Reported
		return r["firmware_version"] == "1.0.0" && r["led_is_on"] == false && r["telemetry_interval_s"] != nil &&
			r["location"] != nil && r["hardware_rev"] != nil && r["reset_reason"] == "poweron"
	})

	// Telemetry arrives on things/{id}/telemetry.
	select {
	case topic := <-telemetry:
		if !strings.HasPrefix(topic, "things/dev-") {
			t.Fatalf("telemetry on %s", topic)
		}
	case <-time.After(wait):
		t.Fatal("no telemetry")
	}

	// The app asks every device for the LED on and a new telemetry interval,
	// plus brightness, which firmware 1.0.0 does not know.
	for _, id := range everyone {
		setDesired(t, srv, id, map[string]any{"led_is_on": true, "telemetry_interval_s": 30, "brightness": 80})
	}
	eventually(t, srv, "delta acted on and converged", everyone, func(d doc) bool {
		r, des := d.State.Reported, d.State.Desired
		_, ledPending := des["led_is_on"]
		_, intervalPending := des["telemetry_interval_s"]
		return r["led_is_on"] == true && r["telemetry_interval_s"] == 30.0 && !ledPending && !intervalPending &&
			des["brightness"] == 80.0 && d.State.Delta["brightness"] == 80.0 && r["brightness"] == nil
	})

	// A device that loses its connection asks for its shadow when it is
	// back (clean session: the delta published meanwhile is not queued).
	victim := f.ID(7)
	getsBefore := f.Stats().Gets
	cl, ok := srv.MQTT().Clients.Get(victim)
	if !ok {
		t.Fatalf("%s not connected", victim)
	}
	_ = srv.MQTT().DisconnectClient(cl, packets.ErrServerShuttingDown)
	setDesired(t, srv, victim, map[string]any{"led_is_on": false})
	eventually(t, srv, "delta fetched with /get after reconnect", []string{victim}, func(d doc) bool {
		_, pending := d.State.Desired["led_is_on"]
		return d.State.Reported["led_is_on"] == false && !pending
	})
	if f.Stats().Gets <= getsBefore {
		t.Errorf("no /get after the reconnect (gets %d → %d)", getsBefore, f.Stats().Gets)
	}

	// OTA to 1.1 on the first 20 devices: rev D fails (fault injection),
	// the others download, reboot, report 1.1 and then act on brightness.
	var ok11, failD []string
	var okIdx []int
	for i := range 20 {
		id := f.ID(i)
		setDesired(t, srv, id, map[string]any{"ota_url": "https://fw.example/1.1.bin", "target_version": "1.1"})
		if sim.HardwareRev(id) == "D" {
			failD = append(failD, id)
		} else {
			ok11 = append(ok11, id)
			okIdx = append(okIdx, i)
		}
	}
	if len(failD) == 0 || len(ok11) == 0 {
		t.Fatalf("want both rev D and other devices among the first 20 (D: %d)", len(failD))
	}
	eventually(t, srv, "OTA succeeded and converged", ok11, func(d doc) bool {
		r := d.State.Reported
		_, pending := d.State.Desired["target_version"]
		return r["firmware_version"] == "1.1" && r["ota_status"] == "succeeded" && r["reset_reason"] == "software" &&
			!pending && r["brightness"] == 80.0 && d.State.Desired["brightness"] == nil
	})
	eventually(t, srv, "OTA failed on rev D", failD, func(d doc) bool {
		r := d.State.Reported
		return r["firmware_version"] == "1.0.0" && r["ota_status"] == "failed" && d.State.Delta["target_version"] == "1.1"
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := f.WaitFirmware(ctx, "1.1", okIdx...); err != nil {
		t.Fatal(err)
	}
	st := f.Stats()
	if st.OTASucceeded != int64(len(ok11)) || st.OTAFailed != int64(len(failD)) || st.Connected != n {
		t.Errorf("stats %+v: want %d OTA ok, %d failed, %d connected", st, len(ok11), len(failD), n)
	}
	if st.Telemetry == 0 || st.Ignored == 0 {
		t.Errorf("stats %+v: want telemetry and ignored keys", st)
	}
}

// TestLowPower runs battery devices: they sleep, wake, fetch their shadow,
// act on the delta set while they slept, report and sleep again.
func TestLowPower(t *testing.T) {
	srv := brokertest.Start(t)
	const n = 50
	f := startFleet(t, sim.Config{
		Broker: srv.MQTTURL(), Devices: n, IDPattern: "lp-%03d",
		LowPower:          sim.LowPower{Period: 150 * time.Millisecond, Awake: 5 * time.Second},
		TelemetryInterval: time.Hour, PersistentSession: true,
	})
	everyone := ids(f, all(n)...)
	eventually(t, srv, "boot report at first wake", everyone, func(d doc) bool {
		return d.State.Reported["firmware_version"] == "1.0.0"
	})
	for _, id := range everyone {
		setDesired(t, srv, id, map[string]any{"led_is_on": true})
	}
	eventually(t, srv, "delta acted on at a later wake", everyone, func(d doc) bool {
		_, pending := d.State.Desired["led_is_on"]
		return d.State.Reported["led_is_on"] == true && !pending
	})
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for f.Stats().Wakes < 2*n {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want repeated wakes", f.Stats())
		}
		<-tick.C
	}
	if st := f.Stats(); st.Gets < int64(n) || st.Telemetry < int64(n) {
		t.Errorf("stats %+v: want a /get and a telemetry reading per wake", st)
	}
}

// TestRolloutFaults checks crash loops and devices that never return.
func TestRolloutFaults(t *testing.T) {
	srv := brokertest.Start(t)
	const n = 30
	crash, _ := sim.ParseFault("crash-loop:version=2.0,rate=0.5,delay=100ms")
	brick, _ := sim.ParseFault("never-return:version=2.0,rate=0.3")
	slow, err := sim.ParseFault("slow:rate=0.2,delay=50ms")
	if err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, sim.Config{
		Broker: srv.MQTTURL(), Devices: n, IDPattern: "rf-%03d", TelemetryInterval: -1,
		OTADuration: 40 * time.Millisecond, RebootDelay: 20 * time.Millisecond,
		Faults: []sim.Fault{brick, crash, slow},
	})
	everyone := ids(f, all(n)...)
	eventually(t, srv, "boot", everyone, func(d doc) bool { return d.State.Reported["firmware_version"] == "1.0.0" })
	for _, id := range everyone {
		setDesired(t, srv, id, map[string]any{"ota_url": "https://fw.example/2.0.bin", "target_version": "2.0"})
	}
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st := f.Stats()
		if st.Gone > 0 && st.Crashes >= 3 && st.OTASucceeded+st.Gone >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want gone devices, crashes, all updates finished", st)
		}
		<-tick.C
	}
	var crashed, silent int
	for _, id := range everyone {
		d, _ := getShadow(t, srv, id)
		switch {
		case d.State.Reported["reset_reason"] == "panic":
			crashed++
		case d.State.Reported["firmware_version"] == "1.0.0" && d.State.Reported["ota_progress"] == 100.0:
			silent++ // rebooted into 2.0 and never came back
		}
	}
	if crashed == 0 || silent == 0 {
		t.Errorf("crashed %d, silent %d: want both", crashed, silent)
	}
}

// apiGet GETs path from the server's admin API with key and decodes the
// JSON answer into out; it returns the status.
func apiGet(t *testing.T, srv *brokertest.Server, key, path string, out any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.HTTPURL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("GET %s: %s: %v", path, body, err)
		}
	}
	return resp.StatusCode
}

// TestRegistryAndSecrets registers devices with a real Umbra's admin API
// (auth on): the thing type is created when missing, every thing gets its
// ring and tags as attributes (so the README's canary query selects the
// canaries), a thing that already existed keeps what the operator set and
// gains the attributes it lacked, and the devices connect with per-thing
// secrets issued by the credentials API.
func TestRegistryAndSecrets(t *testing.T) {
	const adminKey = "test-admin-key"
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Auth = broker.AuthOptions{Enabled: true, APIKeys: []auth.APIKeyConfig{
			{Name: "admin", SHA256: auth.SHA256Hex(adminKey), Role: auth.RoleAdmin},
		}}
	})
	// An operator registered sec-000 by hand before, in ring "beta".
	if _, err := srv.Registry().CreateThing(context.Background(), registry.NewThing{
		Name: "sec-000", Attributes: map[string]string{"deployment_ring": "beta"},
	}); err != nil {
		t.Fatal(err)
	}

	const n = 4 // bcrypt per secret and per login: slow under -race
	secrets := sim.NewSecrets()
	reg := &sim.HTTPRegistry{BaseURL: srv.HTTPURL(), APIKey: adminKey}
	cfg := sim.Config{
		Broker: srv.MQTTURL(), Devices: n, IDPattern: "sec-%03d", TelemetryInterval: -1,
		Tags:        map[string]string{"site": "lab"},
		Registrar:   reg,
		Credentials: sim.Recording(&sim.APICredentials{BaseURL: srv.HTTPURL(), APIKey: adminKey}, secrets),
	}
	f := startFleet(t, cfg)
	everyone := ids(f, all(n)...)
	eventually(t, srv, "authenticated boot report", everyone, func(d doc) bool {
		return d.State.Reported["firmware_version"] == "1.0.0"
	})
	if st := f.Stats(); st.Registered != n || st.SetupErrors != 0 {
		t.Errorf("stats %+v: want %d registered, no setup errors", st, n)
	}
	var tt struct {
		Name string `json:"thingTypeName"`
	}
	if code := apiGet(t, srv, adminKey, "/api/thing-types/esp32", &tt); code != 200 || tt.Name != "esp32" {
		t.Errorf("thing type esp32: HTTP %d %+v", code, tt)
	}
	for i, name := range everyone {
		var th struct {
			Type       string            `json:"thingTypeName"`
			Attributes map[string]string `json:"attributes"`
		}
		if code := apiGet(t, srv, adminKey, "/api/things/"+name, &th); code != 200 {
			t.Errorf("%s: HTTP %d", name, code)
			continue
		}
		wantRing := sim.Ring(name)
		if i == 0 {
			wantRing = "beta" // set by the operator: kept
		}
		if th.Attributes["deployment_ring"] != wantRing || th.Attributes["hardware_rev"] != sim.HardwareRev(name) ||
			th.Attributes["location"] == "" || th.Attributes["customer_id"] == "" || th.Attributes["site"] != "lab" {
			t.Errorf("%s registered as %+v", name, th)
		}
		if i > 0 && th.Type != "esp32" {
			t.Errorf("%s: thing type %q, want esp32", name, th.Type)
		}
	}
	// The fleet query language sees the rings.
	var res struct {
		Things []string `json:"things"`
		Total  int      `json:"total"`
	}
	if code := apiGet(t, srv, adminKey, "/api/search?query=attributes.site:lab", &res); code != 200 || len(res.Things) != n {
		t.Errorf("search attributes.site:lab: HTTP %d %+v", code, res)
	}
	if secrets.Len() != n {
		t.Errorf("recorded %d secrets, want %d", secrets.Len(), n)
	}
	// Registering again (a re-run) is fine.
	if err := reg.Register(context.Background(), sim.Thing{Name: f.ID(1), Type: "esp32", Attributes: sim.Attributes(f.ID(1), nil)}); err != nil {
		t.Errorf("re-register: %v", err)
	}
	// A bad admin key is a precise error, not a silent success.
	bad := &sim.HTTPRegistry{BaseURL: srv.HTTPURL(), APIKey: "wrong"}
	if err := bad.Register(context.Background(), sim.Thing{Name: "sec-999", Type: "esp32"}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("register with a wrong key: %v, want HTTP 401", err)
	}
	// A second fleet reuses the saved secrets (no new credentials issued).
	var buf strings.Builder
	if _, err := secrets.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	again, err := sim.ReadSecrets(strings.NewReader(buf.String()))
	if err != nil || again.Len() != n {
		t.Fatalf("secrets file round trip: %v (%d)", err, again.Len())
	}
}

func TestRings(t *testing.T) {
	counts := map[string]int{}
	for i := range 100000 {
		counts[sim.Ring(fmt.Sprintf("esp32-%05d", i))]++
	}
	if c := counts[sim.RingCanary]; c < 800 || c > 1200 {
		t.Errorf("canary %d of 100000, want ~1%%", c)
	}
	if c := counts[sim.RingEarlyAdopters]; c < 9500 || c > 10500 {
		t.Errorf("early adopters %d of 100000, want ~10%%", c)
	}
	// The same name always falls in the same ring (a name built anew each
	// time, so nothing can be cached by identity).
	want := sim.Ring("esp32-00042")
	for range 5 {
		if got := sim.Ring(fmt.Sprintf("esp32-%05d", 42)); got != want {
			t.Errorf("ring of esp32-00042 is %q, then %q: not deterministic", want, got)
		}
	}
}

func TestParseFault(t *testing.T) {
	f, err := sim.ParseFault("fail-update:version=1.1,hardware_rev=D,rate=30%")
	if err != nil || f.Kind != sim.FailUpdate || f.Version != "1.1" || f.Tags["hardware_rev"] != "D" || f.Rate != 0.3 {
		t.Errorf("got %+v, %v", f, err)
	}
	for _, bad := range []string{"explode", "slow:rate=2", "slow:delay=x", "fail-update:version"} {
		if _, err := sim.ParseFault(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	rings, err := sim.ParseRings("canary=10%, early_adopters=0.2")
	if err != nil || len(rings) != 2 || rings[0] != (sim.RingShare{Name: "canary", Share: 0.1}) || rings[1].Share != 0.2 {
		t.Errorf("rings %+v, %v", rings, err)
	}
	counts := map[string]int{}
	for i := range 10000 {
		counts[sim.RingOf(fmt.Sprintf("esp32-%05d", i), rings)]++
	}
	if c := counts["canary"]; c < 900 || c > 1100 {
		t.Errorf("canary %d of 10000 with 10%%", c)
	}
	for _, bad := range []string{"", "canary", "canary=x", "canary=60%,early=50%", "general=5%", "a=1%,a=2%"} {
		if _, err := sim.ParseRings(bad); err == nil {
			t.Errorf("rings %q: no error", bad)
		}
	}
	addrs, err := sim.ParseSourceAddrs("127.0.0.2-127.0.0.4,127.0.1.1")
	if err != nil || len(addrs) != 4 || addrs[2].String() != "127.0.0.4" {
		t.Errorf("source addrs %v, %v", addrs, err)
	}
}

// TestStateSurvivesRestart stops a fleet after an OTA rollout and starts
// it again on the same state file: devices keep their firmware, count
// their boots and crashes on, remember settings they acted on and a failed
// update (not retried), and a crash-looping firmware still crashes.
func TestStateSurvivesRestart(t *testing.T) {
	srv := brokertest.Start(t)
	const n = 12
	stateFile := filepath.Join(t.TempDir(), "sim-state.json")
	crash, _ := sim.ParseFault("crash-loop:version=2.0,deployment_ring=general,rate=1,delay=150ms")
	failD, _ := sim.ParseFault("fail-update:version=2.0,hardware_rev=D")
	cfg := sim.Config{
		Broker: srv.MQTTURL(), Devices: n, IDPattern: "st-%03d", TelemetryInterval: -1,
		Rings:       []sim.RingShare{{Name: sim.RingCanary, Share: 0.5}},
		OTADuration: 40 * time.Millisecond, RebootDelay: 20 * time.Millisecond,
		Features: map[string]string{"brightness": "1.0"},
		Faults:   []sim.Fault{failD, crash}, StateFile: stateFile,
	}
	f1, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := f1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	everyone := ids(f1, all(n)...)
	eventually(t, srv, "first boot", everyone, func(d doc) bool { return d.State.Reported["boot_count"] == 1.0 })
	var updated, failed, crashing []string
	for _, id := range everyone {
		setDesired(t, srv, id, map[string]any{"ota_url": "https://fw.example/2.0.bin", "target_version": "2.0", "brightness": 40})
		switch {
		case sim.HardwareRev(id) == "D":
			failed = append(failed, id)
		case sim.RingOf(id, cfg.Rings) == sim.RingGeneral:
			crashing = append(crashing, id)
		default:
			updated = append(updated, id)
		}
	}
	if len(updated) == 0 || len(failed) == 0 || len(crashing) == 0 {
		t.Fatalf("want devices of each kind: updated %v, failed %v, crashing %v", updated, failed, crashing)
	}
	eventually(t, srv, "updated", updated, func(d doc) bool {
		return d.State.Reported["firmware_version"] == "2.0" && d.State.Reported["brightness"] == 40.0
	})
	eventually(t, srv, "failed", failed, func(d doc) bool { return d.State.Reported["ota_status"] == "failed" })
	eventually(t, srv, "crashing", crashing, func(d doc) bool {
		c, _ := d.State.Reported["crash_count"].(float64)
		return d.State.Reported["firmware_version"] == "2.0" && c >= 2
	})
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	if err := f1.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	kept, err := sim.ReadState(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]sim.DeviceState{}
	for _, id := range everyone {
		st, ok := kept[id]
		if !ok {
			t.Fatalf("%s not in the state file", id)
		}
		before[id] = st
	}
	for _, id := range updated {
		if st := before[id]; st.Firmware != "2.0" || st.BootCount != 2 || !st.OTAInstalled || string(st.Settings["brightness"]) != "40" {
			t.Errorf("%s kept %+v", id, st)
		}
	}
	for _, id := range failed {
		if st := before[id]; st.Firmware != "1.0.0" || st.OTAFailed != "2.0" {
			t.Errorf("%s kept %+v", id, st)
		}
	}

	// Power the fleet on again: every device boots with what it kept. The
	// boot report of the new run is the one with reset_reason poweron and
	// a boot_count beyond the kept one.
	f2 := startFleet(t, cfg)
	if f2.Restored() != n {
		t.Errorf("restored %d devices, want %d", f2.Restored(), n)
	}
	eventuallyEach(t, srv, "updated devices boot on 2.0, counting on", updated, func(id string, d doc) bool {
		r := d.State.Reported
		return r["firmware_version"] == "2.0" && r["reset_reason"] == "poweron" &&
			r["boot_count"] == float64(before[id].BootCount+1) && r["brightness"] == 40.0
	})
	eventuallyEach(t, srv, "failed devices stay on 1.0.0", failed, func(id string, d doc) bool {
		r := d.State.Reported
		return r["firmware_version"] == "1.0.0" && r["reset_reason"] == "poweron" && r["boot_count"] == float64(before[id].BootCount+1)
	})
	eventuallyEach(t, srv, "crash-looping firmware still crashes", crashing, func(id string, d doc) bool {
		c, _ := d.State.Reported["crash_count"].(float64)
		return d.State.Reported["firmware_version"] == "2.0" && c > float64(before[id].CrashCount)
	})
	if st := f2.Stats(); st.OTAStarted != 0 {
		t.Errorf("stats %+v: no device should download again", st)
	}
}

// TestOTAProgressKeys follows one update through the seed's reported keys
// (ota_status downloading → installing → rebooting → succeeded, with
// ota_progress), and shows that a crash during a download aborts it: a
// crash-looping device asked for a download longer than its uptime never
// installs it and starts again after every boot.
func TestOTAProgressKeys(t *testing.T) {
	srv := brokertest.Start(t)
	statuses := make(chan string, 256)
	obs := paho.NewClient(paho.NewClientOptions().AddBroker(srv.MQTTURL()).SetClientID("ota-observer"))
	if tok := obs.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("observer: %v", tok.Error())
	}
	defer obs.Disconnect(0)
	if tok := obs.Subscribe("$aws/things/ota-000/shadow/update/accepted", 1, func(_ paho.Client, m paho.Message) {
		var v struct {
			State struct {
				Reported struct {
					Status   string   `json:"ota_status"`
					Progress *float64 `json:"ota_progress"`
				} `json:"reported"`
			} `json:"state"`
		}
		if json.Unmarshal(m.Payload(), &v) == nil && v.State.Reported.Status != "" {
			s := v.State.Reported.Status
			if p := v.State.Reported.Progress; p != nil {
				s += fmt.Sprintf(" %g", *p)
			}
			statuses <- s
		}
	}); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal("subscribe failed")
	}
	crash, _ := sim.ParseFault("crash-loop:version=1.5,delay=100ms")
	f := startFleet(t, sim.Config{
		Broker: srv.MQTTURL(), Devices: 2, IDPattern: "ota-%03d", TelemetryInterval: -1,
		OTADuration: 200 * time.Millisecond, RebootDelay: 20 * time.Millisecond, Faults: []sim.Fault{crash},
	})
	eventually(t, srv, "boot", ids(f, 0, 1), func(d doc) bool { return d.State.Reported["boot_count"] == 1.0 })
	setDesired(t, srv, "ota-000", map[string]any{"ota_url": "https://fw.example/1.1.bin", "target_version": "1.1"})
	want := []string{"downloading 0", "downloading 25", "downloading 50", "downloading 75", "installing 100", "rebooting 100", "succeeded 100"}
	for i, w := range want {
		select {
		case got := <-statuses:
			if got != w {
				t.Fatalf("report %d: ota_status %q, want %q (sequence %v)", i, got, w, want)
			}
		case <-time.After(wait):
			t.Fatalf("no report %d (%q)", i, w)
		}
	}

	// ota-001 installs 1.5, which crashes 100 ms after every boot; a
	// download of 2.0 takes 200 ms, so it never finishes and never installs.
	setDesired(t, srv, "ota-001", map[string]any{"ota_url": "https://fw.example/1.5.bin", "target_version": "1.5"})
	eventually(t, srv, "crash loop on 1.5", []string{"ota-001"}, func(d doc) bool {
		c, _ := d.State.Reported["crash_count"].(float64)
		return d.State.Reported["firmware_version"] == "1.5" && c >= 1
	})
	started := f.Stats().OTAStarted
	setDesired(t, srv, "ota-001", map[string]any{"ota_url": "https://fw.example/2.0.bin", "target_version": "2.0"})
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for f.Stats().OTAStarted < started+3 { // the download starts again after each crash
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want the download to restart after each crash", f.Stats())
		}
		<-tick.C
	}
	if fw := f.Firmware(1); fw != "1.5" {
		t.Errorf("ota-001 runs %s; an aborted download must not install", fw)
	}
}
