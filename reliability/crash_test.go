package reliability

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/umbra-iot/umbra/brokertest"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/shadow"
)

var (
	crashCycles  = flag.Int("crash.cycles", 4, "kill -9 cycles of TestCrashConsistency (long mode: 50 or more)")
	crashSeed    = flag.Uint64("crash.seed", 0, "seed of the crash schedule and of the load (0: from the clock; the seed is logged)")
	crashMaxLoad = flag.Duration("crash.maxload", 1200*time.Millisecond, "longest load phase before a kill")
)

// Shadows written by the crash test: classic and named, shared by every
// writer so that concurrent writers interleave on each. There are enough of
// them for real load under the default per-thing rate limit (20/s).
var crashRefs = func() []shadow.Ref {
	var refs []shadow.Ref
	for i := range 16 {
		refs = append(refs, shadow.Ref{Thing: fmt.Sprintf("crash-%d", i)})
	}
	for i := range 4 {
		refs = append(refs, shadow.Ref{Thing: fmt.Sprintf("crash-%d", i), Name: "cfg"})
	}
	return refs
}()

// crashBudget is how many requests one shadow gets per cycle. The broker
// keeps the last 100 versions of history (the default), so every version
// made since the previous check is still in history at the next one.
const crashBudget = 90

type opKind string

const (
	kindUpdate opKind = "update"
	kindDelete opKind = "delete"
)

// crashOp is one request sent during the crash test and what became of it.
type crashOp struct {
	ref     shadow.Ref
	kind    opKind
	via     string // "mqtt" or "http"
	token   string // "" for HTTP deletes, which have no body
	payload []byte
	cycle   int

	acked    bool  // accepted / HTTP 200 received
	version  int64 // the version the reply named
	rejected bool
	code     int
	matched  bool  // found in history
	histVer  int64 // the version history has it at
}

// ledger records every request and its reply; safe for concurrent use.
type ledger struct {
	mu      sync.Mutex
	byToken map[string]*crashOp
	ops     []*crashOp
	budget  map[shadow.Ref]int
	lastVer map[shadow.Ref]int64 // highest acknowledged version, for versioned updates
}

func newLedger() *ledger {
	return &ledger{byToken: map[string]*crashOp{}, budget: map[shadow.Ref]int{}, lastVer: map[shadow.Ref]int64{}}
}

func (l *ledger) newCycle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range crashRefs {
		l.budget[r] = crashBudget
	}
}

// reserve picks a shadow that still has budget this cycle.
func (l *ledger) reserve(rng *rand.Rand) (shadow.Ref, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	start := rng.IntN(len(crashRefs))
	for i := range crashRefs {
		r := crashRefs[(start+i)%len(crashRefs)]
		if l.budget[r] > 0 {
			l.budget[r]--
			return r, true
		}
	}
	return shadow.Ref{}, false
}

func (l *ledger) add(op *crashOp) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops = append(l.ops, op)
	if op.token != "" {
		l.byToken[op.token] = op
	}
}

func (l *ledger) code(op *crashOp) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return op.code
}

func (l *ledger) lastVersion(r shadow.Ref) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastVer[r]
}

// reply records an accepted (version) or rejected (code) reply for op.
func (l *ledger) reply(t testing.TB, op *crashOp, accepted bool, version int64, code int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if accepted {
		if op.rejected || (op.acked && op.version != version) {
			t.Errorf("%s %s %q: contradictory replies (accepted v%d after %+v)", op.via, op.kind, op.token, version, *op)
		}
		op.acked, op.version = true, version
		if op.kind == kindUpdate {
			l.lastVer[op.ref] = max(l.lastVer[op.ref], version)
		}
		return
	}
	if op.acked {
		t.Errorf("%s %s %q: rejected (%d) after being accepted", op.via, op.kind, op.token, code)
	}
	op.rejected, op.code = true, code
}

// refund gives back the budget of a request refused with 429: it changed
// nothing.
func (l *ledger) refund(r shadow.Ref) {
	l.mu.Lock()
	l.budget[r]++
	l.mu.Unlock()
}

// throttled paces a worker after a 429 (the per-thing rate limit), so it
// does not spin on refusals.
func throttled(ctx context.Context, rng *rand.Rand) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(10+rng.IntN(40)) * time.Millisecond):
	}
}

func (l *ledger) byTok(tok string) *crashOp {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byToken[tok]
}

// crashStats are the figures of a run.
type crashStats struct {
	cycles, acked, rejected, unknownApplied, unknownLost, entries int
	rejectedBy                                                    map[int]int
}

// TestCrashConsistency runs `umbra serve` as a subprocess, drives shadow
// updates and deletes at it from several MQTT and HTTP clients at once,
// kills it with SIGKILL at a random moment, restarts it on the same data
// directory and checks, from history and the stored documents:
//
//   - every request whose accepted reply (or HTTP 200) arrived is in history
//     at the version the reply named, with the request as sent;
//   - versions follow each other without gaps or duplicates (a delete keeps
//     the version, the next update continues from it);
//   - every state in history, and the stored document, is what applying the
//     history's requests in version order gives (replayed with the shadow
//     package's pure functions), so nothing was reordered or half-applied;
//   - no rejected request, and nothing that was never sent, is in history.
//
// Requests in flight at the kill may or may not be there. -crash.cycles
// sets the number of kills (default 4; long mode: 50).
func TestCrashConsistency(t *testing.T) {
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("crash seed %d (rerun: go test ./reliability -run CrashConsistency -crash.seed=%d -crash.cycles=%d)", seed, seed, *crashCycles)
	rng := rand.New(rand.NewPCG(seed, 0))

	bin := buildUmbra(t)
	dataDir := t.TempDir()
	led := newLedger()
	states := map[shadow.Ref]*replayState{}
	for _, r := range crashRefs {
		states[r] = &replayState{}
	}
	st := crashStats{rejectedBy: map[int]int{}}
	start := time.Now()

	for cycle := 1; cycle <= *crashCycles; cycle++ {
		if cycle > 1 {
			// The file as the SIGKILL left it: every page consistent.
			if err := brokertest.CheckStore(dataDir); err != nil {
				t.Fatalf("after kill %d: %v", cycle-1, err)
			}
		}
		p := startUmbra(t, bin, dataDir)
		verifyCrash(t, p.httpURL(), led, states, cycle-1, &st)
		if t.Failed() {
			t.Fatalf("inconsistent after kill %d (seed %d)", cycle-1, seed)
		}
		led.newCycle()
		load := time.Duration(rng.Int64N(int64(*crashMaxLoad)))
		if rng.IntN(5) == 0 {
			load = time.Duration(rng.Int64N(int64(50 * time.Millisecond))) // kill right after start
		}
		acked := runCrashLoad(t, p, led, rng.Uint64(), cycle, load)
		st.cycles++
		t.Logf("cycle %d: load %v, %d acknowledged before SIGKILL", cycle, load.Round(time.Millisecond), acked)
	}
	p := startUmbra(t, bin, dataDir)
	verifyCrash(t, p.httpURL(), led, states, *crashCycles, &st)
	p.stop(t)
	if err := brokertest.CheckStore(dataDir); err != nil {
		t.Fatalf("after the last cycle: %v", err)
	}
	if st.acked == 0 {
		t.Fatal("no request was acknowledged: the harness drove no load")
	}
	t.Logf("crash figures: %d kill -9 cycles survived in %v; %d acknowledged requests all present; %d rejected absent; "+
		"%d unacknowledged in flight at a kill: %d applied, %d lost; %d history entries checked; rejections by code %v",
		st.cycles, time.Since(start).Round(time.Second), st.acked, st.rejected,
		st.unknownApplied+st.unknownLost, st.unknownApplied, st.unknownLost, st.entries, st.rejectedBy)
}

// runCrashLoad drives requests at p for load, kills p with SIGKILL in the
// middle of it, waits for the workers to notice, and returns how many
// requests were acknowledged.
func runCrashLoad(t *testing.T, p *umbraProc, led *ledger, seed uint64, cycle int, load time.Duration) int {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	const mqttWorkers, httpWorkers = 5, 3
	var clients []paho.Client
	for w := range mqttWorkers {
		prefix := fmt.Sprintf("c%d-m%d-", cycle, w)
		replies := make(chan string, 64)
		c, err := mt.TryConnect(p.mqttURL(), fmt.Sprintf("crash-%d-%d", cycle, w))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		clients = append(clients, c)
		filters := map[string]byte{}
		for _, mid := range []string{"", "name/+/"} {
			for _, op := range []string{"update", "delete"} {
				for _, sfx := range []string{"accepted", "rejected"} {
					filters["$aws/things/+/shadow/"+mid+op+"/"+sfx] = 1
				}
			}
		}
		tok := c.SubscribeMultiple(filters, func(_ paho.Client, m paho.Message) {
			token := gjson.GetBytes(m.Payload(), "clientToken").String()
			if !strings.HasPrefix(token, prefix) {
				return
			}
			op := led.byTok(token)
			if op == nil {
				t.Errorf("reply for unknown token %q on %s", token, m.Topic())
				return
			}
			if strings.HasSuffix(m.Topic(), "/accepted") {
				led.reply(t, op, true, gjson.GetBytes(m.Payload(), "version").Int(), 200)
			} else {
				led.reply(t, op, false, 0, int(gjson.GetBytes(m.Payload(), "code").Int()))
			}
			select {
			case replies <- token:
			default:
			}
		})
		if !tok.WaitTimeout(mt.Wait) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			mqttCrashWorker(ctx, t, c, led, rand.New(rand.NewPCG(seed, uint64(w))), prefix, cycle, replies)
		}()
	}
	for w := range httpWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			httpCrashWorker(ctx, t, p.httpURL(), led, rand.New(rand.NewPCG(seed, uint64(100+w))), fmt.Sprintf("c%d-h%d-", cycle, w), cycle)
		}()
	}
	<-time.After(load) // the schedule, not a synchronisation: the kill comes at a random moment
	p.kill9(t)
	cancel()
	wg.Wait() // each worker ends once its current request failed or its reply was lost
	for _, c := range clients {
		c.Disconnect(0)
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	n := 0
	for _, op := range led.ops {
		if op.cycle == cycle && op.acked {
			n++
		}
	}
	return n
}

// mqttCrashWorker sends its requests in bursts of one to four without
// waiting in between (the broker works on a connection's requests
// together), then waits for every answer of the burst.
func mqttCrashWorker(ctx context.Context, t *testing.T, c paho.Client, led *ledger, rng *rand.Rand, prefix string, cycle int, replies <-chan string) {
	for seq := 0; ctx.Err() == nil; {
		burst := map[string]*crashOp{}
		for range 1 + rng.IntN(4) {
			ref, ok := led.reserve(rng)
			if !ok {
				break // budget spent: idle until the kill
			}
			token := fmt.Sprintf("%s%d", prefix, seq)
			seq++
			op := &crashOp{ref: ref, via: "mqtt", token: token, cycle: cycle, kind: kindUpdate}
			switch n := rng.IntN(100); {
			case n < 3:
				op.kind = kindDelete
				op.payload = fmt.Appendf(nil, `{"clientToken":%q}`, token)
			case n < 6:
				op.payload = fmt.Appendf(nil, `{"state":{"reported":null},"clientToken":%q}`, token)
			case n < 20:
				// Optimistic locking against the last version this test saw:
				// often stale (409), sometimes current.
				op.payload = fmt.Appendf(nil, `{"state":{"reported":{"n":%d,"locked":true}},"version":%d,"clientToken":%q}`,
					seq, led.lastVersion(ref), token)
			default:
				op.payload = fmt.Appendf(nil, `{"state":{"reported":{"n":%d,"w":%q,"mode":"m%d","k%d":%d}},"clientToken":%q}`,
					seq, prefix, rng.IntN(3), rng.IntN(5), rng.IntN(1000), token)
			}
			led.add(op)
			burst[token] = op
			c.Publish(ref.Topic(shadow.Op(op.kind), shadow.SuffixNone), 1, false, op.payload)
		}
		if len(burst) == 0 {
			return
		}
		deadline := time.After(30 * time.Second)
		throttledOnce := false
		for len(burst) > 0 {
			select {
			case tok := <-replies:
				op, ok := burst[tok]
				if !ok {
					continue
				}
				delete(burst, tok)
				if led.code(op) == 429 {
					led.refund(op.ref)
					throttledOnce = true
				}
			case <-ctx.Done():
				return
			case <-deadline:
				t.Errorf("%s: no reply to %d requests within 30s before the kill", prefix, len(burst))
				return
			}
		}
		if throttledOnce {
			throttled(ctx, rng)
		}
	}
}

func httpCrashWorker(ctx context.Context, t *testing.T, base string, led *ledger, rng *rand.Rand, prefix string, cycle int) {
	for seq := 0; ctx.Err() == nil; seq++ {
		ref, ok := led.reserve(rng)
		if !ok {
			return
		}
		token := fmt.Sprintf("%s%d", prefix, seq)
		op := &crashOp{ref: ref, via: "http", token: token, cycle: cycle, kind: kindUpdate}
		method := "POST"
		if rng.IntN(100) < 3 {
			op.kind, op.token, method = kindDelete, "", "DELETE"
		} else {
			// An app asks for a mode; devices report modes, and prune
			// convergence removes desired once they match.
			op.payload = fmt.Appendf(nil, `{"state":{"desired":{"mode":"m%d","k%d":%d}},"clientToken":%q}`,
				rng.IntN(3), rng.IntN(5), rng.IntN(1000), token)
		}
		led.add(op)
		code, body, err := httpDo(ctx, method, shadowURL(base, ref, ""), op.payload)
		if err != nil {
			return // in flight at the kill (or cancelled): outcome unknown
		}
		led.reply(t, op, code == 200, gjson.GetBytes(body, "version").Int(), code)
		if code == 429 {
			led.refund(ref)
			throttled(ctx, rng)
		}
	}
}

// replayState is what the test knows of one shadow as of the last check.
type replayState struct {
	version int64  // version of the last history entry checked
	deleted bool   // the last entry is a delete
	doc     []byte // the replayed document (nil when absent)
	last    string // token (or "http-delete") of the last entry, to check it is still there
}

// verifyCrash checks every shadow against the ledger after kill number
// cycle (0: before any).
func verifyCrash(t *testing.T, base string, led *ledger, states map[shadow.Ref]*replayState, cycle int, st *crashStats) {
	t.Helper()
	led.mu.Lock()
	defer led.mu.Unlock()
	for _, ref := range crashRefs {
		verifyShadow(t, base, led, ref, states[ref], cycle, st)
	}
	for _, op := range led.ops {
		if op.cycle != cycle {
			continue
		}
		switch {
		case op.acked && !op.matched:
			t.Errorf("LOST: %s %s %s %q acknowledged at version %d is not in history after kill %d (payload %s)",
				op.via, op.kind, op.ref, op.token, op.version, cycle, op.payload)
		case op.acked:
			st.acked++
		case op.rejected && op.matched:
			t.Errorf("%s %s %s %q was rejected (%d) yet is in history at version %d", op.via, op.kind, op.ref, op.token, op.code, op.histVer)
		case op.rejected:
			st.rejected++
			st.rejectedBy[op.code]++
		case op.matched:
			st.unknownApplied++
		default:
			st.unknownLost++
		}
	}
}

func verifyShadow(t *testing.T, base string, led *ledger, ref shadow.Ref, rs *replayState, cycle int, st *crashStats) {
	t.Helper()
	code, body := mustHTTP(t, "GET", shadowURL(base, ref, "/history", "limit", "1000"), nil)
	if code != 200 {
		t.Fatalf("%s history: %d %s", ref, code, body)
	}
	var h struct{ Entries []historyEntry }
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatalf("%s history: %v: %s", ref, err, body)
	}
	es := h.Entries
	sortHistory(es)

	// Find where the entries not yet checked begin; the last checked one
	// must still be there, unchanged.
	i := 0
	if rs.version > 0 {
		for i < len(es) && (es[i].Version < rs.version || es[i].Version == rs.version && es[i].kindOrder() < b2i(rs.deleted)) {
			i++
		}
		if i == len(es) || es[i].Version != rs.version || es[i].kindOrder() != b2i(rs.deleted) {
			t.Errorf("%s: history lost the entry checked last time (version %d, deleted=%v): %s", ref, rs.version, rs.deleted, body)
			return
		}
		if got := entryTag(es[i]); got != rs.last {
			t.Errorf("%s: the entry at version %d changed from %q to %q", ref, rs.version, rs.last, got)
		}
		i++
	}
	opts := shadow.Options{}
	for _, e := range es[i:] {
		st.entries++
		deleteEntry := e.Op == string(shadow.OpDelete)
		// Sequence: after an update at v comes a delete at v or an update
		// at v+1; after a delete at v, an update at v+1.
		switch {
		case deleteEntry && (rs.deleted || rs.doc == nil || e.Version != rs.version):
			t.Errorf("%s: delete entry at version %d follows version %d (deleted=%v)", ref, e.Version, rs.version, rs.deleted)
			return
		case !deleteEntry && e.Version != rs.version+1:
			t.Errorf("%s: update entry at version %d follows version %d: gap or duplicate", ref, e.Version, rs.version)
			return
		}
		tag := entryTag(e)
		op := matchEntry(t, led, ref, e, cycle)
		if op == nil {
			return
		}
		op.matched, op.histVer = true, e.Version
		if op.acked && op.version != e.Version {
			t.Errorf("%s %q: acknowledged as version %d, history has it at %d", ref, op.token, op.version, e.Version)
		}
		if deleteEntry {
			rs.doc, rs.deleted = nil, true
		} else {
			if !jsonEqual(e.Request, op.payload) {
				t.Errorf("%s v%d: history request %s, sent %s", ref, e.Version, e.Request, op.payload)
			}
			req, _, _, perr := shadow.ParseUpdate(op.payload, opts)
			if perr != nil {
				t.Errorf("%s v%d: history holds a request the shadow rules reject (%v): %s", ref, e.Version, perr, op.payload)
				return
			}
			cur := shadow.Current{Doc: rs.doc, Version: rs.version}
			res, uerr := shadow.Update(cur, req, time.Unix(e.Timestamp, 0), opts)
			if uerr != nil {
				t.Errorf("%s v%d: replaying %s on version %d gives %v, yet the broker accepted it", ref, e.Version, op.payload, rs.version, uerr)
				return
			}
			if res.Version != e.Version {
				t.Errorf("%s: replay gives version %d, history says %d", ref, res.Version, e.Version)
			}
			desired, reported := shadow.DocState(res.Doc)
			if !jsonEqual(gjsonRaw(e.State, "desired"), desired) || !jsonEqual(gjsonRaw(e.State, "reported"), reported) {
				t.Errorf("%s v%d: history state %s, replay gives desired %s reported %s", ref, e.Version, e.State, desired, reported)
			}
			rs.doc, rs.deleted = res.Doc, false
		}
		rs.version, rs.last = e.Version, tag
	}

	// The stored document is the replayed one.
	code, doc := mustHTTP(t, "GET", shadowURL(base, ref, ""), nil)
	switch {
	case rs.doc == nil:
		if code != 404 {
			t.Errorf("%s: GET %d %s, want 404 (absent or deleted at version %d)", ref, code, doc, rs.version)
		}
	case code != 200:
		t.Errorf("%s: GET %d %s, want version %d", ref, code, doc, rs.version)
	default:
		desired, reported := shadow.DocState(rs.doc)
		if v := gjson.GetBytes(doc, "version").Int(); v != rs.version ||
			!jsonEqual(gjsonRaw(doc, "state.desired"), desired) || !jsonEqual(gjsonRaw(doc, "state.reported"), reported) {
			t.Errorf("%s: stored document %s, replay gives version %d desired %s reported %s", ref, doc, rs.version, desired, reported)
		}
	}
}

// matchEntry finds the request a new history entry came from: one sent
// during the cycle that was just killed, on this shadow, of this kind, not
// rejected and not matched before.
func matchEntry(t *testing.T, led *ledger, ref shadow.Ref, e historyEntry, cycle int) *crashOp {
	t.Helper()
	kind := kindUpdate
	if e.Op == string(shadow.OpDelete) {
		kind = kindDelete
	}
	ok := func(op *crashOp) bool {
		return op != nil && op.ref == ref && op.kind == kind && op.cycle == cycle && !op.matched
	}
	if tok := gjson.GetBytes(e.Request, "clientToken").String(); tok != "" {
		op := led.byToken[tok]
		if !ok(op) {
			t.Errorf("%s: history entry v%d %s from request %q matches no request sent in cycle %d (%+v): %s",
				ref, e.Version, e.Op, tok, cycle, op, e.Request)
			return nil
		}
		return op
	}
	if kind != kindDelete {
		t.Errorf("%s: update entry v%d without a clientToken: %s", ref, e.Version, e.Request)
		return nil
	}
	// An HTTP delete has no body: take the one acknowledged at this version,
	// else one whose reply never came.
	var unknown *crashOp
	for _, op := range led.ops {
		if !ok(op) || op.token != "" {
			continue
		}
		if op.acked && op.version == e.Version {
			return op
		}
		if !op.acked && !op.rejected && unknown == nil {
			unknown = op
		}
	}
	if unknown == nil {
		t.Errorf("%s: delete entry v%d matches no HTTP delete sent in cycle %d", ref, e.Version, cycle)
	}
	return unknown
}

func entryTag(e historyEntry) string {
	if tok := gjson.GetBytes(e.Request, "clientToken").String(); tok != "" {
		return tok
	}
	return "http-" + e.Op
}

func gjsonRaw(b []byte, path string) []byte {
	r := gjson.GetBytes(b, path)
	if !r.Exists() {
		return nil
	}
	return []byte(r.Raw)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestCrashKeepsSessionStateWrittenBeforeAShadowCommit checks the README's
// "What a crash can lose" from the other side: MQTT session changes are
// written behind, but go into the next group commit, so once a later shadow
// update has been acknowledged they survive kill -9. A device with a
// persistent session subscribes to its delta topic and goes offline; an
// update queues a delta for it; a second, acknowledged update carries the
// staged session state to disk; SIGKILL; after the restart the device
// reconnects without subscribing and gets the queued delta, then a new one.
func TestCrashKeepsSessionStateWrittenBeforeAShadowCommit(t *testing.T) {
	bin := buildUmbra(t)
	dir := t.TempDir()
	p := startUmbra(t, bin, dir)
	const id = "sleepy-device"
	delta := "$aws/things/" + id + "/shadow/update/delta"

	c, err := dialRaw(p.mqttAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.connect(id, 60, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(subscribePacket(1, delta, 1)); err != nil {
		t.Fatal(err)
	}
	if pk, err := c.next(mt.Wait); err != nil || pk.kind() != pktSuback || pk.body[2] != 1 {
		t.Fatalf("SUBACK: %v %x %v", pk, pk.body, err)
	}
	if _, err := c.Write([]byte{pktDisconnect, 0}); err != nil {
		t.Fatal(err)
	}
	_, _ = c.waitClosed(mt.Wait)

	update := func(ref shadow.Ref, body string) {
		t.Helper()
		if code, b := mustHTTP(t, "POST", shadowURL(p.httpURL(), ref, ""), []byte(body)); code != 200 {
			t.Fatalf("update %s: %d %s", ref, code, b)
		}
	}
	update(shadow.Ref{Thing: id}, `{"state":{"desired":{"interval":300}}}`) // queues a delta for the offline device
	update(shadow.Ref{Thing: "another-device"}, `{"state":{"reported":{"up":true}}}`)
	p.kill9(t)

	p = startUmbra(t, bin, dir)
	c, err = dialRaw(p.mqttAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(connectPacket(id, 60, false)); err != nil {
		t.Fatal(err)
	}
	pk, err := c.next(mt.Wait)
	if err != nil || pk.kind() != pktConnack || len(pk.body) != 2 || pk.body[0] != 1 || pk.body[1] != 0 {
		t.Fatalf("CONNACK after kill -9: %v %x %v; want session present", pk, pk.body, err)
	}
	nextDelta := func(want int) {
		t.Helper()
		for {
			pk, err := c.next(mt.Wait)
			if err != nil {
				t.Fatalf("waiting for the delta with interval %d: %v", want, err)
			}
			if pk.kind() != pktPublish {
				continue
			}
			tl := int(binary.BigEndian.Uint16(pk.body))
			topic, rest := string(pk.body[2:2+tl]), pk.body[2+tl:]
			if pk.first&0x06 != 0 {
				_, _ = c.Write(append([]byte{pktPuback, 2}, rest[:2]...))
				rest = rest[2:]
			}
			if topic != delta {
				t.Fatalf("message on %s", topic)
			}
			if got := gjson.GetBytes(rest, "state.interval").Int(); got != int64(want) {
				t.Fatalf("delta %s, want interval %d", rest, want)
			}
			return
		}
	}
	nextDelta(300) // queued before the crash
	update(shadow.Ref{Thing: id}, `{"state":{"desired":{"interval":600}}}`)
	nextDelta(600) // the subscription survived
	p.stop(t)
}
