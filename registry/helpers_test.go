package registry_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/fakeclock"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/registry/query"
	"github.com/umbra-iot/umbra/shadow"
)

type fixture struct {
	t     *testing.T
	dir   string
	db    *store.DB
	reg   *registry.Registry
	svc   *shadow.Service
	clock *fakeclock.Clock
	pub   *recorder
}

type recorder struct {
	mu  sync.Mutex
	msg map[string][]byte
}

func (r *recorder) Publish(topic string, payload []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.msg == nil {
		r.msg = map[string][]byte{}
	}
	r.msg[topic] = payload
	return nil
}

func (r *recorder) get(topic string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msg[topic]
}

func open(t *testing.T, dir string, policy registry.Policy, c *fakeclock.Clock) *fixture {
	t.Helper()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	f := &fixture{t: t, dir: dir, db: db, clock: c, pub: &recorder{}}
	f.reg, err = registry.Open(registry.Config{Store: storeadapt.KV{DB: db}, Shadows: storeadapt.ShadowSource{DB: db}, Publisher: f.pub, Policy: policy, Clock: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = shadow.NewService(shadow.Config{Store: storeadapt.ShadowStore{DB: db}, Clock: c.Now, OnEvent: f.reg.ShadowChanged})
	return f
}

func newFixture(t *testing.T) *fixture {
	return open(t, t.TempDir(), registry.PolicyAuto, fakeclock.New(time.Unix(1_800_000_000, 0)))
}

func (f *fixture) thing(name string, attrs map[string]string) {
	f.t.Helper()
	if _, err := f.reg.CreateThing(context.Background(), registry.NewThing{Name: name, Attributes: attrs}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) report(thing, shadowName, payload string) {
	f.t.Helper()
	resp := f.svc.Handle(context.Background(), shadow.Request{Ref: shadow.Ref{Thing: thing, Name: shadowName}, Op: shadow.OpUpdate, Payload: []byte(payload), Origin: shadow.OriginInternal})
	if resp.Err != nil {
		f.t.Fatalf("update %s: %v", thing, resp.Err)
	}
}

func (f *fixture) search(q string) []string {
	f.t.Helper()
	pq, err := query.Parse(q)
	if err != nil {
		f.t.Fatalf("parse %q: %v", q, err)
	}
	return f.reg.Search(pq, "", 1000).Things
}
