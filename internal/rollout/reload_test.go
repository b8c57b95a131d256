package rollout_test

import (
	"errors"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/rollout"
	"github.com/umbra-iot/umbra/internal/storeadapt"
)

// A standby engine on the same store (cluster mode: another node) sees
// nothing of a rollout created after it opened until Reload; after it, it
// carries on from the stored state, re-reading every device, including
// the shadow changes it was never told about (they went to the first
// engine only), and completes the rollout without notifying a device
// twice.
func TestReloadTakesOverFromStore(t *testing.T) {
	w := newWorld(t)
	w.fleet(20, rings)
	standby, err := rollout.Open(rollout.Config{Fleet: w.reg, Shadows: w.svc, Store: storeadapt.RolloutStore{DB: w.db}, Publisher: w, Clock: w.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	spec := otaSpec()
	spec.Waves = []rollout.WaveSpec{
		{Name: "canary", Query: "attributes.deployment_ring:canary", DeviceTimeout: rollout.Duration(time.Hour)},
		{Name: "rest", Percent: 100, DeviceTimeout: rollout.Duration(time.Hour)},
	}
	v, err := w.eng.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.eng.Start(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	w.step()       // canaries notified
	w.devices(nil) // and updated: only w.eng is told
	before := w.view(v.ID)
	if before.State != rollout.StateRunning || before.Waves[0].Notified+before.Waves[0].Succeeded == 0 {
		t.Fatalf("before takeover: %s %+v", before.State, before.Waves[0])
	}
	if _, err := standby.Get(v.ID); !errors.Is(err, rollout.ErrNotFound) {
		t.Fatalf("standby before Reload: %v", err)
	}
	if err := standby.Reload(); err != nil {
		t.Fatal(err)
	}
	got, err := standby.Get(v.ID)
	if err != nil || got.State != before.State || len(got.Events) != len(before.Events) || sizes(got) != sizes(before) {
		t.Fatalf("standby after Reload: %+v, %v\nwant %+v", got, err, before)
	}
	// The first engine stops; the standby runs it to the end and is told
	// of shadow changes from now on.
	w.mu.Lock()
	w.eng = standby
	w.mu.Unlock()
	for range 10 {
		standby.Step(ctx)
		w.devices(nil)
	}
	got, _ = standby.Get(v.ID)
	if got.State != rollout.StateCompleted || got.Totals.Succeeded != 20 {
		t.Fatalf("after takeover: %s %+v", got.State, got.Totals)
	}
	started := map[int]int{}
	for _, ev := range got.Events {
		if ev.Type == "wave_started" {
			started[ev.Wave]++
		}
	}
	if started[0] != 1 || started[1] != 1 {
		t.Fatalf("wave_started per wave: %v", started)
	}
}
