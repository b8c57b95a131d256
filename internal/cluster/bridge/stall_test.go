package bridge

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/natstest"
	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
)

// TestRetainedMirrorRestartsWhenStalled: when the mirror of the retained
// stream stops delivering (as an ordered consumer was seen to do after a
// NATS server restart, heartbeats arriving but no messages), the watch
// starts it again after the last message it applied, and retained
// messages stored meanwhile reach this node's Mochi.
func TestRetainedMirrorRestartsWhenStalled(t *testing.T) {
	retainedStallAfter = 300 * time.Millisecond
	t.Cleanup(func() { retainedStallAfter = 3 * time.Second })
	c := natstest.StartCluster(t, 1)
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	b, err := New(Config{NC: c.Connect(0), Server: srv, Node: "n1", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	js, err := jetstream.New(c.Connect(0))
	if err != nil {
		t.Fatal(err)
	}
	retained := func(topic, want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			if m := srv.Topics.Messages(topic); len(m) == 1 && string(m[0].Payload) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never retained %q here (mirror applied %d, restarts %d)", topic, want, b.retainedSeq.Load(), b.retainedRestarts.Load())
			}
			time.Sleep(20 * time.Millisecond) // poll pacing, not synchronisation
		}
	}
	if _, err := js.Publish(ctx, RetainedPrefix+"config.a", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	retained("config/a", "v1")
	// The mirror stops delivering, without an error anyone sees.
	b.cmu.Lock()
	b.consume.Stop()
	b.cmu.Unlock()
	for _, m := range []struct{ subject, payload string }{{"config.b", "v2"}, {"config.a", "v3"}} {
		if _, err := js.Publish(ctx, RetainedPrefix+m.subject, []byte(m.payload)); err != nil {
			t.Fatal(err)
		}
	}
	retained("config/b", "v2")
	retained("config/a", "v3")
	if b.retainedRestarts.Load() == 0 {
		t.Fatal("the messages arrived without the mirror being started again")
	}
}
