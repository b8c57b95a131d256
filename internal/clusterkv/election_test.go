package clusterkv

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/natstest"
)

// electionStream is the real stream whose next failInfo requests for its
// state get no answer, as while its leader is being elected.
type electionStream struct {
	jetstream.Stream
	failInfo atomic.Int32
}

func (s *electionStream) Info(ctx context.Context, opts ...jetstream.StreamInfoOpt) (*jetstream.StreamInfo, error) {
	if s.failInfo.Add(-1) >= 0 {
		return nil, nats.ErrNoResponders
	}
	return s.Stream.Info(ctx, opts...)
}

// TestReadThroughALeaderElection: a read that meets a leader election
// (JetStream does not answer for the stream's state) is asked again and
// answers from a state with every acknowledged write, rather than failing.
func TestReadThroughALeaderElection(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	js, err := jetstream.New(c.Connect(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, js, Config{Node: "n1", Dir: t.TempDir(), Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.UpdateKV(ctx, func(kv KV) error { return kv.Put("things", "t1", []byte("v1")) }); err != nil {
		t.Fatal(err)
	}
	es := &electionStream{Stream: s.stream}
	s.stream = es
	es.failInfo.Store(2)
	var got []byte
	if err := s.ViewKV(func(kv KV) error { got = kv.Get("things", "t1"); return nil }); err != nil {
		t.Fatalf("read through two unanswered requests: %v", err)
	}
	if string(got) != "v1" {
		t.Fatalf("read %q, want v1", got)
	}
}
