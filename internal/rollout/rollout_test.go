package rollout_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/internal/rollout"
)

func f64(v float64) *float64 { return &v }

func sizes(v rollout.View) string {
	var s []string
	for _, w := range v.Waves {
		s = append(s, fmt.Sprint(w.Size))
	}
	return strings.Join(s, "/")
}

func TestWavePlanIsDeterministicAndMatchesPreview(t *testing.T) {
	w := newWorld(t)
	w.fleet(100, rings)
	v, err := w.eng.Create(ctx, otaSpec())
	if err != nil {
		t.Fatal(err)
	}
	preview, err := w.eng.PreviewID(v.ID)
	if err != nil {
		t.Fatal(err)
	}
	// 4 canaries; 10% of 96 → 10; 50% of 86 → 43; the remaining 43.
	var counts []int
	for _, p := range preview {
		counts = append(counts, p.Count)
	}
	if fmt.Sprint(counts) != "[4 10 43 43]" {
		t.Fatalf("preview counts %v", counts)
	}
	if slices.ContainsFunc(preview[0].Things, func(s string) bool { return s != "esp-000" && s != "esp-025" && s != "esp-050" && s != "esp-075" }) {
		t.Fatalf("canary wave %v", preview[0].Things)
	}
	again, _ := w.eng.PreviewID(v.ID)
	if fmt.Sprint(again) != fmt.Sprint(preview) {
		t.Fatal("preview not deterministic")
	}
	v, err = w.eng.Start(ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	started, _ := w.eng.PreviewID(v.ID)
	if fmt.Sprint(started) != fmt.Sprint(preview) || sizes(v) != "4/10/43/43" {
		t.Fatalf("started plan differs from preview: %v", started)
	}
	// Percent waves are a sample, not the alphabetically first devices.
	if slices.Equal(preview[1].Things, []string{"esp-001", "esp-002", "esp-003", "esp-004", "esp-005", "esp-006", "esp-007", "esp-008", "esp-009", "esp-010"}) {
		t.Fatal("percent wave took the first names")
	}
}

// The seed's happy path: four waves complete, every device updated, and no
// device outside the current wave ever gets the OTA desired state early.
func TestFourWaveRolloutCompletes(t *testing.T) {
	w := newWorld(t)
	names := w.fleet(100, rings)
	v, _ := w.eng.Create(ctx, otaSpec())
	v, _ = w.eng.Start(ctx, v.ID)
	plan, _ := w.eng.PreviewID(v.ID)
	for wave := range 4 {
		w.step() // notify the wave
		notYet := map[string]bool{}
		for _, p := range plan[wave+1:] {
			for _, th := range p.Things {
				notYet[th] = true
			}
		}
		for _, th := range names {
			if notYet[th] && gjson.GetBytes(w.doc(th), "state.desired.target_version").Exists() {
				t.Fatalf("wave %d: %s of a later wave already has the OTA desired state", wave, th)
			}
		}
		if n := w.devices(nil); n != plan[wave].Count {
			t.Fatalf("wave %d: %d devices updated, want %d", wave, n, plan[wave].Count)
		}
		w.step() // judge
	}
	v = w.view(v.ID)
	if v.State != rollout.StateCompleted {
		t.Fatalf("state %s (%s), want completed; waves %+v", v.State, v.Reason, v.Waves)
	}
	for _, wp := range v.Waves {
		if wp.Succeeded != wp.Size {
			t.Fatalf("wave %+v", wp)
		}
	}
	q := mustQuery(t, "shadow.reported.firmware_version:1.1")
	if n := w.reg.Count(q); n != 100 {
		t.Fatalf("%d devices on 1.1", n)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !slices.Contains(w.topics, "$umbra/rollouts/"+v.ID+"/events") {
		t.Fatal("no events published on $umbra/rollouts/{id}/events")
	}
}

// Faulty canaries halt the rollout and roll it back; no device outside
// the canary wave ever receives the OTA desired state.
func TestFaultyCanariesHaltAndRollBack(t *testing.T) {
	w := newWorld(t)
	names := w.fleet(100, rings)
	spec := otaSpec()
	spec.OnFailure = "rollback"
	v, _ := w.eng.Create(ctx, spec)
	v, _ = w.eng.Start(ctx, v.ID)
	w.step()
	w.devices(func(th string) bool { return th == "esp-025" }) // one canary fails
	w.step()
	v = w.view(v.ID)
	if v.State != rollout.StateRolledBack || !strings.Contains(v.Reason, "canary") {
		t.Fatalf("state %s reason %q", v.State, v.Reason)
	}
	for _, th := range names {
		doc := w.doc(th)
		canary := th == "esp-000" || th == "esp-025" || th == "esp-050" || th == "esp-075"
		if !canary && gjson.GetBytes(doc, "state.desired.target_version").Exists() {
			t.Fatalf("%s outside the canary wave got desired %s", th, gjson.GetBytes(doc, "state.desired"))
		}
		// Rolled back exactly: desired had neither key before the
		// rollout, so neither is left (never a reported value put back).
		if canary && (gjson.GetBytes(doc, "state.desired.target_version").Exists() || gjson.GetBytes(doc, "state.desired.ota_url").Exists()) {
			t.Fatalf("canary %s not rolled back exactly: %s", th, gjson.GetBytes(doc, "state"))
		}
	}
	if v.Waves[0].Failed != 1 || v.Waves[0].RolledBack != 4 || v.Waves[0].Installed != 3 || v.Waves[1].Skipped != 10 ||
		v.Waves[0].State != "failed" || v.Waves[1].State != "not_reached" {
		t.Fatalf("waves %+v", v.Waves)
	}
	if !strings.Contains(v.Notice, "does not downgrade") || !strings.Contains(v.Notice, "3 devices run the new version") {
		t.Fatalf("notice %q", v.Notice)
	}
}

func TestThresholdsMinimumSampleAndTimeouts(t *testing.T) {
	w := newWorld(t)
	w.fleet(40, nil)
	spec := otaSpec()
	spec.Waves = []rollout.WaveSpec{{Name: "half", Percent: 50, MinFinished: 10, FailureThreshold: 20, SuccessThreshold: f64(75), DeviceTimeout: rollout.Duration(10 * time.Minute)},
		{Name: "rest", Percent: 100, DeviceTimeout: rollout.Duration(10 * time.Minute)}}
	v, _ := w.eng.Create(ctx, spec)
	v, _ = w.eng.Start(ctx, v.ID)
	w.step()
	plan, _ := w.eng.PreviewID(v.ID)
	fails := map[string]bool{plan[0].Things[0]: true, plan[0].Things[1]: true}
	w.devices(func(th string) bool { return fails[th] })
	w.step()
	// 2 of 20 failed = 10% <= 20%: not halted; 18 of 20 = 90% >= 75%: passes.
	if v = w.view(v.ID); v.State != rollout.StateRunning || v.CurrentWave != 1 {
		t.Fatalf("after wave 1: %s wave %d (%s)", v.State, v.CurrentWave, v.Reason)
	}
	w.step() // notify wave 2; nobody answers
	w.clock.Add(11 * time.Minute)
	w.step()
	if v = w.view(v.ID); v.State != rollout.StateHalted || v.Waves[1].Failed != 20 || !strings.Contains(v.Reason, "rest") {
		t.Fatalf("timeouts: %s %q %+v", v.State, v.Reason, v.Waves[1])
	}
}

func TestSuccessThresholdNotMetHalts(t *testing.T) {
	w := newWorld(t)
	w.fleet(10, nil)
	spec := otaSpec()
	spec.Waves = []rollout.WaveSpec{{Name: "all", Percent: 100, FailureThreshold: 50, SuccessThreshold: f64(90)}}
	v, _ := w.eng.Create(ctx, spec)
	_, _ = w.eng.Start(ctx, v.ID)
	w.step()
	plan, _ := w.eng.PreviewID(v.ID)
	w.devices(func(th string) bool { return th == plan[0].Things[0] || th == plan[0].Things[1] })
	w.step()
	if v = w.view(v.ID); v.State != rollout.StateHalted || !strings.Contains(v.Reason, "success threshold") {
		t.Fatalf("%s %q", v.State, v.Reason)
	}
}

func TestBakeTimeApprovalPauseResume(t *testing.T) {
	w := newWorld(t)
	w.fleet(20, rings)
	spec := otaSpec()
	spec.Waves = []rollout.WaveSpec{
		{Name: "canary", Query: "attributes.deployment_ring:canary", BakeTime: rollout.Duration(30 * time.Minute)},
		{Name: "rest", Percent: 100, RequireApproval: true},
	}
	v, _ := w.eng.Create(ctx, spec)
	v, _ = w.eng.Start(ctx, v.ID)
	w.step()
	w.devices(nil)
	w.step()
	if v = w.view(v.ID); v.State != rollout.StateBaking {
		t.Fatalf("after canaries: %s", v.State)
	}
	w.clock.Add(29 * time.Minute)
	w.step()
	if v = w.view(v.ID); v.State != rollout.StateBaking {
		t.Fatalf("bake ended early: %s", v.State)
	}
	w.clock.Add(2 * time.Minute)
	w.step()
	if v = w.view(v.ID); v.State != rollout.StateWaiting || v.CurrentWave != 1 {
		t.Fatalf("after bake: %s wave %d", v.State, v.CurrentWave)
	}
	w.step()
	if v = w.view(v.ID); v.Waves[1].InProgress != 0 {
		t.Fatal("devices notified before approval")
	}
	if _, err := w.eng.Approve(ctx, v.ID, -1); err != nil {
		t.Fatal(err)
	}
	if _, err := w.eng.Pause(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	w.step()
	if v = w.view(v.ID); v.Waves[1].InProgress != 0 || v.State != rollout.StatePaused {
		t.Fatalf("paused rollout notified devices: %+v", v.Waves[1])
	}
	if _, err := w.eng.Pause(ctx, v.ID); !errors.Is(err, rollout.ErrState) {
		t.Fatalf("pause twice: %v", err)
	}
	if _, err := w.eng.Resume(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	w.step()
	w.devices(nil)
	w.step()
	if v = w.view(v.ID); v.State != rollout.StateCompleted {
		t.Fatalf("final: %s %q", v.State, v.Reason)
	}
}

func TestRateLimitAndExponentialRamp(t *testing.T) {
	w := newWorld(t)
	w.fleet(60, nil)
	spec := otaSpec()
	spec.Waves = []rollout.WaveSpec{{Name: "all", Percent: 100}}
	spec.Rate = rollout.Rate{BasePerMinute: 5, IncrementFactor: 2, IncreaseEvery: 5, MaxPerMinute: 16}
	v, _ := w.eng.Create(ctx, spec)
	_, _ = w.eng.Start(ctx, v.ID)
	notified := func() int { v := w.view(v.ID); return v.Waves[0].InProgress + v.Waves[0].Succeeded }
	var got []int
	for range 4 {
		w.step()
		got = append(got, notified())
		w.clock.Add(61 * time.Second)
	}
	// 5/min, then 10/min after 5 notified, then 20/min capped at 16.
	if fmt.Sprint(got) != "[5 15 31 47]" {
		t.Fatalf("cumulative notified per minute: %v", got)
	}
}

func TestHealthGatesOfflineAndCrashCounter(t *testing.T) {
	w := newWorld(t)
	w.fleet(4, nil)
	spec := otaSpec()
	spec.Health = rollout.Health{IncreaseOf: []string{"crash_count"}}
	spec.Waves = []rollout.WaveSpec{{Name: "all", Percent: 100}}
	v, _ := w.eng.Create(ctx, spec)
	_, _ = w.eng.Start(ctx, v.ID)
	w.step()
	w.report("esp-002", `{"crash_count":3}`) // crash loop after the update started
	w.step()
	if v = w.view(v.ID); v.State != rollout.StateHalted || !strings.Contains(v.Reason, "failed") {
		t.Fatalf("crash counter: %s %q", v.State, v.Reason)
	}
	devs, _ := w.eng.Devices(v.ID, -1, rollout.DevFailed)
	if len(devs) != 1 || devs[0].Thing != "esp-002" || !strings.Contains(devs[0].Reason, "crash_count rose from 0 to 3") {
		t.Fatalf("failed devices %+v", devs)
	}
}

// A running rollout resumes after a restart exactly where it was, timers
// included.
func TestRestartResumes(t *testing.T) {
	w := newWorld(t)
	w.fleet(20, rings)
	spec := otaSpec()
	spec.Waves = []rollout.WaveSpec{
		{Name: "canary", Query: "attributes.deployment_ring:canary", BakeTime: rollout.Duration(time.Hour)},
		{Name: "rest", Percent: 100, DeviceTimeout: rollout.Duration(5 * time.Minute)},
	}
	v, _ := w.eng.Create(ctx, spec)
	_, _ = w.eng.Start(ctx, v.ID)
	w.step()
	w.devices(nil)
	w.step()
	before := w.view(v.ID)
	w.restart()
	after := w.view(v.ID)
	if after.State != rollout.StateBaking || after.BakeUntil != before.BakeUntil || sizes(after) != sizes(before) || len(after.Events) != len(before.Events) {
		t.Fatalf("after restart: %+v\nbefore: %+v", after, before)
	}
	w.clock.Add(61 * time.Minute)
	w.step() // bake over: next wave
	w.step() // notify
	w.restart()
	w.clock.Add(6 * time.Minute)
	w.step() // the devices never answered: their timeouts still fire after the restart
	if v = w.view(v.ID); v.State != rollout.StateHalted || v.Waves[1].Failed != v.Waves[1].Size {
		t.Fatalf("timeouts across restart: %s %+v", v.State, v.Waves[1])
	}
}

func TestSpecValidationNamesTheField(t *testing.T) {
	w := newWorld(t)
	bad := []struct {
		mutate func(*rollout.Spec)
		field  string
	}{
		{func(s *rollout.Spec) { s.Target = "" }, "target"},
		{func(s *rollout.Spec) { s.Target = "attributes.x:" }, "target"},
		{func(s *rollout.Spec) { s.Patch = []byte(`[1]`) }, "patch"},
		{func(s *rollout.Spec) { s.Patch = []byte(`{"ota_url":"x"}`) }, "successCondition"},
		{func(s *rollout.Spec) { s.Waves = nil }, "waves"},
		{func(s *rollout.Spec) { s.Waves[1].Percent = 0 }, "waves[1].percent"},
		{func(s *rollout.Spec) { s.OnFailure = "pray" }, "onFailure"},
		{func(s *rollout.Spec) { s.Rate = rollout.Rate{BasePerMinute: 5} }, "rate"},
	}
	for _, c := range bad {
		s := otaSpec()
		c.mutate(&s)
		_, err := w.eng.Create(ctx, s)
		if err == nil || !strings.Contains(err.Error(), c.field+":") {
			t.Errorf("want an error naming %s, got %v", c.field, err)
		}
	}
}

// Bulk configuration with a version gate: old firmware is skipped as
// ineligible rather than left with a delta it can never clear.
func TestJobVersionGateAndProgress(t *testing.T) {
	w := newWorld(t)
	w.fleet(10, nil)
	for _, th := range []string{"esp-000", "esp-001", "esp-002"} {
		w.report(th, `{"firmware_version":"2.1.0"}`)
	}
	j, err := w.eng.CreateJob(ctx, rollout.JobSpec{Name: "slower telemetry", Target: "*", Patch: []byte(`{"telemetry_interval_s":300}`),
		Condition: "shadow.reported.firmware_version>=2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if j.State != rollout.JobCompleted || j.Progress.Applied != 3 || j.Progress.Ineligible != 7 || j.Progress.Converged != 0 || j.Progress.Pending != 3 {
		t.Fatalf("job %+v", j.Progress)
	}
	if gjson.GetBytes(w.doc("esp-005"), "state.desired").Exists() {
		t.Fatal("an ineligible thing got the patch")
	}
	w.report("esp-001", `{"telemetry_interval_s":300}`)
	j, _ = w.eng.Job(j.ID)
	if j.Progress.Converged != 1 {
		t.Fatalf("after a device converged: %+v", j.Progress)
	}
	slow, _ := w.eng.CreateJob(ctx, rollout.JobSpec{Name: "paced", Target: "*", Patch: []byte(`{"led_is_on":true}`), RatePerSecond: 4})
	if slow.State != rollout.JobRunning || slow.Progress.Applied != 4 || slow.Progress.Remaining != 6 {
		t.Fatalf("paced job after its first second: %+v", slow.Progress)
	}
	if slow, _ = w.eng.CancelJob(ctx, slow.ID); slow.State != rollout.JobCancelled {
		t.Fatal("cancel")
	}
	w.step()
	if slow, _ = w.eng.Job(slow.ID); slow.Progress.Applied != 4 {
		t.Fatalf("cancelled job kept writing: %+v", slow.Progress)
	}
	if _, err := w.eng.CreateJob(ctx, rollout.JobSpec{Name: "x", Patch: []byte(`{"a":1}`)}); err == nil || !strings.Contains(err.Error(), "target") {
		t.Fatalf("job without target: %v", err)
	}
}

// A canary that regresses while a later wave runs halts the rollout: health
// is watched for every touched device until the rollout ends. The device
// is regressed with the gate, the value and the time.
func TestRegressionInEarlierWaveHaltsLaterWave(t *testing.T) {
	w := newWorld(t)
	w.fleet(100, rings)
	spec := otaSpec()
	spec.Health = rollout.Health{ErrorCondition: "shadow.reported.reset_reason:panic"}
	v, _ := w.eng.Create(ctx, spec)
	_, _ = w.eng.Start(ctx, v.ID)
	w.step()
	w.devices(nil) // canaries update
	w.step()       // canary passes, early starts
	w.step()       // early notified
	if v = w.view(v.ID); v.State != rollout.StateRunning || v.CurrentWave != 1 || v.Waves[1].InProgress != 10 {
		t.Fatalf("want early running: %s wave %d %+v", v.State, v.CurrentWave, v.Waves)
	}
	w.clock.Add(time.Minute)
	w.report("esp-050", `{"reset_reason":"panic","boot_count":7}`)
	w.step()
	v = w.view(v.ID)
	if v.State != rollout.StateHalted || !strings.Contains(v.Reason, "wave canary") || !strings.Contains(v.Reason, "esp-050 regressed") {
		t.Fatalf("state %s reason %q", v.State, v.Reason)
	}
	if v.Waves[0].State != "failed" || v.Waves[0].Regressed != 1 || v.Waves[1].State != "halted" || v.Waves[2].State != "not_reached" {
		t.Fatalf("waves %+v", v.Waves)
	}
	devs, _ := w.eng.Devices(v.ID, 0, rollout.DevRegressed)
	if len(devs) != 1 || devs[0].Failure == nil || devs[0].Failure.Gate != "health.errorCondition" ||
		devs[0].Failure.Value != "reset_reason=panic" || devs[0].Failure.Time != w.clock.Now().UnixMilli() {
		t.Fatalf("regressed %+v", devs)
	}
}

// The update's own reboot raises boot_count together with the success
// report: that is the new baseline, not a failure; a later rise is a
// regression. A succeeded device that goes back to the old firmware
// regresses too.
func TestCountersRebaselineAtSuccessAndFirmwareRevert(t *testing.T) {
	w := newWorld(t)
	w.fleet(3, nil)
	spec := otaSpec()
	spec.Health = rollout.Health{IncreaseOf: []string{"boot_count"}}
	spec.Waves = []rollout.WaveSpec{{Name: "all", Percent: 100, BakeTime: rollout.Duration(time.Hour)}}
	v, _ := w.eng.Create(ctx, spec)
	_, _ = w.eng.Start(ctx, v.ID)
	w.step()
	for _, th := range []string{"esp-000", "esp-001", "esp-002"} {
		w.report(th, `{"firmware_version":"1.1","boot_count":2,"reset_reason":"software"}`)
	}
	w.step()
	if v = w.view(v.ID); v.State != rollout.StateBaking || v.Waves[0].Succeeded != 3 {
		t.Fatalf("want baking with 3 succeeded: %s %+v", v.State, v.Waves)
	}
	w.report("esp-001", `{"firmware_version":"1.0"}`) // the bootloader went back
	w.report("esp-002", `{"boot_count":3,"reset_reason":"panic"}`)
	w.step()
	devs, _ := w.eng.Devices(v.ID, -1, rollout.DevRegressed)
	if len(devs) != 2 || devs[0].Thing != "esp-001" || devs[0].Failure.Gate != "successCondition" || devs[0].Failure.Value != "firmware_version=1.0" ||
		devs[1].Thing != "esp-002" || devs[1].Failure.Gate != "health.increaseOf" || devs[1].Failure.Value != "boot_count=3" {
		t.Fatalf("regressed %+v", devs)
	}
	if ok, _ := w.eng.Devices(v.ID, -1, rollout.DevSucceeded); len(ok) != 1 || ok[0].Thing != "esp-000" {
		t.Fatalf("succeeded %+v", ok)
	}
	if v = w.view(v.ID); v.State != rollout.StateHalted {
		t.Fatalf("state %s", v.State)
	}
}

// A restart during the bake keeps watching the succeeded devices: a crash
// reported while the engine was down halts the rollout at its first step.
func TestRegressionDuringBakeSurvivesRestart(t *testing.T) {
	w := newWorld(t)
	w.fleet(20, rings)
	spec := otaSpec()
	spec.Health = rollout.Health{IncreaseOf: []string{"crash_count"}}
	spec.Waves = []rollout.WaveSpec{
		{Name: "canary", Query: "attributes.deployment_ring:canary", BakeTime: rollout.Duration(time.Hour)},
		{Name: "rest", Percent: 100},
	}
	v, _ := w.eng.Create(ctx, spec)
	_, _ = w.eng.Start(ctx, v.ID)
	w.step()
	w.devices(nil)
	w.step()
	if v = w.view(v.ID); v.State != rollout.StateBaking {
		t.Fatalf("state %s", v.State)
	}
	w.restart()
	w.report("esp-000", `{"crash_count":1}`) // while no step ran
	w.eng.Step(ctx)
	v = w.view(v.ID)
	if v.State != rollout.StateHalted || v.Waves[0].Regressed != 1 || v.Waves[1].State != "not_reached" {
		t.Fatalf("after restart: %s %q %+v", v.State, v.Reason, v.Waves)
	}
}
