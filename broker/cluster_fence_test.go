package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/clusterkv"
	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/internal/storeadapt"
)

// The store fence: once a later term has raised the fence, a save by the
// earlier term is refused in the shared store itself, even when it is
// made after its own clock said it still led (a write in flight, a paused
// process), and the later term's saves go through.
func TestEngineFenceRefusesAnEarlierTerm(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func(i int, node string) storeadapt.ClusterKV {
		js, err := jetstream.New(nc.Connect(i))
		if err != nil {
			t.Fatal(err)
		}
		s, err := clusterkv.Open(ctx, js, clusterkv.Config{Replicas: 3, Node: node, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return storeadapt.ClusterKV{S: s}
	}
	a, b := open(0, "a"), open(1, "b")
	tokA, err := raiseFence(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	oldTerm := storeadapt.RolloutStore{KV: epochFence{TxStore: a, epoch: func() uint64 { return tokA }}}
	if err := oldTerm.SaveRollout(ctx, "ro-1", []byte(`{"by":"a"}`), map[string][]byte{"t1": []byte(`{}`)}); err != nil {
		t.Fatalf("save in the current term: %v", err)
	}
	tokB, err := raiseFence(ctx, b)
	if err != nil || tokB != tokA+1 {
		t.Fatalf("second term's token %d after %d: %v", tokB, tokA, err)
	}
	if err := oldTerm.SaveRollout(ctx, "ro-1", []byte(`{"by":"a, late"}`), nil); !errors.Is(err, errFenced) {
		t.Fatalf("save of the earlier term after the fence rose: %v", err)
	}
	if err := oldTerm.SaveJob(ctx, "job-1", []byte(`{}`)); !errors.Is(err, errFenced) {
		t.Fatalf("job save of the earlier term: %v", err)
	}
	newTerm := storeadapt.RolloutStore{KV: epochFence{TxStore: b, epoch: func() uint64 { return tokB }}}
	if err := newTerm.SaveRollout(ctx, "ro-1", []byte(`{"by":"b"}`), nil); err != nil {
		t.Fatalf("save in the later term: %v", err)
	}
	var header string
	if err := (storeadapt.RolloutStore{KV: a}).Load(func(id string, h []byte, _ [][]byte) error {
		header = string(h)
		return nil
	}, func(string, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if header != `{"by":"b"}` {
		t.Fatalf("stored header %s", header)
	}
	noTerm := epochFence{TxStore: a, epoch: func() uint64 { return 0 }}
	if err := (storeadapt.RolloutStore{KV: noTerm}).SaveJob(ctx, "job-1", []byte(`{}`)); !errors.Is(err, errNotEngine) {
		t.Fatalf("save outside any term: %v", err)
	}
}
