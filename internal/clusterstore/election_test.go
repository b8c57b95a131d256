package clusterstore

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/shadow"
)

// electionKV is a real bucket whose next answers are lost, as when the
// stream leader a request reached is replaced: the next failGets gets
// answer "no responders" without reading, and the next lostWrites writes
// are applied but their answer is replaced by a timeout.
type electionKV struct {
	jetstream.KeyValue
	failGets, lostWrites atomic.Int32
}

func (k *electionKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if k.failGets.Add(-1) >= 0 {
		return nil, nats.ErrNoResponders
	}
	return k.KeyValue.Get(ctx, key)
}

func (k *electionKV) Create(ctx context.Context, key string, v []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := k.KeyValue.Create(ctx, key, v, opts...)
	if err == nil && k.lostWrites.Add(-1) >= 0 {
		return 0, context.DeadlineExceeded
	}
	return rev, err
}

func (k *electionKV) Update(ctx context.Context, key string, v []byte, last uint64) (uint64, error) {
	rev, err := k.KeyValue.Update(ctx, key, v, last)
	if err == nil && k.lostWrites.Add(-1) >= 0 {
		return 0, context.DeadlineExceeded
	}
	return rev, err
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
	st.kv = ekv
	svc := shadow.NewService(shadow.Config{Store: st})
	ref := shadow.Ref{Thing: "T"}
	do := func(op shadow.Op, payload string) shadow.Response {
		return svc.Handle(ctx, shadow.Request{Ref: ref, Op: op, Origin: shadow.OriginHTTP, Payload: []byte(payload)})
	}

	// Create whose answer is lost, after a load that met no responders.
	ekv.failGets.Store(1)
	ekv.lostWrites.Store(1)
	if r := do(shadow.OpUpdate, `{"state":{"reported":{"a":1}}}`); r.Err != nil || r.Version != 1 {
		t.Fatalf("first update: %+v, want accepted at version 1", r.Err)
	}
	// An unversioned update whose answer is lost: version 2, not 3.
	ekv.lostWrites.Store(1)
	if r := do(shadow.OpUpdate, `{"state":{"reported":{"a":2}}}`); r.Err != nil || r.Version != 2 {
		t.Fatalf("second update: %+v version %d, want accepted at version 2", r.Err, r.Version)
	}
	// A versioned update whose answer is lost: accepted, not 409.
	ekv.lostWrites.Store(1)
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
	hist, err := st.History(ref, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var versions []int64
	for _, h := range hist {
		versions = append(versions, h.Version)
	}
	if len(versions) != 3 || versions[0] != 3 || versions[2] != 1 {
		t.Fatalf("history versions %v, want [3 2 1]", versions)
	}
}
