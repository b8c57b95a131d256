package shadow_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/limits"
	"github.com/umbra-iot/umbra/shadow"
)

// memStore is an in-memory shadow.Store whose commits can be held.
type memStore struct {
	mu   sync.Mutex
	docs map[shadow.Ref]shadow.Current
	hold chan struct{} // when non-nil, Commit waits for a receive
	in   chan struct{} // signalled when a Commit starts waiting
}

func (m *memStore) Load(ref shadow.Ref) (shadow.Current, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.docs[ref], nil
}

func (m *memStore) Commit(_ context.Context, c shadow.Change) error {
	if m.hold != nil {
		m.in <- struct{}{}
		<-m.hold
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.docs == nil {
		m.docs = map[shadow.Ref]shadow.Current{}
	}
	m.docs[c.Ref] = shadow.Current{Doc: c.Doc, Version: c.Version}
	return nil
}

type published struct {
	mu     sync.Mutex
	topics []string
}

func (p *published) Publish(topic string, _ []byte) error {
	p.mu.Lock()
	p.topics = append(p.topics, topic)
	p.mu.Unlock()
	return nil
}

func TestServiceInFlightLimitAnswers429(t *testing.T) {
	store := &memStore{hold: make(chan struct{}), in: make(chan struct{})}
	pub := &published{}
	svc := shadow.NewService(shadow.Config{Store: store, Publisher: pub, Limiter: &limits.Shadow{InFlight: 1}})
	req := func(thing string) shadow.Request {
		return shadow.Request{Ref: shadow.Ref{Thing: thing}, Op: shadow.OpUpdate, Origin: shadow.OriginHTTP,
			Principal: "app-1", Payload: []byte(`{"state":{"reported":{"a":1}},"clientToken":"` + thing + `"}`)}
	}
	first := make(chan shadow.Response, 1)
	go func() { first <- svc.Handle(context.Background(), req("t1")) }()
	<-store.in // the first request is now in flight, holding its commit

	resp := svc.Handle(context.Background(), req("t2"))
	if resp.Err == nil || resp.Err.Code != 429 {
		t.Fatalf("second concurrent request of one principal: %+v, want 429", resp)
	}
	internal := req("t3")
	internal.Origin = shadow.OriginInternal
	done := make(chan shadow.Response, 1)
	go func() { done <- svc.Handle(context.Background(), internal) }()
	<-store.in // Umbra's own requests are not limited
	store.hold <- struct{}{}
	store.hold <- struct{}{}
	if r := <-first; r.Err != nil {
		t.Fatalf("first request: %v", r.Err)
	}
	if r := <-done; r.Err != nil {
		t.Fatalf("internal request: %v", r.Err)
	}
	store.hold = nil
	if r := svc.Handle(context.Background(), req("t2")); r.Err != nil {
		t.Fatalf("after the first finished: %v", r.Err)
	}
	// HTTP rejections are not published; accepted changes are.
	pub.mu.Lock()
	defer pub.mu.Unlock()
	for _, topic := range pub.topics {
		if topic == "$aws/things/t2/shadow/update/rejected" {
			t.Fatal("an HTTP request's 429 was published on /rejected")
		}
	}
}

func TestServiceRepliesAndHistoryPerShadowInVersionOrder(t *testing.T) {
	store := &memStore{}
	var mu sync.Mutex
	var versions []int64
	svc := shadow.NewService(shadow.Config{Store: store, Clock: func() time.Time { return time.Unix(1700000000, 0) },
		OnEvent: func(e shadow.Event) { mu.Lock(); versions = append(versions, e.Version); mu.Unlock() }})
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc.Handle(context.Background(), shadow.Request{Ref: shadow.Ref{Thing: "t"}, Op: shadow.OpUpdate,
				Payload: []byte(`{"state":{"reported":{"n":1}}}`)})
		}()
	}
	wg.Wait()
	for i, v := range versions {
		if v != int64(i+1) {
			t.Fatalf("events out of version order: %v", versions)
		}
	}
}

// The history entry is written by hand on the update path: it must decode
// into HistoryEntry with every field, whatever the principal contains.
func TestHistoryEntryEncoding(t *testing.T) {
	store := &historyStore{}
	svc := shadow.NewService(shadow.Config{Store: store, Clock: func() time.Time { return time.Unix(1700000000, 0) }})
	payload := "{\"state\":{\"reported\":{\"a\":1}},\n \"clientToken\":\"t\"}"
	resp := svc.Handle(context.Background(), shadow.Request{Ref: shadow.Ref{Thing: "t"}, Op: shadow.OpUpdate,
		Payload: []byte(payload), Origin: shadow.OriginHTTP, Principal: "apikey:o\"dd\\name\x01"})
	if resp.Err != nil {
		t.Fatal(resp.Err)
	}
	var e shadow.HistoryEntry
	if err := json.Unmarshal(store.history, &e); err != nil {
		t.Fatalf("history %s: %v", store.history, err)
	}
	if e.Version != 1 || e.Op != shadow.OpUpdate || e.Timestamp != 1700000000 || e.Principal != "apikey:o\"dd\\name\x01" ||
		e.Origin != "http" || string(e.Request) != payload || string(e.State) != `{"reported":{"a":1}}` {
		t.Fatalf("history entry %+v", e)
	}
	resp = svc.Handle(context.Background(), shadow.Request{Ref: shadow.Ref{Thing: "t"}, Op: shadow.OpDelete, Payload: []byte("not json")})
	if resp.Err != nil {
		t.Fatal(resp.Err)
	}
	e = shadow.HistoryEntry{}
	if err := json.Unmarshal(store.history, &e); err != nil || e.Op != shadow.OpDelete || e.Request != nil || e.State != nil {
		t.Fatalf("delete entry %s: %+v %v", store.history, e, err)
	}
}

// historyStore keeps one shadow and the last history entry.
type historyStore struct {
	memStore
	history []byte
}

func (h *historyStore) Commit(ctx context.Context, c shadow.Change) error {
	h.history = c.History
	return h.memStore.Commit(ctx, c)
}
