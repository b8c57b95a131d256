package clusterstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/clusterstore"
	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/shadow"
)

// A deleted shadow's tombstone is removed from the bucket by JetStream
// once TombstoneTTL has passed (its message TTL), not only ignored on
// load: the bucket does not keep every shadow ever deleted. Live shadows
// do not expire; a shadow made again after the removal starts at version 1.
func TestTombstonesRemovedByJetStream(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	kv := openStore(t, c, 0, clusterstore.Config{Replicas: 1, TombstoneTTL: time.Second})
	svc := shadow.NewService(shadow.Config{Store: kv})
	ctx := context.Background()
	do := func(ref shadow.Ref, op shadow.Op, payload string) shadow.Response {
		return svc.Handle(ctx, shadow.Request{Ref: ref, Op: op, Origin: shadow.OriginHTTP, Payload: []byte(payload)})
	}
	gone, kept := shadow.Ref{Thing: "gone"}, shadow.Ref{Thing: "kept", Name: "n"}
	for _, ref := range []shadow.Ref{gone, kept} {
		for range 2 {
			if r := do(ref, shadow.OpUpdate, `{"state":{"reported":{"a":1}}}`); r.Err != nil {
				t.Fatalf("update %v: %+v", ref, r)
			}
		}
	}
	if r := do(gone, shadow.OpDelete, ``); r.Err != nil || r.Version != 2 {
		t.Fatalf("delete: %+v", r)
	}

	js, err := jetstream.New(c.Connect(0))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "KV_"+clusterstore.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	subject := func(r shadow.Ref) string { return "$KV." + clusterstore.DefaultBucket + "." + clusterstore.Key(r) }
	if _, err := stream.GetLastMsgForSubject(ctx, subject(gone)); err != nil {
		t.Fatalf("tombstone right after the delete: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := stream.GetLastMsgForSubject(ctx, subject(gone))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the tombstone is still in the bucket 15 s after its 1 s TTL")
		}
		time.Sleep(50 * time.Millisecond) // polling JetStream's expiry, which has no notification
	}
	if _, err := stream.GetLastMsgForSubject(ctx, subject(kept)); err != nil {
		t.Fatalf("a live shadow's entry after the tombstone's TTL: %v", err)
	}
	if r := do(gone, shadow.OpUpdate, `{"state":{"reported":{"a":1}},"version":1}`); r.Err != nil || r.Version != 1 {
		t.Fatalf("update after the removal: %+v, want version 1", r)
	}
	if r := do(kept, shadow.OpGet, ``); r.Err != nil || r.Version != 2 {
		t.Fatalf("live shadow: %+v", r)
	}
}

// A bucket made before tombstones had a TTL (message TTLs not allowed on
// its stream) is brought up to date when a node opens it.
func TestOpenAllowsMessageTTLsOnAnOlderBucket(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	js, err := jetstream.New(c.Connect(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "older", Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	kv := openStore(t, c, 0, clusterstore.Config{Bucket: "older", Replicas: 1, TombstoneTTL: time.Hour})
	stream, err := js.Stream(ctx, "KV_older")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := stream.CachedInfo().Config; !cfg.AllowMsgTTL || cfg.AllowDirect {
		t.Fatalf("older bucket after Open: message TTLs %v, direct get %v", cfg.AllowMsgTTL, cfg.AllowDirect)
	}
	svc := shadow.NewService(shadow.Config{Store: kv})
	ref := shadow.Ref{Thing: "x"}
	svc.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpUpdate, Origin: shadow.OriginHTTP, Payload: []byte(`{"state":{"reported":{"a":1}}}`)})
	if r := svc.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpDelete, Origin: shadow.OriginHTTP}); r.Err != nil {
		t.Fatalf("delete with a TTL on the older bucket: %+v", r)
	}
}
