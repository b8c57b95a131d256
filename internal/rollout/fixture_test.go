package rollout_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/internal/fakeclock"
	"github.com/umbra-iot/umbra/internal/rollout"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/shadow"
)

var ctx = context.Background()

// world is a registry, a shadow service and a rollout engine over one
// store, with a fake clock and devices simulated in-process.
type world struct {
	t     *testing.T
	dir   string
	db    *store.DB
	reg   *registry.Registry
	svc   *shadow.Service
	eng   *rollout.Engine
	clock *fakeclock.Clock
	// published rollout events by topic
	mu     sync.Mutex
	topics []string
	// holding delays shadow events (the fleet index and the engine's
	// change marks) until release: the window between a shadow commit and
	// its index update, made as wide as a test needs.
	holding bool
	held    []shadow.Event
	// artifacts, when set before open (or restart), is the engine's
	// artifact store.
	artifacts rollout.Artifacts
}

// hold delays shadow events until release.
func (w *world) hold() {
	w.mu.Lock()
	w.holding = true
	w.mu.Unlock()
}

// release delivers the held shadow events in order and stops holding.
func (w *world) release() {
	w.mu.Lock()
	held := w.held
	w.holding, w.held = false, nil
	w.mu.Unlock()
	for _, ev := range held {
		w.shadowEvent(ev)
	}
}

func (w *world) shadowEvent(ev shadow.Event) {
	w.mu.Lock()
	if w.holding {
		w.held = append(w.held, ev)
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	w.reg.ShadowChanged(ev)
	if w.eng != nil {
		w.eng.ShadowChanged(ev.Ref.Thing)
	}
}

func (w *world) Publish(topic string, _ []byte) error {
	w.mu.Lock()
	w.topics = append(w.topics, topic)
	w.mu.Unlock()
	return nil
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, dir: t.TempDir(), clock: fakeclock.New(time.Unix(1_800_000_000, 0))}
	w.open()
	return w
}

func (w *world) open() {
	t := w.t
	db, err := store.Open(w.dir, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	w.db = db
	if w.reg, err = registry.Open(registry.Config{Store: storeadapt.KV{DB: db}, Shadows: storeadapt.ShadowSource{DB: db}, Clock: w.clock.Now}); err != nil {
		t.Fatal(err)
	}
	w.svc = shadow.NewService(shadow.Config{Store: storeadapt.ShadowStore{DB: db}, Clock: w.clock.Now, OnEvent: w.shadowEvent})
	if w.eng, err = rollout.Open(rollout.Config{Fleet: w.reg, Shadows: w.svc, Store: storeadapt.RolloutStore{DB: db}, Publisher: w, Clock: w.clock.Now, Artifacts: w.artifacts}); err != nil {
		t.Fatal(err)
	}
}

// restart closes the store and opens everything again on it.
func (w *world) restart() {
	w.t.Helper()
	if err := w.db.Close(); err != nil {
		w.t.Fatal(err)
	}
	w.eng = nil
	w.open()
}

// fleet registers n devices esp-000.. on firmware 1.0 with rings.
func (w *world) fleet(n int, attrs func(i int) map[string]string) []string {
	var names []string
	for i := range n {
		name := fmt.Sprintf("esp-%03d", i)
		a := map[string]string{}
		if attrs != nil {
			a = attrs(i)
		}
		if _, err := w.reg.CreateThing(ctx, registry.NewThing{Name: name, Attributes: a}); err != nil {
			w.t.Fatal(err)
		}
		w.report(name, `{"firmware_version":"1.0","target_version":"1.0","crash_count":0}`)
		names = append(names, name)
	}
	return names
}

func (w *world) report(thing, reported string) {
	w.t.Helper()
	resp := w.svc.Handle(ctx, shadow.Request{Ref: shadow.Ref{Thing: thing}, Op: shadow.OpUpdate, Origin: shadow.OriginInternal,
		Payload: []byte(`{"state":{"reported":` + reported + `}}`)})
	if resp.Err != nil {
		w.t.Fatalf("report %s: %v", thing, resp.Err)
	}
}

func (w *world) doc(thing string) []byte {
	resp := w.svc.Handle(ctx, shadow.Request{Ref: shadow.Ref{Thing: thing}, Op: shadow.OpGet, Origin: shadow.OriginInternal})
	return resp.Payload
}

// devices acts as the fleet's firmware: every device with a pending
// target_version in its delta "updates" (reports the new version), unless
// fail says it fails (reports ota_status failed).
func (w *world) devices(fail func(thing string) bool) (updated int) {
	w.t.Helper()
	res := w.reg.Search(mustQuery(w.t, "shadow.delta.target_version:*"), "", 1<<20)
	for _, th := range res.Things {
		tv := gjson.GetBytes(w.doc(th), "state.delta.target_version").String()
		if fail != nil && fail(th) {
			w.report(th, `{"ota_status":"failed"}`)
			continue
		}
		w.report(th, fmt.Sprintf(`{"firmware_version":%q,"target_version":%q,"ota_status":"succeeded"}`, tv, tv))
		updated++
	}
	return updated
}

func (w *world) step() { w.eng.Step(ctx) }

func (w *world) view(id string) rollout.View {
	w.t.Helper()
	v, err := w.eng.Get(id)
	if err != nil {
		w.t.Fatal(err)
	}
	return v
}

// otaSpec is the seed's rollout: canary ring, then 10%, 50%, 100%.
func otaSpec() rollout.Spec {
	return rollout.Spec{
		Name: "fw 1.1", Target: "*",
		Patch:   []byte(`{"ota_url":"https://fw.example/1.1.bin","target_version":"1.1"}`),
		Failure: "shadow.reported.ota_status:failed",
		Waves: []rollout.WaveSpec{
			{Name: "canary", Query: "attributes.deployment_ring:canary"},
			{Name: "early", Percent: 10},
			{Name: "wave", Percent: 50},
			{Name: "rest", Percent: 100},
		},
	}
}

func rings(i int) map[string]string {
	if i%25 == 0 {
		return map[string]string{"deployment_ring": "canary"}
	}
	return map[string]string{"deployment_ring": "general"}
}

// counter counts published deltas.
type counter struct{ deltas atomic.Int64 }

func (c *counter) Publish(topic string, _ []byte) error {
	if strings.HasSuffix(topic, "/update/delta") {
		c.deltas.Add(1)
	}
	return nil
}
