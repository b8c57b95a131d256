package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// payload is a reported-state update of about size bytes.
func payload(seq int64, size int, token string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"state":{"reported":{"seq":`)
	b.WriteString(strconv.FormatInt(seq, 10))
	b.WriteString(`,"temp":21.5,"led_is_on":true`)
	tail := `}}`
	if token != "" {
		tail += `,"clientToken":"` + token + `"`
	}
	tail += `}`
	if pad := size - b.Len() - len(tail) - len(`,"pad":""`); pad > 0 {
		b.WriteString(`,"pad":"`)
		b.WriteString(strings.Repeat("x", pad))
		b.WriteByte('"')
	}
	b.WriteString(tail)
	return b.Bytes()
}

// connectAll connects n paho clients in parallel (16 at a time).
func (r *runner) connectAll(ctx context.Context, n int, id func(int) string, handler func(i int) paho.MessageHandler, filters func(int) []string) ([]paho.Client, error) {
	clients := make([]paho.Client, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range min(16, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := r.connectPaho(id(i), i, handler(i))
				if err == nil && filters != nil {
					if fs := filters(i); len(fs) > 0 {
						err = subscribe(c, r.opts.Timeout, fs...)
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				clients[i] = c
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		disconnectAll(clients)
		return nil, firstErr
	}
	return clients, nil
}

func disconnectAll(clients []paho.Client) {
	var wg sync.WaitGroup
	for _, c := range clients {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Disconnect(0)
		}()
	}
	wg.Wait()
}

// phase is the warm-up then measurement window of a scenario.
type phase struct{ start, measure, end time.Time }

func (r *runner) newPhase() phase {
	now := time.Now()
	p := phase{start: now, measure: now.Add(r.opts.Warmup)}
	p.end = p.measure.Add(r.opts.Duration)
	return p
}

// sampleAt takes a server sample at t (waiting for it with a timer).
func (r *runner) sampleAt(ctx context.Context, t time.Time) (sample, error) {
	if d := time.Until(t); d > 0 {
		tm := time.NewTimer(d)
		select {
		case <-tm.C:
		case <-ctx.Done():
			tm.Stop()
			return sample{}, ctx.Err()
		}
	}
	return r.probe.sample(ctx)
}

func (r *runner) runRaw(ctx context.Context) ([]Result, error) {
	res, err := r.closedLoop(ctx, false)
	if err != nil || r.opts.Rate <= 0 {
		return []Result{res}, err
	}
	// The same open loop as shadow-update's fixed-rate variant, on plain
	// topics: the broker's and this tool's own latency at that rate, the
	// floor under the shadow percentiles.
	fixed, err := r.fixedRate(ctx, false)
	return []Result{res, fixed}, err
}

func (r *runner) runShadowUpdate(ctx context.Context) ([]Result, error) {
	res, err := r.closedLoop(ctx, true)
	if err != nil {
		return []Result{res}, err
	}
	out := []Result{res}
	if r.opts.Rate > 0 {
		fixed, err := r.fixedRate(ctx, true)
		out = append(out, fixed)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// closedLoop: each client publishes QoS 1 and waits for its answer (its own
// message for raw, /update/accepted for shadows) before the next publish.
func (r *runner) closedLoop(ctx context.Context, shadowMode bool) (Result, error) {
	n := r.opts.Clients
	name, variant := Raw, "QoS 1 round trip"
	if shadowMode {
		name, variant = ShadowUpdate, "max rate (closed loop)"
	}
	r.progress("%s: connecting %d clients", name, n)
	replies := make([]chan bool, n)
	for i := range replies {
		replies[i] = make(chan bool, 4)
	}
	id := func(i int) string {
		return fmt.Sprintf("bench-%s-%d", map[bool]string{false: "raw", true: "dev"}[shadowMode], i)
	}
	pubTopic := func(i int) string {
		if shadowMode {
			return "$aws/things/" + id(i) + "/shadow/update"
		}
		return "bench/raw/" + strconv.Itoa(i)
	}
	handler := func(i int) paho.MessageHandler {
		return func(_ paho.Client, m paho.Message) {
			select {
			case replies[i] <- !strings.HasSuffix(m.Topic(), "/rejected"):
			default:
			}
		}
	}
	filters := func(i int) []string {
		if shadowMode {
			return []string{pubTopic(i) + "/accepted", pubTopic(i) + "/rejected"}
		}
		return []string{pubTopic(i)}
	}
	clients, err := r.connectAll(ctx, n, id, handler, filters)
	if err != nil {
		return Result{Scenario: name}, err
	}
	defer disconnectAll(clients)

	hist := newHistogram()
	var ops, errs, rejected atomic.Int64
	p := r.newPhase()
	r.progress("%s: %s warm-up, %s measured", name, r.opts.Warmup, r.opts.Duration)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := pubTopic(i)
			timer := time.NewTimer(r.opts.Timeout)
			defer timer.Stop()
			for seq := int64(0); ctx.Err() == nil; seq++ {
				t0 := time.Now()
				if !t0.Before(p.end) {
					return
				}
				c.Publish(topic, 1, false, payload(seq, r.opts.Payload, ""))
				timer.Reset(r.opts.Timeout)
				select {
				case ok := <-replies[i]:
					if !ok {
						rejected.Add(1) // warm-up included: any rejection fails the run
					}
					if t0.Before(p.measure) {
						continue
					}
					if !ok {
						errs.Add(1)
						continue
					}
					hist.record(time.Since(t0))
					ops.Add(1)
				case <-timer.C:
					errs.Add(1)
					return
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	a, err := r.sampleAt(ctx, p.measure)
	if err != nil {
		wg.Wait()
		return Result{Scenario: name}, err
	}
	b, err := r.sampleAt(ctx, p.end)
	wg.Wait()
	if err != nil {
		return Result{Scenario: name}, err
	}
	res := Result{
		Scenario: name, Variant: variant, Clients: n, Ops: ops.Load(), Errors: errs.Load(), Rejected: rejected.Load(),
		Seconds: r.opts.Duration.Seconds(), Latency: hist.latency(), Server: between(a, b),
	}
	res.PerSec = float64(res.Ops) / res.Seconds
	if shadowMode && res.Errors > 0 {
		res.Notes = append(res.Notes, "errors are rejected updates (for a target broker, usually 429 from its per-thing rate limit) or replies that never came")
	}
	r.progress("%s: %.0f/s, p99 %.2f ms", name, res.PerSec, res.Latency.P99)
	return res, nil
}

// sendTick is how often the fixed-rate sender looks for updates that are
// due. An update is sent up to one tick after its intended time, and that
// delay is counted in its latency (against the broker).
const sendTick = 200 * time.Microsecond

// dueBy is how many updates are due once elapsed has passed since the
// start at rate per second: update seq is intended at seq/rate, so those
// with seq ≤ elapsed×rate (update 0 at once).
//
// It was floor(elapsed×rate), one short: each update went out a whole
// period (1/rate) after its intended time, and that period was counted as
// latency (1 ms at 1,000/s, 5 ms at 200/s).
func dueBy(elapsed time.Duration, rate float64) int64 {
	if elapsed < 0 {
		return 0
	}
	return int64(elapsed.Seconds()*rate) + 1
}

// fixedRate offers Rate shadow updates (or, for raw, plain QoS 1 messages
// each client gets back) per second in total, spread over RateClients
// devices in turn, without waiting for answers (open loop).
// Latency runs from each update's intended send time, so a stalled broker
// or client shows up in the figures (no coordinated omission).
func (r *runner) fixedRate(ctx context.Context, shadowMode bool) (Result, error) {
	n, rate := r.opts.RateClients, r.opts.Rate
	name := ShadowUpdate
	if !shadowMode {
		name = Raw
	}
	variant := fmt.Sprintf("fixed %g/s", rate)
	r.progress("%s: connecting %d clients for %g updates/s", name, n, rate)
	type pend struct {
		mu sync.Mutex
		m  map[string]time.Time
	}
	pending := make([]*pend, n)
	for i := range pending {
		pending[i] = &pend{m: map[string]time.Time{}}
	}
	hist := newHistogram()
	var ops, errs, outstanding, rejected atomic.Int64
	var p phase
	id := func(i int) string { return "bench-rate-" + strconv.Itoa(i) }
	topic := func(i int) string { return "$aws/things/" + id(i) + "/shadow/update" }
	if !shadowMode {
		id = func(i int) string { return "bench-raw-rate-" + strconv.Itoa(i) }
		topic = func(i int) string { return "bench/rate/" + strconv.Itoa(i) }
	}
	handler := func(i int) paho.MessageHandler {
		return func(_ paho.Client, m paho.Message) {
			now := time.Now()
			tok := clientToken(m.Payload())
			pd := pending[i]
			pd.mu.Lock()
			intended, ok := pd.m[tok]
			delete(pd.m, tok)
			pd.mu.Unlock()
			if !ok {
				return
			}
			outstanding.Add(-1)
			isRejected := strings.HasSuffix(m.Topic(), "/rejected")
			if isRejected {
				rejected.Add(1) // warm-up included: any rejection fails the run
			}
			if intended.Before(p.measure) || !intended.Before(p.end) {
				return
			}
			if isRejected {
				errs.Add(1)
				return
			}
			hist.record(now.Sub(intended))
			ops.Add(1)
		}
	}
	filters := func(i int) []string {
		if !shadowMode {
			return []string{topic(i)} // its own messages come back
		}
		return []string{topic(i) + "/accepted", topic(i) + "/rejected"}
	}
	clients, err := r.connectAll(ctx, n, id, handler, filters)
	if err != nil {
		return Result{Scenario: name, Variant: variant}, err
	}
	defer disconnectAll(clients)
	topics := make([]string, n)
	for i := range topics {
		topics[i] = topic(i)
	}

	p = r.newPhase()
	r.progress("%s: %s warm-up, %s measured at %g/s", name, r.opts.Warmup, r.opts.Duration, rate)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(sendTick)
		defer tick.Stop()
		var seq int64
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if !now.Before(p.end) {
					return
				}
				due := dueBy(now.Sub(p.start), rate)
				for ; seq < due; seq++ {
					i := int(seq % int64(n))
					intended := p.start.Add(time.Duration(float64(seq) / rate * float64(time.Second)))
					tok := strconv.FormatInt(seq, 10)
					pd := pending[i]
					pd.mu.Lock()
					pd.m[tok] = intended
					pd.mu.Unlock()
					outstanding.Add(1)
					clients[i].Publish(topics[i], 1, false, payload(seq, r.opts.Payload, tok))
				}
			}
		}
	}()
	a, err := r.sampleAt(ctx, p.measure)
	if err != nil {
		<-done
		return Result{Scenario: name, Variant: variant}, err
	}
	b, err := r.sampleAt(ctx, p.end)
	<-done
	if err != nil {
		return Result{Scenario: name, Variant: variant}, err
	}
	// Let the last answers arrive.
	deadline := time.Now().Add(r.opts.Timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	for outstanding.Load() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		<-tick.C
	}
	tick.Stop()
	res := Result{
		Scenario: name, Variant: variant, Clients: n, Ops: ops.Load(), Errors: errs.Load() + outstanding.Load(), Rejected: rejected.Load(),
		Seconds: r.opts.Duration.Seconds(), TargetRate: rate, Latency: hist.latency(), Server: between(a, b),
	}
	res.PerSec = float64(res.Ops) / res.Seconds
	r.progress("%s: %.0f/s of %g/s offered, p99 %.2f ms", name, res.PerSec, rate, res.Latency.P99)
	return res, nil
}

// clientToken finds "clientToken":"…" in a reply.
func clientToken(p []byte) string {
	const key = `"clientToken":"`
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return ""
	}
	rest := p[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// runFanout: FanoutApps app connections set desired state on FanoutDevices
// devices, round after round; each device's delta latency is from the app's
// publish to the delta's arrival. Round 0 (which creates the shadows) is
// not measured.
func (r *runner) runFanout(ctx context.Context) ([]Result, error) {
	n, apps, rounds := r.opts.FanoutDevices, r.opts.FanoutApps, r.opts.FanoutRounds
	name := DeltaFanout
	r.progress("%s: connecting %d devices and %d apps", name, n, apps)
	sent := make([]atomic.Int64, n)  // unix ns of the app's publish
	round := make([]atomic.Int64, n) // last round received
	var current atomic.Int64
	var remaining atomic.Int64
	roundDone := make(chan struct{}, 1)
	hist := newHistogram()
	measuring := atomic.Bool{}
	id := func(i int) string { return "bench-fan-" + strconv.Itoa(i) }
	handler := func(i int) paho.MessageHandler {
		return func(_ paho.Client, m paho.Message) {
			now := time.Now()
			rd := roundOf(m.Payload())
			if rd != current.Load() || round[i].Swap(rd) == rd {
				return
			}
			if measuring.Load() {
				hist.record(now.Sub(time.Unix(0, sent[i].Load())))
			}
			if remaining.Add(-1) == 0 {
				select {
				case roundDone <- struct{}{}:
				default:
				}
			}
		}
	}
	devices, err := r.connectAll(ctx, n, id, handler, func(i int) []string {
		return []string{"$aws/things/" + id(i) + "/shadow/update/delta"}
	})
	if err != nil {
		return []Result{{Scenario: name}}, err
	}
	defer disconnectAll(devices)
	appClients, err := r.connectAll(ctx, apps, func(i int) string { return "bench-app-" + strconv.Itoa(i) },
		func(int) paho.MessageHandler { return func(paho.Client, paho.Message) {} }, nil)
	if err != nil {
		return []Result{{Scenario: name}}, err
	}
	defer disconnectAll(appClients)

	var measured time.Duration
	var a sample
	var errs int64
	var delivered int64
	for rd := int64(0); rd <= int64(rounds); rd++ {
		if rd == 1 {
			measuring.Store(true)
			if a, err = r.probe.sample(ctx); err != nil {
				return []Result{{Scenario: name}}, err
			}
		}
		current.Store(rd)
		remaining.Store(int64(n))
		select {
		case <-roundDone:
		default:
		}
		start := time.Now()
		var wg sync.WaitGroup
		for ai, app := range appClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var last paho.Token
				for j := ai; j < n; j += apps {
					p := []byte(fmt.Sprintf(`{"state":{"desired":{"led_is_on":%t,"round":%d}}}`, rd%2 == 1, rd))
					sent[j].Store(time.Now().UnixNano())
					last = app.Publish("$aws/things/"+id(j)+"/shadow/update", 1, false, p)
				}
				if last != nil {
					last.WaitTimeout(r.opts.Timeout)
				}
			}()
		}
		wg.Wait()
		t := time.NewTimer(r.opts.Timeout + time.Duration(n)*time.Millisecond)
		select {
		case <-roundDone:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return []Result{{Scenario: name}}, ctx.Err()
		}
		t.Stop()
		el := time.Since(start)
		missing := remaining.Load()
		if rd > 0 {
			measured += el
			errs += missing
			delivered += int64(n) - missing
		}
		r.progress("%s: round %d: %d deltas in %s (%d missing)", name, rd, int64(n)-missing, el.Round(time.Millisecond), missing)
	}
	b, err := r.probe.sample(ctx)
	if err != nil {
		return []Result{{Scenario: name}}, err
	}
	res := Result{
		Scenario: name, Variant: fmt.Sprintf("%d apps → %d devices × %d rounds", apps, n, rounds),
		Clients: n + apps, Ops: delivered, Errors: errs, Seconds: measured.Seconds(),
		Latency: hist.latency(), Server: between(a, b),
	}
	if res.Seconds > 0 {
		res.PerSec = float64(res.Ops) / res.Seconds
	}
	res.Notes = append(res.Notes, fmt.Sprintf("a round (desired set on every device until the last delta arrives) took %.0f ms on average", measured.Seconds()*1000/float64(rounds)))
	return []Result{res}, nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// roundOf reads "round":N from a delta (the first occurrence is in state).
func roundOf(p []byte) int64 {
	const key = `"round":`
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return -1
	}
	rest := p[i+len(key):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	v, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return -1
	}
	return v
}

// runConnections connects Conns idle devices (raw MQTT sockets, each
// subscribed to its delta topic unless ConnNoSub), reports the connect rate
// and latency and the broker's memory per connection, then closes them.
func (r *runner) runConnections(ctx context.Context) ([]Result, error) {
	n, workers := r.opts.Conns, r.opts.ConnWorkers
	name := Connections
	r.progress("%s: connecting %d idle devices, %d at a time, from %d source address(es)", name, n, workers, max(1, len(r.dialers)))
	settle := func() {
		if r.inProcess != nil {
			for range 3 {
				runtime.GC()
			}
			return
		}
		// A remote broker settles on its own; give its GC a moment.
		t := time.NewTimer(3 * time.Second)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	settle()
	a, err := r.probe.sample(ctx)
	if err != nil {
		return []Result{{Scenario: name}}, err
	}
	conns := make([]*rawConn, n)
	defer func() {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					if conns[i] != nil {
						conns[i].Close()
					}
				}
			}()
		}
		wg.Wait()
	}()
	hist := newHistogram()
	var next, ok, errs atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		prev := int64(0)
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				c := ok.Load()
				r.progress("%s: %d/%d connected (%d/s), %d errors", name, c, n, c-prev, errs.Load())
				prev = c
			}
		}
	}()
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				cid := "bench-conn-" + strconv.Itoa(i)
				sub := "$aws/things/" + cid + "/shadow/update/delta"
				if r.opts.ConnNoSub {
					sub = ""
				}
				t0 := time.Now()
				c, err := r.dialRaw(cid, i, sub)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				hist.record(time.Since(t0))
				conns[i] = c
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	close(stopProgress)
	<-progressDone
	settle()
	b, err := r.probe.sample(ctx)
	if err != nil {
		return []Result{{Scenario: name}}, err
	}
	if r.opts.MemProfile != "" {
		if err := writeHeapProfile(r.opts.MemProfile); err != nil {
			return []Result{{Scenario: name}}, err
		}
	}
	res := Result{
		Scenario: name, Variant: "idle, subscribed to delta", Clients: n, Ops: ok.Load(), Errors: errs.Load(),
		Seconds: el.Seconds(), Latency: hist.latency(), Server: between(a, b),
	}
	if r.opts.ConnNoSub {
		res.Variant = "idle, no subscription"
	}
	res.PerSec = float64(res.Ops) / el.Seconds()
	if res.Ops > 0 {
		res.RSSPerConn = float64(b.rss-a.rss) / float64(res.Ops)
		if b.heap > 0 {
			res.HeapStackPerConn = float64(b.heap+b.stacks-a.heap-a.stacks) / float64(res.Ops)
		}
	}
	if e, _ := firstErr.Load().(string); e != "" {
		res.Notes = append(res.Notes, "first connection error: "+e)
	}
	if r.inProcess != nil {
		res.Notes = append(res.Notes, "in-process: per-connection memory includes the bench's own socket (a few hundred bytes); use --target for the broker alone")
	}
	r.progress("%s: %d connected in %s (%.0f/s), %.1f KiB RSS per connection", name, res.Ops, el.Round(time.Millisecond), res.PerSec, res.RSSPerConn/1024)
	if r.opts.ConnHold > 0 {
		r.progress("%s: holding the connections for %s", name, r.opts.ConnHold)
		t := time.NewTimer(r.opts.ConnHold)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return []Result{res}, nil
}
