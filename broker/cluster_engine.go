package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/umbra-iot/umbra/internal/api"
	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/awsjobs"
	"github.com/umbra-iot/umbra/internal/cluster"
	"github.com/umbra-iot/umbra/internal/rollout"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/registry"
)

// In cluster mode exactly one node runs the rollout and job engine (the
// rollout steps and the AWS jobs step timers): the holder of the "engine"
// lease (internal/cluster.Lease). When it acquires the lease it reloads
// both from the shared store and watches the shadow bucket so that device
// reports made on any node reach the engine; when it loses the lease it
// stops before the lease can be taken elsewhere. The other nodes send
// every /api/rollouts and /api/jobs request to it over NATS request/reply
// (engineAPISubject), so that reads and writes see the one live engine.

// engineLeaseKey is the lease that elects the engine's node.
const engineLeaseKey = "engine"

// engineAPISubject is where the engine's node answers the API requests
// other nodes forward; only the lease holder subscribes.
const engineAPISubject = "umbra.engine.api"

// engineState is the Broker's share of engine ownership; zero on a single
// node.
type engineState struct {
	engineLease *cluster.Lease
	leaderGauge *prometheus.GaugeVec
	// engineMux serves forwarded requests on the lease holder: the rollout
	// API without authentication (the forwarding node checked it).
	engineMux *http.ServeMux
	// engineEpoch is the lease epoch whose term has reloaded the engine
	// (0: the engine does not run here): between acquiring the lease and
	// the end of the reload the node's copy is stale and serves nothing.
	engineEpoch atomic.Uint64
	// engineFence is this term's fencing token in the shared store (the
	// fence record's value it wrote), 0 outside a term.
	engineFence atomic.Uint64
}

// openEngineLease opens the engine lease (openCluster).
func (b *Broker) openEngineLease(ctx context.Context) error {
	c := b.opts.Cluster
	l, err := cluster.OpenLease(ctx, b.cluster.JS, cluster.LeaseConfig{
		Key: engineLeaseKey, Holder: b.cluster.Name, TTL: c.LeaseTTL, Replicas: c.Replicas,
		Logger: b.log.With("component", "cluster"),
	})
	if err != nil {
		return err
	}
	b.engineLease = l
	b.leaderGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "umbra_cluster_leader",
		Help: "1 while this node holds the lease of the role (engine: the rollout and job engine).",
	}, []string{"role"})
	b.leaderGauge.WithLabelValues(engineLeaseKey).Set(0)
	b.metrics.reg.MustRegister(b.leaderGauge)
	return nil
}

// runEngines starts the rollout engine and the jobs' step timers: always
// on a single node, under the engine lease on a cluster node.
func (b *Broker) runEngines() {
	if b.engineLease == nil {
		b.bg.Go("rollouts", func(ctx context.Context) { b.rollouts.Run(ctx, b.opts.RolloutInterval) })
		b.bg.Go("jobs", func(ctx context.Context) { b.jobs.Run(ctx, b.opts.RolloutInterval) })
		return
	}
	b.engineMux = http.NewServeMux()
	(&api.RolloutAPI{Engine: b.rollouts}).Register(b.engineMux)
	b.bg.Go("engine-lease", func(ctx context.Context) { b.engineLease.Run(ctx, b.leadEngines) })
}

// runsEngine reports whether the rollout engine runs on this node (always
// on a single node).
func (b *Broker) runsEngine() bool {
	if b.engineLease == nil {
		return true
	}
	epoch, ok := b.engineLease.Valid()
	return ok && b.engineEpoch.Load() == epoch
}

// leadEngines runs the engines for one term of the lease: until ctx ends
// (lease lost, fencing deadline, shutdown).
func (b *Broker) leadEngines(ctx context.Context, epoch uint64) {
	log := b.log.With("component", "cluster", "epoch", epoch)
	// The fence first: from here on no save of an earlier term lands.
	// Device reports from every node already reach the engine (the shadow
	// watch of followCluster runs on every node from the start), so a
	// report committed after the reload read its shadow is not missed.
	var err error
	var token uint64
	if b.clusterMeta != nil {
		token, err = raiseFence(ctx, storeadapt.ClusterKV{S: b.clusterMeta})
	}
	if err == nil {
		err = b.rollouts.Reload()
	}
	if err == nil {
		err = b.jobs.Reload()
	}
	if err != nil {
		log.Error("engine: cannot take over; giving the lease up", "error", err)
		select { // do not contend again at once
		case <-ctx.Done():
		case <-time.After(b.engineLease.TTL()):
		}
		return
	}
	b.engineFence.Store(token)
	b.engineEpoch.Store(epoch)
	defer b.engineEpoch.Store(0)
	defer b.engineFence.Store(0)
	fw := &forwarded{b: b, ctx: ctx}
	sub, err := b.cluster.NC.Subscribe(engineAPISubject, fw.serve)
	if err != nil {
		log.Error("engine: cannot serve forwarded requests", "error", err)
		return
	}
	defer fw.stop(sub)
	b.leaderGauge.WithLabelValues(engineLeaseKey).Set(1)
	defer b.leaderGauge.WithLabelValues(engineLeaseKey).Set(0)
	log.Info("engine: this node runs the rollout and job engine")
	t := time.NewTicker(b.opts.RolloutInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("engine: stopped", "why", context.Cause(ctx))
			return
		case <-t.C:
		}
		// A step runs with the term's context: when the term ends mid-step
		// its remaining writes fail instead of racing the next holder.
		if !b.runsEngine() {
			continue
		}
		b.rollouts.Step(ctx)
		b.jobs.Step(ctx)
	}
}

// engineStoreChanged follows another node's write to the shared store
// (metaApplied): the jobs service's documents and step timers, and the
// rollout engine's mark on a device whose job execution changed.
func (b *Broker) engineStoreChanged(bucket, key string) {
	b.jobs.StoreChanged(bucket, key)
	if th, ok := awsjobs.ExecutionThing(bucket, key); ok {
		b.rollouts.ExecutionChanged(th)
	}
}

// Headers of forwarded requests and their replies.
const (
	hdrMethod      = "Umbra-Method"
	hdrURI         = "Umbra-URI"
	hdrContentType = "Content-Type"
	hdrStatus      = "Umbra-Status"
	hdrLeader      = "Umbra-Leader"
	hdrMore        = "Umbra-More" // "1": more body chunks follow
	hdrNotLeader   = "Umbra-Not-Leader"
	hdrReceived    = "Umbra-Received" // the engine's node has the request
)

// forwardEngine sends an API request to the lease holder and writes its
// answer (RolloutAPI.Forward). The holder answers itself. Without a
// holder (a takeover under way) it tries again until twice the lease TTL
// has passed, then answers 503.
func (b *Broker) forwardEngine(w http.ResponseWriter, r *http.Request) bool {
	if b.runsEngine() {
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		api.WriteError(w, api.Errorf(http.StatusRequestEntityTooLarge, "", "request body: %v", err))
		return true
	}
	msg := nats.NewMsg(engineAPISubject)
	msg.Header.Set(hdrMethod, r.Method)
	msg.Header.Set(hdrURI, r.URL.RequestURI())
	msg.Header.Set(hdrContentType, r.Header.Get("Content-Type"))
	msg.Data = body
	ctx, cancel := context.WithTimeout(r.Context(), 2*b.engineLease.TTL()+b.opts.Cluster.Timeout)
	defer cancel()
	var last error
	for {
		if b.runsEngine() {
			// This node took the lease meanwhile.
			r.Body = io.NopCloser(bytes.NewReader(body))
			return false
		}
		status, hdr, out, err := b.requestEngine(ctx, msg)
		if err == nil {
			if v := hdr.Get(hdrContentType); v != "" {
				w.Header().Set("Content-Type", v)
			}
			w.Header().Set("X-Umbra-Engine-Node", hdr.Get(hdrLeader))
			w.WriteHeader(status)
			_, _ = w.Write(out)
			return true
		}
		last = err
		retry := errors.Is(err, nats.ErrNoResponders) || errors.Is(err, errNotLeader) || errors.Is(err, errNoAck)
		if !retry || !wait(ctx, 50*time.Millisecond) {
			break
		}
	}
	api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, "", "no node runs the rollout engine right now (%v); try again", last))
	return true
}

var (
	errNotLeader = errors.New("the node asked no longer runs the engine")
	// errNoAck: nobody acknowledged the request. Right after the engine's
	// node is gone, NATS may still route a request to it for a moment
	// (its interest has not yet been withdrawn across the cluster) and
	// drop it; such a request never ran, so it is sent again.
	errNoAck = errors.New("no node acknowledged the request")
)

// requestEngine sends msg to the holder and collects its reply, which may
// come in several messages when the body exceeds NATS's payload limit.
func (b *Broker) requestEngine(ctx context.Context, msg *nats.Msg) (int, nats.Header, []byte, error) {
	nc := b.cluster.NC
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, nil, nil, err
	}
	defer sub.Unsubscribe()
	msg.Reply = inbox
	if err := nc.PublishMsg(msg); err != nil {
		return 0, nil, nil, err
	}
	var out []byte
	var first *nats.Msg
	acked := false
	for {
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if !acked {
			wctx, cancel = context.WithTimeout(ctx, b.engineLease.TTL())
		}
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			if !acked && ctx.Err() == nil {
				return 0, nil, nil, errNoAck
			}
			return 0, nil, nil, err
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return 0, nil, nil, nats.ErrNoResponders
		}
		if m.Header.Get(hdrNotLeader) != "" {
			return 0, nil, nil, errNotLeader
		}
		if m.Header.Get(hdrReceived) != "" {
			acked = true
			continue
		}
		if first == nil {
			first = m
		}
		out = append(out, m.Data...)
		if m.Header.Get(hdrMore) == "" {
			break
		}
	}
	status, err := strconv.Atoi(first.Header.Get(hdrStatus))
	if err != nil {
		return 0, nil, nil, errors.New("forwarded request: reply without a status")
	}
	return status, first.Header, out, nil
}

// forwardChunk, when set (tests), replaces the size of the reply chunks.
var forwardChunk atomic.Int64

// forwarded serves forwarded requests during one term.
type forwarded struct {
	b   *Broker
	ctx context.Context // the term's
	// mu is held while a request is served; stop takes it so that no
	// request runs after the term.
	mu      sync.Mutex
	stopped bool
}

func (f *forwarded) stop(sub *nats.Subscription) {
	_ = sub.Unsubscribe()
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
}

// serve acknowledges a forwarded request at once, then runs it apart from
// NATS's delivery goroutine (so that a long request does not hold up the
// acknowledgement of the next).
func (f *forwarded) serve(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	ack := nats.NewMsg(m.Reply)
	ack.Header.Set(hdrReceived, "1")
	_ = f.b.cluster.NC.PublishMsg(ack)
	if !f.b.bg.Go("engine-api", func(context.Context) { f.handle(m) }) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set(hdrNotLeader, "1")
		_ = f.b.cluster.NC.PublishMsg(r)
	}
}

// handle runs one forwarded request, unless the term has ended (then the
// sender tries again elsewhere: the request did not run).
func (f *forwarded) handle(m *nats.Msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.b
	if f.stopped || !b.runsEngine() || f.ctx.Err() != nil {
		r := nats.NewMsg(m.Reply)
		r.Header.Set(hdrNotLeader, "1")
		_ = b.cluster.NC.PublishMsg(r)
		return
	}
	req, err := http.NewRequestWithContext(f.ctx, m.Header.Get(hdrMethod), m.Header.Get(hdrURI), bytes.NewReader(m.Data))
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	if err != nil {
		api.WriteError(rec, api.Errorf(http.StatusBadRequest, "", "forwarded request: %v", err))
	} else {
		if ct := m.Header.Get(hdrContentType); ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		b.engineMux.ServeHTTP(rec, req)
	}
	chunk := int(b.cluster.NC.MaxPayload()) - 4096
	if n := forwardChunk.Load(); n > 0 {
		chunk = int(n)
	}
	data := rec.body.Bytes()
	for first := true; first || len(data) > 0; first = false {
		n := min(len(data), chunk)
		r := nats.NewMsg(m.Reply)
		r.Header.Set(hdrStatus, strconv.Itoa(rec.status))
		r.Header.Set(hdrContentType, rec.header.Get("Content-Type"))
		r.Header.Set(hdrLeader, b.cluster.Name)
		if n < len(data) {
			r.Header.Set(hdrMore, "1")
		}
		r.Data = data[:n]
		data = data[n:]
		if err := b.cluster.NC.PublishMsg(r); err != nil {
			b.log.Warn("engine: reply to a forwarded request", "error", err)
			return
		}
	}
}

// recorder is the http.ResponseWriter of a forwarded request.
type recorder struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	r.wrote = true
	return r.body.Write(p)
}

// clusterInfo answers GET /api/cluster: this node, and which node runs the
// engine.
func (b *Broker) clusterInfo(w http.ResponseWriter, r *http.Request) error {
	if b.cluster == nil {
		return writeJSONStatus(w, map[string]any{"cluster": false})
	}
	st := b.engineLease.Status()
	holder, rev, err := b.engineLease.Holder(r.Context())
	engine := map[string]any{"thisNode": b.runsEngine(), "terms": st.Terms, "leaseTTL": b.engineLease.TTL().String()}
	if err != nil {
		engine["error"] = err.Error()
	} else if holder.Holder != "" {
		engine["leader"] = holder.Holder
		engine["since"] = holder.Since
		engine["revision"] = rev
	}
	if st.Leader {
		engine["epoch"] = st.Epoch
	}
	return writeJSONStatus(w, map[string]any{"cluster": true, "node": b.cluster.Name, "engine": engine})
}

func writeJSONStatus(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

// wait waits d, or less if ctx ends first (false).
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// registerCluster adds GET /api/cluster.
func (b *Broker) registerCluster(mux *http.ServeMux, guard *api.Guard) {
	mux.HandleFunc("GET /api/cluster", guard.Require(auth.RoleViewer, b.clusterInfo))
}

// errNotEngine refuses an engine write on a node whose term has ended.
var errNotEngine = errors.New("cluster: this node no longer runs the rollout engine (lease lost); the write was not made")

// fencedRolloutStore refuses the engine's writes on a cluster node outside
// its term of the engine lease: a step that began while the lease was held
// cannot record its outcome after the fencing deadline, when another node
// may already run the engine.
type fencedRolloutStore struct {
	rollout.Store
	valid func() bool
}

func (s fencedRolloutStore) SaveRollout(ctx context.Context, id string, header []byte, devices map[string][]byte) error {
	if !s.valid() {
		return errNotEngine
	}
	return s.Store.SaveRollout(ctx, id, header, devices)
}

func (s fencedRolloutStore) SaveJob(ctx context.Context, id string, job []byte) error {
	if !s.valid() {
		return errNotEngine
	}
	return s.Store.SaveJob(ctx, id, job)
}

// fenceEngine wraps the rollout engine's store on a cluster node: saves
// only during this node's term, checked on its clock and, on the shared
// store, against the fence record in the same transaction.
func (b *Broker) fenceEngine(s storeadapt.RolloutStore) rollout.Store {
	if b.engineLease == nil {
		return s
	}
	if s.KV != nil {
		s.KV = epochFence{TxStore: s.KV, epoch: b.engineFence.Load}
	}
	return fencedRolloutStore{Store: s, valid: b.runsEngine}
}

// The engine fence: a counter in the shared store, raised by each new
// holder of the engine lease before it reloads; the value it wrote is its
// term's fencing token, and every rollout/job save is a transaction that
// first checks the counter still holds the saver's token. The shared store's transactions are
// serializable, so a save by a holder whose term has ended, if it reaches
// the store after the next holder raised the fence, is refused, however
// late it arrives (the time fence alone cannot promise that for a write
// already in flight).
const (
	fenceBucket = "cluster_fence"
	fenceKey    = "engine"
)

// errFenced refuses a save from a term older than the fence.
var errFenced = errors.New("cluster: a later term of the engine lease has taken over; the write was not made")

// epochFence is a TxStore whose transactions run only while the fence
// holds this term's token (epoch).
type epochFence struct {
	storeadapt.TxStore
	epoch func() uint64
}

func (f epochFence) UpdateKV(ctx context.Context, fn func(registry.KV) error) error {
	epoch := f.epoch()
	if epoch == 0 {
		return errNotEngine
	}
	want := strconv.FormatUint(epoch, 10)
	return f.TxStore.UpdateKV(ctx, func(kv registry.KV) error {
		if got := string(kv.Get(fenceBucket, fenceKey)); got != want {
			return fmt.Errorf("%w (fence at %s, this term's token %s)", errFenced, got, want)
		}
		return fn(kv)
	})
}

// raiseFence starts a new term in the shared store: it increments the
// fence and returns the new value, this term's fencing token.
func raiseFence(ctx context.Context, s storeadapt.TxStore) (uint64, error) {
	var token uint64
	err := s.UpdateKV(ctx, func(kv registry.KV) error {
		cur, _ := strconv.ParseUint(string(kv.Get(fenceBucket, fenceKey)), 10, 64)
		token = cur + 1
		return kv.Put(fenceBucket, fenceKey, []byte(strconv.FormatUint(token, 10)))
	})
	return token, err
}
