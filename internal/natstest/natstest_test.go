package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterReplicatedKV: a KV bucket with three replicas written through
// one node is read through another, and survives a node restart.
func TestClusterReplicatedKV(t *testing.T) {
	c := StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js0, err := jetstream.New(c.Connect(0))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js0.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t", Replicas: 3, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	js2, err := jetstream.New(c.Connect(2))
	if err != nil {
		t.Fatal(err)
	}
	kv2, err := js2.KeyValue(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv2.Get(ctx, "k")
	if err != nil || string(e.Value()) != "v1" {
		t.Fatalf("get through node 3: %v %v", e, err)
	}
	info, err := kv2.Status(ctx)
	if err != nil || info.Config().Replicas != 3 {
		t.Fatalf("bucket replicas: %v %v", info, err)
	}

	c.Stop(1)
	c.Restart(1)
	js1, err := jetstream.New(c.Connect(1))
	if err != nil {
		t.Fatal(err)
	}
	kv1, err := js1.KeyValue(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv1.Update(ctx, "k", []byte("v2"), e.Revision()); err != nil {
		t.Fatalf("update through the restarted node: %v", err)
	}
	if _, err := kv2.Update(ctx, "k", []byte("v3"), e.Revision()); err == nil {
		t.Fatal("update on a stale revision succeeded")
	}
}
