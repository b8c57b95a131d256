package rollout_test

import (
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/rollout"
)

// A device's update reboot raises boot_count in the same report as the new
// firmware_version. The engine may step after that report is committed but
// before the fleet index has applied it (the shadow event runs after the
// commit): it must judge success and health from one shadow version, so a
// healthy device succeeds instead of failing health.increaseOf on the reboot;
// a later reboot (a crash loop) still regresses it.
func TestHealthAndSuccessReadFromOneShadowVersion(t *testing.T) {
	w := newWorld(t)
	w.fleet(2, nil)
	for _, th := range []string{"esp-000", "esp-001"} {
		w.report(th, `{"boot_count":1}`)
	}
	spec := otaSpec()
	spec.Health = rollout.Health{IncreaseOf: []string{"boot_count"}}
	spec.Waves = []rollout.WaveSpec{{Name: "all", Percent: 100, BakeTime: rollout.Duration(time.Hour)}}
	v, err := w.eng.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.eng.Start(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	w.step() // notifies both
	for _, th := range []string{"esp-000", "esp-001"} {
		// Marks the device changed for the next step (index and engine
		// see this one at once).
		w.report(th, `{"ota_status":"downloading","ota_progress":50}`)
		// The install reboot: committed, its index update still pending
		// when the engine steps.
		w.hold()
		w.report(th, `{"firmware_version":"1.1","target_version":"1.1","boot_count":2,"ota_status":"succeeded"}`)
		w.step()
		w.release()
		w.step()
	}
	if v = w.view(v.ID); v.State != rollout.StateBaking || v.Waves[0].Succeeded != 2 {
		devs, _ := w.eng.Devices(v.ID, -1, "")
		t.Fatalf("healthy update: want baking with 2 succeeded, got %s %q %+v; devices %+v", v.State, v.Reason, v.Waves, devs)
	}
	// A crash after the update still counts, even while the index lags.
	w.report("esp-001", `{"ota_status":"succeeded","uptime":1}`)
	w.hold()
	w.report("esp-001", `{"boot_count":3,"reset_reason":"panic"}`)
	w.step()
	w.release()
	devs, _ := w.eng.Devices(v.ID, -1, rollout.DevRegressed)
	if len(devs) != 1 || devs[0].Thing != "esp-001" || devs[0].Failure.Gate != "health.increaseOf" || devs[0].Failure.Value != "boot_count=3" {
		t.Fatalf("regressed %+v", devs)
	}
	if v = w.view(v.ID); v.State != rollout.StateHalted {
		t.Fatalf("state %s", v.State)
	}
}
