package clusterkv

import (
	"context"
	"strconv"
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

// TestWriteThroughLostAnswers: a transaction whose acknowledgement is lost
// (as while JetStream elects a stream leader) is settled, not failed: it
// is applied once and reported done; and one whose lost attempt was
// overtaken by another node's transaction is run again on the new state,
// not applied twice.
func TestWriteThroughLostAnswers(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	open := func(node string) *Store {
		js, err := jetstream.New(c.Connect(0))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := Open(ctx, js, Config{Node: node, Dir: t.TempDir(), Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a, b := open("a"), open("b")
	var lose atomic.Int32
	var before func() // runs before a lost commit is sent
	a.requestCommit = func(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
		if lose.Add(-1) >= 0 {
			if f := before; f != nil {
				before = nil
				f()
			}
			if _, err := a.nc.RequestMsgWithContext(ctx, m); err != nil {
				return nil, err
			}
			return nil, context.DeadlineExceeded
		}
		return a.nc.RequestMsgWithContext(ctx, m)
	}
	ctx := context.Background()
	runs := 0
	incr := func(kv KV) error {
		runs++
		n := 0
		if v := kv.Get("c", "n"); v != nil {
			n, _ = strconv.Atoi(string(v))
		}
		return kv.Put("c", "n", []byte(strconv.Itoa(n+1)))
	}
	read := func(s *Store) string {
		var v []byte
		if err := s.ViewKV(func(kv KV) error { v = kv.Get("c", "n"); return nil }); err != nil {
			t.Fatal(err)
		}
		return string(v)
	}

	lose.Store(1)
	if err := a.UpdateKV(ctx, incr); err != nil {
		t.Fatalf("increment whose answer was lost: %v", err)
	}
	if got := read(b); got != "1" || runs != 1 {
		t.Fatalf("after one increment with a lost answer: n=%s on the other node, fn ran %d times", got, runs)
	}

	// The lost commit is refused because node b's transaction came first:
	// the increment runs again on b's state.
	runs = 0
	lose.Store(1)
	before = func() {
		if err := b.UpdateKV(ctx, func(kv KV) error { return kv.Put("c", "n", []byte("10")) }); err != nil {
			t.Error(err)
		}
	}
	if err := a.UpdateKV(ctx, incr); err != nil {
		t.Fatalf("increment overtaken by another node: %v", err)
	}
	if got := read(b); got != "11" || runs != 2 {
		t.Fatalf("after the overtaken increment: n=%s, fn ran %d times (want 11, 2)", got, runs)
	}
}
