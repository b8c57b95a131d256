package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/sim"
	"github.com/umbra-iot/umbra/internal/testlog"
	"github.com/umbra-iot/umbra/internal/testpki"
	"github.com/umbra-iot/umbra/registry/query"
	"github.com/umbra-iot/umbra/shadow"
)

// simWait bounds every wait on a simulated fleet (generous under -race).
const simWait = 60 * time.Second

// syncBuffer is a bytes.Buffer safe for concurrent writers and the test.
type syncBuffer = testlog.Buffer

// simRun is `umbra sim ARGS` running through run(), the command's real
// code path, until stop is called.
type simRun struct {
	out, errb syncBuffer
	cancel    context.CancelFunc
	done      chan int
}

func startSim(t *testing.T, env []string, args ...string) *simRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &simRun{cancel: cancel, done: make(chan int, 1)}
	go func() { r.done <- run(ctx, append([]string{"sim"}, args...), &r.out, &r.errb, env) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop interrupts the command (as Ctrl-C does) and returns its exit code.
func (r *simRun) stop(t *testing.T) int {
	t.Helper()
	r.cancel()
	select {
	case code, ok := <-r.done:
		if ok {
			close(r.done)
			return code
		}
		return 0 // stopped before
	case <-time.After(simWait):
		t.Fatalf("umbra sim did not stop\nstdout: %s\nstderr: %s", r.out.String(), r.errb.String())
		return -1
	}
}

// shadowOf reads a thing's classic shadow from the server.
func shadowOf(t *testing.T, srv *brokertest.Server, thing string) (desired, reported map[string]any) {
	t.Helper()
	resp := srv.Shadows().Handle(context.Background(), shadow.Request{
		Ref: shadow.Ref{Thing: thing}, Op: shadow.OpGet, Payload: []byte("{}"), Origin: shadow.OriginInternal,
	})
	if resp.Err != nil {
		return nil, nil
	}
	var d struct {
		State struct {
			Desired  map[string]any `json:"desired"`
			Reported map[string]any `json:"reported"`
		} `json:"state"`
	}
	if err := json.Unmarshal(resp.Payload, &d); err != nil {
		t.Fatalf("%s: %s: %v", thing, resp.Payload, err)
	}
	return d.State.Desired, d.State.Reported
}

// waitReported polls until every thing's reported state satisfies cond.
func waitReported(t *testing.T, srv *brokertest.Server, what string, things []string, cond func(thing string, reported map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(simWait)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for _, th := range things {
		for {
			_, rep := shadowOf(t, srv, th)
			if rep != nil && cond(th, rep) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s never got there; reported %v", what, th, rep)
			}
			<-tick.C
		}
	}
}

func search(t *testing.T, srv *brokertest.Server, q string) []string {
	t.Helper()
	parsed, err := query.Parse(q)
	if err != nil {
		t.Fatal(err)
	}
	return srv.Registry().Search(parsed, "", 1000).Things
}

// Done-when (f): `umbra sim --register` creates the thing type and the
// things with their ring attributes (the canary query selects exactly the
// canaries), and a restart of the sim keeps the firmware the devices
// installed, their boot counts and a failed update.
func TestSimRegisterAndRestartKeepsFirmware(t *testing.T) {
	srv := brokertest.Start(t)
	state := filepath.Join(t.TempDir(), "fleet.json")
	const n = 30
	args := []string{
		"--broker", srv.MQTTURL(), "--register", "--devices", "30", "--id-pattern", "rr-%03d",
		"--rings", "canary=10%,early_adopters=20%", "--state", state,
		"--telemetry", "-1", "--ota-duration", "0.05", "--reboot-delay", "20ms", "--progress", "0",
		"--fault", "fail-update:version=2.0.0,deployment_ring=canary,hardware_rev=D",
	}
	env := []string{"UMBRA_SERVER=" + srv.HTTPURL(), "HOME=" + t.TempDir()}
	rings := []sim.RingShare{{Name: "canary", Share: 0.1}, {Name: "early_adopters", Share: 0.2}}
	var all, canary []string
	for i := range n {
		id := fmt.Sprintf("rr-%03d", i)
		all = append(all, id)
		if sim.RingOf(id, rings) == "canary" {
			canary = append(canary, id)
		}
	}
	if len(canary) < 2 {
		t.Fatalf("want at least two canaries among %d devices, got %v", n, canary)
	}

	first := startSim(t, env, args...)
	waitReported(t, srv, "first boot", all, func(_ string, r map[string]any) bool {
		return r["firmware_version"] == "1.0.0" && r["boot_count"] == 1.0
	})
	if tt, err := srv.Registry().Type("esp32"); err != nil || tt.Name != "esp32" {
		t.Fatalf("thing type esp32: %+v, %v", tt, err)
	}
	got := search(t, srv, "attributes.deployment_ring:canary")
	if strings.Join(got, ",") != strings.Join(canary, ",") {
		t.Errorf("attributes.deployment_ring:canary selects %v, want %v", got, canary)
	}
	if ea := search(t, srv, "attributes.deployment_ring:early_adopters"); len(ea) == 0 {
		t.Error("no early adopters registered")
	}
	th, err := srv.Registry().Thing(all[0])
	if err != nil || th.Type != "esp32" || th.Attributes["hardware_rev"] == "" || th.Attributes["location"] == "" {
		t.Errorf("%s registered as %+v (%v)", all[0], th, err)
	}

	// Update the canaries to 2.0.0; rev D canaries fail (fault rule).
	var okCanary, failCanary []string
	for _, id := range canary {
		p := []byte(`{"state":{"desired":{"ota_url":"https://fw.example/2.0.0.bin","target_version":"2.0.0"}}}`)
		if resp := srv.Shadows().Handle(context.Background(), shadow.Request{Ref: shadow.Ref{Thing: id}, Op: shadow.OpUpdate,
			Payload: p, Origin: shadow.OriginInternal, Principal: "test"}); resp.Err != nil {
			t.Fatal(resp.Err)
		}
		if sim.HardwareRev(id) == "D" {
			failCanary = append(failCanary, id)
		} else {
			okCanary = append(okCanary, id)
		}
	}
	waitReported(t, srv, "canaries updated", okCanary, func(_ string, r map[string]any) bool {
		return r["firmware_version"] == "2.0.0" && r["boot_count"] == 2.0
	})
	waitReported(t, srv, "rev D canaries failed", failCanary, func(_ string, r map[string]any) bool {
		return r["ota_status"] == "failed"
	})
	if code := first.stop(t); code != 0 {
		t.Fatalf("umbra sim exit %d\nstdout: %s\nstderr: %s", code, first.out.String(), first.errb.String())
	}
	if out := first.out.String(); !strings.Contains(out, "device state saved to "+state) {
		t.Errorf("first run does not say where it saved the state:\n%s", out)
	}

	// Restart: the canaries boot on 2.0.0 (boot 3), the others on 1.0.0
	// (boot 2); the failed ones do not download again.
	second := startSim(t, env, args...)
	isCanary := map[string]bool{}
	for _, id := range okCanary {
		isCanary[id] = true
	}
	waitReported(t, srv, "restart", all, func(id string, r map[string]any) bool {
		if isCanary[id] {
			return r["firmware_version"] == "2.0.0" && r["boot_count"] == 3.0 && r["reset_reason"] == "poweron"
		}
		return r["firmware_version"] == "1.0.0" && r["boot_count"] == 2.0 && r["reset_reason"] == "poweron"
	})
	if out := second.out.String(); !strings.Contains(out, "30 devices restored") || !strings.Contains(out, "2.0.0 "+strconv.Itoa(len(okCanary))) {
		t.Errorf("second run's banner:\n%s", out)
	}
	if code := second.stop(t); code != 0 {
		t.Fatalf("second umbra sim exit %d\nstderr: %s", code, second.errb.String())
	}
	if out := second.out.String(); !strings.Contains(out, "OTA 0 started") {
		t.Errorf("the restarted fleet downloaded again:\n%s", out)
	}

	// --reset-state boots everyone fresh.
	third := startSim(t, env, append(args, "--reset-state")...)
	waitReported(t, srv, "reset", okCanary, func(_ string, r map[string]any) bool {
		return r["firmware_version"] == "1.0.0" && r["boot_count"] == 1.0
	})
	third.stop(t)
}

// --register-only provisions the fleet and exits; no device connects.
func TestSimRegisterOnly(t *testing.T) {
	srv := brokertest.Start(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"sim", "--register-only", "--devices", "12", "--id-pattern", "ro-%02d",
		"--rings", "canary=25%", "--tag", "site=lab", "--state", "none"}, &out, &errb, []string{"UMBRA_SERVER=" + srv.HTTPURL()})
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "registered 12 devices (thing type esp32)") {
		t.Errorf("output:\n%s", out.String())
	}
	if got := search(t, srv, "attributes.site:lab"); len(got) != 12 {
		t.Errorf("site:lab selects %d things, want 12", len(got))
	}
	if c, ok := srv.Registry().Connectivity("ro-00"); ok && c.Connected {
		t.Error("a device connected with --register-only")
	}
	// The API's answer to a bad key is the command's error.
	out.Reset()
	errb.Reset()
	code = run(context.Background(), []string{"sim", "--register-only", "--devices", "1", "--api", "http://" + srv.HTTPAddr(),
		"--id-pattern", "bad name %d", "--state", "none"}, &out, &errb, nil)
	if code != 2 || !strings.Contains(errb.String(), "not a valid thing name") {
		t.Errorf("bad id pattern: exit %d, stderr %q", code, errb.String())
	}
}

// Every documented form of umbra sim's flags parses to what it says.
func TestSimFlags(t *testing.T) {
	env := []string{"HOME=/home/u", "UMBRA_SERVER=http://10.0.0.1:8080"}
	parse := func(args ...string) (*simOptions, error) {
		return parseSim(args, io.Discard, env)
	}
	must := func(args ...string) *simOptions {
		t.Helper()
		o, err := parse(args...)
		if err != nil {
			t.Fatalf("umbra sim %s: %v", strings.Join(args, " "), err)
		}
		return o
	}
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"--telemetry", "-1"}, -1},
		{[]string{"--telemetry=-1"}, -1},
		{[]string{"--telemetry", "-1s"}, -1},
		{[]string{"--telemetry", "0"}, -1},
		{[]string{"--telemetry", "30"}, 30 * time.Second},
		{[]string{"--telemetry", "30s"}, 30 * time.Second},
		{[]string{"--telemetry", "0.5"}, 500 * time.Millisecond},
		{[]string{"-telemetry", "2m"}, 2 * time.Minute},
		{nil, sim.DefaultTelemetryInterval},
	} {
		if got := must(tc.args...).cfg.TelemetryInterval; got != tc.want {
			t.Errorf("%v: telemetry %v, want %v", tc.args, got, tc.want)
		}
	}
	o := must("--ota-duration", "2", "--reboot-delay", "500ms", "--duration", "1m", "--progress", "0", "--low-power", "30", "--awake", "5s", "--keepalive", "60")
	if c := o.cfg; c.OTADuration != 2*time.Second || c.RebootDelay != 500*time.Millisecond || o.duration != time.Minute || o.every != 0 ||
		c.LowPower.Period != 30*time.Second || c.LowPower.Awake != 5*time.Second || c.KeepAlive != time.Minute {
		t.Errorf("durations: %+v", o)
	}
	for _, b := range []string{"tcp://h:1883", "mqtt://h:1883", "tls://h:8883", "ssl://h:8883", "mqtts://h:8883", "ws://h:8083/mqtt", "wss://h:8084/mqtt"} {
		if o := must("--broker", b); o.cfg.Broker != b {
			t.Errorf("--broker %s: %s", b, o.cfg.Broker)
		}
		if o := must("--target", b); o.cfg.Broker != b {
			t.Errorf("--target %s: %s", b, o.cfg.Broker)
		}
	}
	if o := must("--server", "http://x:1"); o.api != "http://x:1" {
		t.Errorf("--server: api %s", o.api)
	}
	if o := must(); o.api != "http://10.0.0.1:8080" {
		t.Errorf("api default from UMBRA_SERVER: %s", o.api)
	}
	o = must("--fault", "crash-loop:version=2.0.0,delay=5s", "--fault", "slow:rate=10%", "--tag", "site=lab", "--feature", "brightness=1.1",
		"--rings", "canary=5%,early_adopters=20%", "--register")
	if c := o.cfg; len(c.Faults) != 2 || c.Faults[0].Delay != 5*time.Second || c.Tags["site"] != "lab" || c.Features["brightness"] != "1.1" ||
		len(c.Rings) != 2 || c.Rings[0].Share != 0.05 || c.Registrar == nil {
		t.Errorf("rules: %+v", c)
	}
	// State file: default per broker address under ~/.local/state or
	// $XDG_STATE_HOME, a path, or none.
	if o := must("--broker", "tcp://127.0.0.1:1883"); o.cfg.StateFile != "/home/u/.local/state/umbra/sim-127.0.0.1_1883.json" {
		t.Errorf("default state file %q", o.cfg.StateFile)
	}
	if o, _ := parseSim([]string{"--broker", "ssl://broker.example:8883"}, io.Discard, []string{"XDG_STATE_HOME=/s"}); o.cfg.StateFile != "/s/umbra/sim-broker.example_8883.json" {
		t.Errorf("XDG state file %q", o.cfg.StateFile)
	}
	if o := must("--state", "none"); o.cfg.StateFile != "" {
		t.Errorf("--state none: %q", o.cfg.StateFile)
	}
	if o := must("--state", "/tmp/x.json", "--reset-state"); o.cfg.StateFile != "/tmp/x.json" || !o.cfg.ResetState {
		t.Errorf("--state path: %+v", o.cfg)
	}
	// Mistakes are usage errors that name the problem.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--telemetry", "soon"}, "number of seconds"},
		{[]string{"--fault", "explode"}, "unknown kind"},
		{[]string{"--rings", "canary=150%"}, "canary"},
		{[]string{"--tag", "nokey"}, "key=value"},
		{[]string{"--ca", "ca.pem"}, "TLS broker"},
		{[]string{"--state", "none", "--reset-state"}, "needs a state file"},
		{[]string{"extra"}, "takes no arguments"},
	} {
		_, err := parse(tc.args...)
		var ue usageError
		if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
	// An unknown scheme is refused before connecting (exit 2).
	var errb bytes.Buffer
	if code := run(context.Background(), []string{"sim", "--broker", "http://127.0.0.1:1", "--state", "none"}, io.Discard, &errb, nil); code != 2 || !strings.Contains(errb.String(), "unknown scheme") {
		t.Errorf("http:// broker: exit %d, %q", code, errb.String())
	}
}

// The sim reaches a TLS broker with each TLS scheme and either CA flag.
func TestSimTLSSchemes(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, dir, "sim-ca")
	pair := ca.Server(t, dir)
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.TLS = broker.TLSOptions{CertFile: pair.CertFile, KeyFile: pair.KeyFile}
	})
	for i, tc := range []struct{ scheme, caFlag string }{{"tls", "--ca-file"}, {"ssl", "--ca"}, {"mqtts", "--ca-file"}} {
		pattern := tc.scheme + "-%02d"
		r := startSim(t, nil, "--broker", tc.scheme+"://"+srv.MQTTAddr(), tc.caFlag, ca.File, "--devices", "2",
			"--id-pattern", pattern, "--telemetry", "-1", "--state", "none", "--progress", "0")
		waitReported(t, srv, tc.scheme+"://", []string{tc.scheme + "-00", tc.scheme + "-01"}, func(_ string, r map[string]any) bool {
			return r["firmware_version"] == "1.0.0"
		})
		if code := r.stop(t); code != 0 {
			t.Errorf("%d %s: exit %d: %s", i, tc.scheme, code, r.errb.String())
		}
	}
}

// umbra bench takes umbra sim's flag names too (--broker, --ca).
func TestBenchTakesSimFlagNames(t *testing.T) {
	var errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "--quiet", "--broker", "tcp://127.0.0.1:1", "--ca", "ca.pem", "raw"}, io.Discard, &errb, nil)
	if code == 0 || !strings.Contains(errb.String(), "--ca-file is for a tls:// target, not tcp://") {
		t.Errorf("bench --broker tcp:// --ca: exit %d, %q", code, errb.String())
	}
}
