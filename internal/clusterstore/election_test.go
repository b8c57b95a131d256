package clusterstore

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/shadow"
)

// electionKV is a real bucket whose next failGets gets answer "no
// responders" without reading, as when the stream leader a request reached
// is being replaced.
type electionKV struct {
	jetstream.KeyValue
	failGets atomic.Int32
}

func (k *electionKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if k.failGets.Add(-1) >= 0 {
		return nil, nats.ErrNoResponders
	}
	return k.KeyValue.Get(ctx, key)
}

// electionJS is a real JetStream connection whose next lostWrites
// publishes are stored but their acknowledgement is lost (a timeout).
type electionJS struct {
	jetstream.JetStream
	lostWrites atomic.Int32
	// after runs once after a lost write, before its timeout is returned
	// (another writer getting in).
	after func()
}

func (j *electionJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil && strings.HasPrefix(m.Subject, "$KV.") && j.lostWrites.Add(-1) >= 0 {
		if f := j.after; f != nil {
			j.after = nil
			f()
		}
		return nil, context.DeadlineExceeded
	}
	return ack, err
}

// TestRequestsThroughALeaderElection: a get or an update that meets a
// leader election is answered once JetStream answers again, not 500; a
// write whose acknowledgement was lost is reported accepted once, at its
// version, never applied twice nor refused with 409 because of itself.
func TestRequestsThroughALeaderElection(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	js, err := jetstream.New(c.Connect(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Open(ctx, js, Config{Replicas: 1, History: 10})
	if err != nil {
		t.Fatal(err)
	}
	ekv := &electionKV{KeyValue: st.kv}
	ejs := &electionJS{JetStream: st.js}
	st.kv, st.js = ekv, ejs
	svc := shadow.NewService(shadow.Config{Store: st})
	ref := shadow.Ref{Thing: "T"}
	do := func(op shadow.Op, payload string) shadow.Response {
		return svc.Handle(ctx, shadow.Request{Ref: ref, Op: op, Origin: shadow.OriginHTTP, Payload: []byte(payload)})
	}

	// Create whose answer is lost, after a load that met no responders.
	ekv.failGets.Store(1)
	ejs.lostWrites.Store(1)
	if r := do(shadow.OpUpdate, `{"state":{"reported":{"a":1}}}`); r.Err != nil || r.Version != 1 {
		t.Fatalf("first update: %+v version %d, want accepted at version 1", r.Err, r.Version)
	}
	// An unversioned update whose answer is lost: version 2, not 3.
	ejs.lostWrites.Store(1)
	if r := do(shadow.OpUpdate, `{"state":{"reported":{"a":2}}}`); r.Err != nil || r.Version != 2 {
		t.Fatalf("second update: %+v version %d, want accepted at version 2", r.Err, r.Version)
	}
	// A versioned update whose answer is lost: accepted, not 409.
	ejs.lostWrites.Store(1)
	if r := do(shadow.OpUpdate, `{"state":{"reported":{"a":3}},"version":2}`); r.Err != nil || r.Version != 3 {
		t.Fatalf("versioned update: %+v version %d, want accepted at version 3", r.Err, r.Version)
	}
	// A get through two unanswered attempts.
	ekv.failGets.Store(2)
	if r := do(shadow.OpGet, ``); r.Err != nil || r.Version != 3 {
		t.Fatalf("get: %+v version %d, want version 3", r.Err, r.Version)
	}
	// A stale version is still refused.
	if r := do(shadow.OpUpdate, `{"state":{"reported":{"a":4}},"version":2}`); r.Err == nil || r.Err.Code != 409 {
		t.Fatalf("stale version: %+v, want 409", r)
	}
	// A write whose answer is lost, and another writer's write right after
	// it: whether the first was applied cannot be told from the key any
	// more, so the request is answered 500 (outcome unknown), never 409
	// and never applied a second time.
	other := shadow.NewService(shadow.Config{Store: &ShadowStore{kv: st.kv, js: js, kvStream: st.kvStream, hist: st.hist, cfg: st.cfg}})
	ejs.after = func() {
		r := other.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpUpdate, Origin: shadow.OriginHTTP, Payload: []byte(`{"state":{"reported":{"b":1}}}`)})
		if r.Err != nil || r.Version != 5 {
			t.Errorf("the other writer: %+v version %d, want version 5", r.Err, r.Version)
		}
	}
	ejs.lostWrites.Store(1)
	if r := do(shadow.OpUpdate, `{"state":{"reported":{"a":5}}}`); r.Err == nil || r.Err.Code != 500 {
		t.Fatalf("lost answer, then another write: %+v version %d, want 500", r.Err, r.Version)
	}
	if r := do(shadow.OpGet, ``); r.Err != nil || r.Version != 5 {
		t.Fatalf("get after the unknown outcome: %+v version %d, want 5 (applied once, then the other write)", r.Err, r.Version)
	}
	hist, err := st.History(ref, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var versions []int64
	for _, h := range hist {
		versions = append(versions, h.Version)
	}
	// Version 4 (the write whose answer was lost) was committed but its
	// history entry never written: Commit stopped at the unknown outcome.
	if len(versions) != 4 || versions[0] != 5 || versions[1] != 3 || versions[3] != 1 {
		t.Fatalf("history versions %v, want [5 3 2 1]", versions)
	}
}
