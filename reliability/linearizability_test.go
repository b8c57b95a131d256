package reliability

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/shadow"
)

var (
	linDuration = flag.Duration("lin.duration", 1500*time.Millisecond, "length of each linearizability history")
	linSeed     = flag.Uint64("lin.seed", 0, "seed of the linearizability workload (0: from the clock)")
	linRestarts = flag.Int("lin.restarts", 1, "broker restarts, evenly spaced, in TestLinearizableAcrossRestart")
)

// The shadows of the linearizability test: few, so that clients contend.
var linRefs = [linShadows]shadow.Ref{{Thing: "lin-0"}, {Thing: "lin-1"}, {Thing: "lin-0", Name: "cfg"}}

const linShadows = 3

// linKeys are the keys of the small flat reported state the model tracks.
var linKeys = [...]string{"a", "b", "c"}

const (
	absent  int8 = -2 // key not in the patch / not in the state
	nullVal int8 = -1 // patch value null: delete the key
)

// linInput is one operation as called.
type linInput struct {
	op         shadow.Op
	ref        int // index in linRefs
	patch      [len(linKeys)]int8
	hasVersion bool
	version    int64
}

// linOutput is what came back. code 0 means no answer (lost in a restart):
// the operation may or may not have taken effect; so may one answered 500
// Internal service failure, as far as a client can know.
type linOutput struct {
	code    int
	version int64
	state   [len(linKeys)]int8 // get only
}

// linState is the model of one shadow.
type linState struct {
	exists  bool
	version int64 // the current version, or the tombstone's when !exists (0: never existed)
	vals    [len(linKeys)]int8
}

// shadowModel is the sequential specification of one shadow, as Umbra
// documents it (shadow/doc.go): every accepted update increments the version
// and merges its flat patch (null deletes a key); "version" must equal the
// current version (else 409 Version conflict), or for an absent shadow the
// version it will be created with, tombstone+1, or the tombstone's own
// version T > 0 as AWS device SDKs send it after their delete (else 400
// Invalid version);
// get and delete of an absent shadow are 404; delete keeps the version in a
// tombstone and the next update continues from it; an empty patch
// ("reported": {}) clears reported, as Umbra documents. A 429 (rate limit)
// changes nothing; a 500 may or may not have.
var shadowModel = porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		parts := make([][]porcupine.Operation, len(linRefs))
		for _, op := range h {
			i := op.Input.(linInput).ref
			parts[i] = append(parts[i], op)
		}
		var out [][]porcupine.Operation
		for _, p := range parts {
			if len(p) > 0 {
				out = append(out, p)
			}
		}
		return out
	},
	Init: func() []any { return []any{linState{}} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(linState), input.(linInput), output.(linOutput)
		if out.code == 429 {
			return []any{s}
		}
		next, want := linApply(s, in)
		if out.code == 0 || out.code == 500 { // unknown (no answer, or an internal failure): applied or not
			if want.code == 200 && in.op != shadow.OpGet {
				return []any{s, next}
			}
			return []any{s}
		}
		if out.code != want.code || out.code == 200 && out.version != want.version ||
			in.op == shadow.OpGet && out.code == 200 && out.state != want.state {
			return nil
		}
		return []any{next}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		s := fmt.Sprintf("%s(%s", in.op, linRefs[in.ref])
		if in.op == shadow.OpUpdate {
			s += " " + describeVals(in.patch)
			if in.hasVersion {
				s += fmt.Sprintf(" version=%d", in.version)
			}
		}
		s += fmt.Sprintf(") → %d", out.code)
		if out.code == 200 {
			s += fmt.Sprintf(" v%d", out.version)
			if in.op == shadow.OpGet {
				s += " " + describeVals(out.state)
			}
		}
		return s
	},
	DescribeState: func(state any) string {
		s := state.(linState)
		if !s.exists {
			return fmt.Sprintf("absent (tombstone v%d)", s.version)
		}
		return fmt.Sprintf("v%d %s", s.version, describeVals(s.vals))
	},
}

// linApply is the sequential behaviour: the next state and the expected output.
func linApply(s linState, in linInput) (linState, linOutput) {
	switch in.op {
	case shadow.OpGet:
		if !s.exists {
			return s, linOutput{code: 404}
		}
		return s, linOutput{code: 200, version: s.version, state: s.vals}
	case shadow.OpDelete:
		if !s.exists {
			return s, linOutput{code: 404}
		}
		return linState{version: s.version}, linOutput{code: 200, version: s.version}
	}
	if in.hasVersion {
		if s.exists && in.version != s.version {
			return s, linOutput{code: 409}
		}
		if !s.exists && in.version != s.version+1 && (s.version == 0 || in.version != s.version) {
			return s, linOutput{code: 400}
		}
	}
	next := linState{exists: true, version: s.version + 1, vals: s.vals}
	if !s.exists || in.patch == [len(linKeys)]int8{absent, absent, absent} {
		// "reported": {} clears reported, like null (shadow/doc.go).
		next.vals = [len(linKeys)]int8{absent, absent, absent}
	}
	for i, p := range in.patch {
		switch p {
		case absent:
		case nullVal:
			next.vals[i] = absent
		default:
			next.vals[i] = p
		}
	}
	return next, linOutput{code: 200, version: next.version}
}

func describeVals(v [len(linKeys)]int8) string {
	var parts []string
	for i, x := range v {
		switch x {
		case absent:
		case nullVal:
			parts = append(parts, linKeys[i]+":null")
		default:
			parts = append(parts, fmt.Sprintf("%s:%d", linKeys[i], x))
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// TestLinearizable records concurrent get/update/delete histories on a few
// shadows from MQTT and HTTP clients of an in-process broker, and checks
// them with porcupine against shadowModel.
func TestLinearizable(t *testing.T) {
	runLinearizability(t, false)
}

// TestLinearizableAcrossRestart is the same with the broker restarted (on the
// same data) in the middle of the history (-lin.restarts times, evenly
// spaced); requests whose answer a restart swallowed may or may not have
// taken effect.
func TestLinearizableAcrossRestart(t *testing.T) {
	runLinearizability(t, true)
}

// linTarget is the broker the clients talk to; it changes at a restart.
type linTarget struct {
	mu    sync.Mutex
	srv   *brokertest.Server
	ready chan struct{} // closed while srv is serving
}

func (lt *linTarget) get(ctx context.Context) (*brokertest.Server, bool) {
	for {
		lt.mu.Lock()
		srv, ready := lt.srv, lt.ready
		lt.mu.Unlock()
		select {
		case <-ready:
			return srv, true
		case <-ctx.Done():
			return nil, false
		}
	}
}

// linRecorder collects the history.
type linRecorder struct {
	mu  sync.Mutex
	t0  time.Time
	ops []porcupine.Operation
}

func (r *linRecorder) now() int64 { return int64(time.Since(r.t0)) }

func (r *linRecorder) add(client int, in linInput, out linOutput, call, ret int64) {
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	r.mu.Unlock()
}

func runLinearizability(t *testing.T, restart bool) {
	seed := *linSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("lin seed %d", seed)
	srv := brokertest.Start(t, noShadowLimits, func(o *broker.Options) { o.WSAddr = broker.Off })
	lt := &linTarget{srv: srv, ready: make(chan struct{})}
	close(lt.ready)
	rec := &linRecorder{t0: time.Now()}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const mqttClients, httpClients = 4, 4
	var wg sync.WaitGroup
	for c := range mqttClients + httpClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &linWorker{t: t, id: c, lt: lt, rec: rec, rng: rand.New(rand.NewPCG(seed, uint64(c))), prefix: fmt.Sprintf("L-%d-", c)}
			if c < mqttClients {
				w.runMQTT(ctx)
			} else {
				w.runHTTP(ctx)
			}
		}()
	}
	if restart {
		n := max(*linRestarts, 1)
		for range n {
			<-time.After(*linDuration / time.Duration(n+1)) // the schedule: evenly spaced restarts
			lt.mu.Lock()
			lt.ready = make(chan struct{})
			old := lt.srv
			lt.mu.Unlock()
			next := old.Restart(t)
			lt.mu.Lock()
			lt.srv = next
			close(lt.ready)
			lt.mu.Unlock()
		}
		<-time.After(*linDuration / time.Duration(n+1))
	} else {
		<-time.After(*linDuration)
	}
	cancel()
	wg.Wait()
	checkLinearizable(t, rec.ops)
}

type linWorker struct {
	t      *testing.T
	id     int
	lt     *linTarget
	rec    *linRecorder
	rng    *rand.Rand
	prefix string
	seq    int
	last   [linShadows]int64 // last version this client saw per shadow (for versioned updates)
	gone   [linShadows]bool  // last seen absent
	// open500 records a request answered 500 as open-ended: on a cluster
	// node a 500 can be a JetStream acknowledgement that timed out, and the
	// write may land after the answer.
	open500 bool
	fails   *atomic.Int64 // requests answered 500 (with open500)
}

// next draws the next operation: gets, updates with and without version,
// deletes.
func (w *linWorker) next() linInput {
	in := linInput{ref: w.rng.IntN(len(linRefs))}
	switch n := w.rng.IntN(100); {
	case n < 35:
		in.op = shadow.OpGet
	case n < 88:
		in.op = shadow.OpUpdate
		for i := range in.patch {
			switch m := w.rng.IntN(10); {
			case m < 5:
				in.patch[i] = absent
			case m < 6:
				in.patch[i] = nullVal
			default:
				in.patch[i] = int8(w.rng.IntN(10))
			}
		}
		if w.rng.IntN(2) == 0 {
			in.hasVersion = true
			in.version = w.last[in.ref]
			if w.gone[in.ref] {
				in.version++ // creating after a delete: tombstone+1
			}
			if w.rng.IntN(8) == 0 {
				in.version += int64(w.rng.IntN(3)) - 1 // sometimes off by one
			}
			in.version = max(in.version, 0)
		}
	default:
		in.op = shadow.OpDelete
	}
	return in
}

func (w *linWorker) observe(in linInput, out linOutput) {
	switch {
	case out.code == 200 && in.op == shadow.OpDelete:
		w.last[in.ref], w.gone[in.ref] = out.version, true
	case out.code == 200:
		w.last[in.ref], w.gone[in.ref] = out.version, false
	case out.code == 404:
		w.gone[in.ref] = true
	}
}

func (w *linWorker) payload(in linInput, token string) []byte {
	var b strings.Builder
	if in.op == shadow.OpUpdate {
		b.WriteString(`{"state":{"reported":{`)
		first := true
		for i, p := range in.patch {
			if p == absent {
				continue
			}
			if !first {
				b.WriteByte(',')
			}
			first = false
			if p == nullVal {
				fmt.Fprintf(&b, `"%s":null`, linKeys[i])
			} else {
				fmt.Fprintf(&b, `"%s":%d`, linKeys[i], p)
			}
		}
		b.WriteString(`}}`)
		if in.hasVersion {
			fmt.Fprintf(&b, `,"version":%d`, in.version)
		}
		if token != "" {
			fmt.Fprintf(&b, `,"clientToken":%q`, token)
		}
		b.WriteByte('}')
		return []byte(b.String())
	}
	if token == "" {
		return nil
	}
	return fmt.Appendf(nil, `{"clientToken":%q}`, token)
}

// parseOutput reads an accepted or rejected payload.
func parseOutput(t *testing.T, in linInput, accepted bool, payload []byte) linOutput {
	if !accepted {
		return linOutput{code: int(gjson.GetBytes(payload, "code").Int())}
	}
	out := linOutput{code: 200, version: gjson.GetBytes(payload, "version").Int()}
	if in.op == shadow.OpGet {
		out.state = [len(linKeys)]int8{absent, absent, absent}
		gjson.GetBytes(payload, "state.reported").ForEach(func(k, v gjson.Result) bool {
			for i, name := range linKeys {
				if k.String() == name {
					out.state[i] = int8(v.Int())
					return true
				}
			}
			t.Errorf("unexpected reported key %s in %s", k, payload)
			return true
		})
	}
	return out
}

type reply struct {
	token    string
	accepted bool
	payload  []byte
}

func (w *linWorker) runMQTT(ctx context.Context) {
	for ctx.Err() == nil {
		srv, ok := w.lt.get(ctx)
		if !ok {
			return
		}
		replies := make(chan reply, 64)
		lost := make(chan struct{})
		var lostOnce sync.Once
		c, err := mt.TryConnect(srv.MQTTURL(), w.prefix+"mqtt", func(o *paho.ClientOptions) {
			o.SetConnectionLostHandler(func(paho.Client, error) { lostOnce.Do(func() { close(lost) }) })
		})
		if err != nil {
			// The broker is going down for the restart: wait for the next.
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		filters := map[string]byte{}
		for _, r := range linRefs {
			filters[r.Prefix()+"/+/accepted"] = 1
			filters[r.Prefix()+"/+/rejected"] = 1
		}
		tok := c.SubscribeMultiple(filters, func(_ paho.Client, m paho.Message) {
			token := gjson.GetBytes(m.Payload(), "clientToken").String()
			if strings.HasPrefix(token, w.prefix) {
				replies <- reply{token, strings.HasSuffix(m.Topic(), "/accepted"), m.Payload()}
			}
		})
		if !tok.WaitTimeout(mt.Wait) || tok.Error() != nil {
			c.Disconnect(0)
			continue
		}
		w.mqttLoop(ctx, c, replies, lost)
		c.Disconnect(0)
	}
}

func (w *linWorker) mqttLoop(ctx context.Context, c paho.Client, replies chan reply, lost <-chan struct{}) {
	for ctx.Err() == nil {
		in := w.next()
		w.seq++
		token := fmt.Sprintf("%s%d", w.prefix, w.seq)
		call := w.rec.now()
		pt := c.Publish(linRefs[in.ref].Topic(in.op, shadow.SuffixNone), 1, false, w.payload(in, token))
		if pt.WaitTimeout(0) && errors.Is(pt.Error(), paho.ErrNotConnected) {
			return // refused before sending: it never reached the broker
		}
	wait:
		for {
			select {
			case r := <-replies:
				if r.token != token {
					continue // a late reply to an earlier request
				}
				out := parseOutput(w.t, in, r.accepted, r.payload)
				if w.open500 && out.code == 500 {
					w.unknown(in, call)
					w.fails.Add(1)
					break wait
				}
				w.rec.add(w.id, in, out, call, w.rec.now())
				w.observe(in, out)
				break wait
			case <-lost:
				w.unknown(in, call)
				return
			case <-time.After(mt.Wait):
				w.t.Errorf("%s: no reply to %s within %v", w.prefix, token, mt.Wait)
				w.unknown(in, call)
				return
			}
		}
	}
}

// unknown records an operation whose answer never came.
func (w *linWorker) unknown(in linInput, call int64) {
	if in.op == shadow.OpGet {
		return // a read without an answer constrains nothing
	}
	w.rec.add(w.id, in, linOutput{}, call, -1) // return time set at the end
}

func (w *linWorker) runHTTP(ctx context.Context) {
	for ctx.Err() == nil {
		srv, ok := w.lt.get(ctx)
		if !ok {
			return
		}
		in := w.next()
		method := map[shadow.Op]string{shadow.OpGet: "GET", shadow.OpUpdate: "POST", shadow.OpDelete: "DELETE"}[in.op]
		var body []byte
		if in.op == shadow.OpUpdate {
			w.seq++
			body = w.payload(in, fmt.Sprintf("%s%d", w.prefix, w.seq))
		}
		call := w.rec.now()
		rctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
		code, resp, err := httpDo(rctx, method, shadowURL(srv.HTTPURL(), linRefs[in.ref], ""), body)
		cancel()
		if err != nil {
			if !errors.Is(err, syscall.ECONNREFUSED) {
				w.unknown(in, call) // it may have run before the connection broke
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond): // pacing while the broker restarts
			}
			continue
		}
		var out linOutput
		if code == 200 {
			out = parseOutput(w.t, in, true, resp)
		} else {
			out = parseOutput(w.t, in, false, resp)
			if out.code != code {
				w.t.Errorf("HTTP %d with body code %d: %s", code, out.code, resp)
			}
		}
		w.rec.add(w.id, in, out, call, w.rec.now())
		w.observe(in, out)
	}
}

func checkLinearizable(t *testing.T, ops []porcupine.Operation) {
	t.Helper()
	var end int64
	counts := map[string]int{}
	for _, op := range ops {
		end = max(end, op.Return, op.Call)
		in, out := op.Input.(linInput), op.Output.(linOutput)
		counts[fmt.Sprintf("%s %d", in.op, out.code)]++
		if in.op == shadow.OpUpdate && in.hasVersion && out.code == 200 {
			counts["update-with-version 200"]++
		}
	}
	for i := range ops {
		if ops[i].Return < 0 {
			ops[i].Return = end + int64(time.Second) // open-ended: concurrent with everything after its call
		}
	}
	if counts["update 200"] == 0 || counts["get 200"] == 0 {
		t.Fatalf("history has no accepted update or get: %v", counts)
	}
	model := shadowModel.ToModel()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, ops, time.Minute)
	t.Logf("linearizability: %d operations on %d shadows checked in %v: %v; outcomes %v",
		len(ops), len(linRefs), time.Since(start).Round(time.Millisecond), res, counts)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		dir, err := os.MkdirTemp("", "umbra-lin-")
		if err == nil {
			path := filepath.Join(dir, "history.html")
			if err := porcupine.VisualizePath(model, info, path); err == nil {
				t.Logf("visualisation of the failing history: %s", path)
			}
		}
		t.Fatal("history is not linearizable")
	default:
		t.Fatal("porcupine could not decide within a minute")
	}
}

// TestShadowModelCatchesAnomalies shows the checker has teeth: hand-made
// histories with a stale read, a lost update, a version reset by delete and
// a 409 that should have been accepted are rejected; legal concurrent and
// unknown outcomes are accepted.
func TestShadowModelCatchesAnomalies(t *testing.T) {
	a := func(v int8) [len(linKeys)]int8 { return [len(linKeys)]int8{v, absent, absent} }
	upd := func(v int8) linInput { return linInput{op: shadow.OpUpdate, patch: a(v)} }
	get := linInput{op: shadow.OpGet}
	del := linInput{op: shadow.OpDelete}
	op := func(client int, in linInput, out linOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
	}
	ok200 := func(v int64) linOutput { return linOutput{code: 200, version: v} }
	for _, c := range []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"stale read", []porcupine.Operation{
			op(0, upd(1), ok200(1), 0, 10), op(0, upd(2), ok200(2), 20, 30),
			op(1, get, linOutput{code: 200, version: 1, state: a(1)}, 40, 50)}, porcupine.Illegal},
		{"lost update: two updates get the same version", []porcupine.Operation{
			op(0, upd(1), ok200(1), 0, 10), op(1, upd(2), ok200(1), 0, 10)}, porcupine.Illegal},
		{"delete resets the version", []porcupine.Operation{
			op(0, upd(1), ok200(1), 0, 10), op(0, del, ok200(1), 20, 30), op(0, upd(2), ok200(1), 40, 50)}, porcupine.Illegal},
		{"409 although the version matched", []porcupine.Operation{
			op(0, upd(1), ok200(1), 0, 10), op(0, linInput{op: shadow.OpUpdate, patch: a(2), hasVersion: true, version: 1}, linOutput{code: 409}, 20, 30)}, porcupine.Illegal},
		{"get sees a write that has not started", []porcupine.Operation{
			op(1, get, linOutput{code: 200, version: 1, state: a(1)}, 0, 10), op(0, upd(1), ok200(1), 20, 30)}, porcupine.Illegal},
		{"concurrent updates in either order", []porcupine.Operation{
			op(0, upd(1), ok200(2), 0, 10), op(1, upd(2), ok200(1), 0, 10),
			op(2, get, linOutput{code: 200, version: 2, state: a(1)}, 20, 30)}, porcupine.Ok},
		{"recreation continues from the tombstone", []porcupine.Operation{
			op(0, upd(1), ok200(1), 0, 10), op(0, del, ok200(1), 20, 30), op(0, get, linOutput{code: 404}, 40, 50),
			op(0, linInput{op: shadow.OpUpdate, patch: a(3), hasVersion: true, version: 2}, ok200(2), 60, 70)}, porcupine.Ok},
		{"recreation with the tombstone's own version (AWS SDKs after their delete)", []porcupine.Operation{
			op(0, upd(1), ok200(1), 0, 10), op(0, del, ok200(1), 20, 30),
			op(0, linInput{op: shadow.OpUpdate, patch: a(3), hasVersion: true, version: 1}, ok200(2), 60, 70)}, porcupine.Ok},
		{"a never-existing shadow accepts only version 1", []porcupine.Operation{
			op(0, linInput{op: shadow.OpUpdate, patch: a(3), hasVersion: true, version: 0}, ok200(1), 0, 10)}, porcupine.Illegal},
		{"unknown outcome, applied", []porcupine.Operation{
			op(0, upd(1), linOutput{}, 0, 1000), op(1, get, linOutput{code: 200, version: 1, state: a(1)}, 20, 30)}, porcupine.Ok},
		{"unknown outcome, not applied", []porcupine.Operation{
			op(0, upd(1), linOutput{}, 0, 1000), op(1, get, linOutput{code: 404}, 20, 30)}, porcupine.Ok},
	} {
		if got := porcupine.CheckOperationsTimeout(shadowModel.ToModel(), c.ops, 10*time.Second); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
