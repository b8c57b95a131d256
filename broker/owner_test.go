package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
)

// goroutineIDs lists the goroutines now running whose stacks run code of
// Umbra (or of the Mochi fork it embeds), by the first line of their stack,
// with the stack.
func umbraGoroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "github.com/umbra-iot/umbra/") && !strings.Contains(g, "github.com/mochi-mqtt/server") {
			continue
		}
		if strings.Contains(g, "umbra/broker_test.") { // this test's own
			continue
		}
		head, _, _ := strings.Cut(g, "\n")
		id, _, _ := strings.Cut(strings.TrimPrefix(head, "goroutine "), " ")
		out[id] = g
	}
	return out
}

// Shutdown owns every background goroutine: when it returns none is left,
// and a rollout step running when it was called is finished and saved
// before the database closes (not cut off by it, not failing devices).
func TestShutdownWaitsForEveryGoroutine(t *testing.T) {
	before := umbraGoroutines()
	var logs syncBuffer
	opts := brokertest.LoopbackOptions(t.TempDir())
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.RolloutInterval = time.Millisecond

	// The rollout engine's clock is read by Start and at the start of every
	// step: once the rollout started, the next step waits there until
	// released, so the test knows a step with work is under way when
	// Shutdown is called.
	var armed atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	var enterOnce sync.Once
	opts.RolloutClock = func() time.Time {
		stack := string(debug.Stack())
		if strings.Contains(stack, "rollout.(*Engine).Start(") {
			armed.Store(true)
		}
		if armed.Load() && strings.Contains(stack, "rollout.(*Engine).Step(") {
			enterOnce.Do(func() {
				close(entered)
				<-release
			})
		}
		return time.Now()
	}
	b, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := &brokertest.Server{Broker: b, Options: opts}
	base := srv.HTTPURL()
	const n = 300
	for i := range n {
		httpDo(t, "POST", base+"/api/things", fmt.Sprintf(`{"thingName":"dev-%03d"}`, i), 201)
	}
	created := httpDo(t, "POST", base+"/api/rollouts", `{"name":"cfg 2","target":"thingName:dev-*","patch":{"cfg":2},"successCondition":"shadow.reported.cfg:2",
		"waves":[{"name":"all","percent":100}]}`, 201)
	id := gjson.Get(created, "id").String()

	// An open event stream ends when Shutdown starts.
	resp, err := http.Get(base + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	streamEnded := make(chan struct{})
	go func() {
		defer close(streamEnded)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
		}
		resp.Body.Close()
	}()

	httpDo(t, "POST", base+"/api/rollouts/"+id+"/start", "", 200)
	<-entered // a step is under way, and waits
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- b.Shutdown(ctx)
	}()
	<-streamEnded
	close(release) // the step goes on while Shutdown runs
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	// A goroutine that has done its last work (the store's committer after
	// it signalled Close) may still be on its way out: give those until a
	// deadline, as goleak does; one that waits for anything stays.
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := []string{}
		for id, g := range umbraGoroutines() {
			if _, ok := before[id]; !ok {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Shutdown returned, the first:\n%s", len(left), left[0])
		}
		runtime.Gosched()
	}
	if l := logs.String(); strings.Contains(l, "level=ERROR") {
		t.Errorf("errors logged during shutdown:\n%s", l)
	}

	// No device was failed by the shutdown, and the rollout goes on.
	opts.RolloutClock = nil
	again := brokertest.StartWith(t, opts)
	devs := httpGet(t, again.HTTPURL()+"/api/rollouts/"+id+"/devices", 200)
	states := map[string]int{}
	for _, d := range gjson.Get(devs, "devices").Array() {
		states[d.Get("state").String()]++
	}
	if states["notified"]+states["in_progress"] != n {
		t.Fatalf("after restart the rollout's devices are %v, want all %d notified or in progress", states, n)
	}
}
