// Package clustersession makes MQTT sessions cluster-wide in cluster mode
// (docs/cluster.md, "Sessions across nodes"): one connection per client id
// across the nodes, and a persistent session that follows its device to
// whichever node it reconnects to.
//
// Ownership. The JetStream KV bucket umbra_sessions maps each client id to
// the node that holds its session. A node that accepts a connection
// (after authentication, in OnSessionEstablish) writes itself as the owner
// with a compare-and-set on the entry's revision; the revision it wrote is
// the connection's generation. Of two connects racing on two nodes both
// writes succeed, one after the other, and the later one (higher
// generation) wins: each writer asks the owner it replaced to take over,
// and a node closes only its connections with a lower generation than the
// request's.
//
// Handover. A node replaced as owner is asked over NATS request/reply
// (subject umbra.sessions.<node>.takeover) to close its connection for the
// id (DISCONNECT 0x8E on MQTT 5, as on a local takeover) and, when the new
// connection does not start clean, to send the session: subscriptions and
// the QoS 1/2 messages queued or in flight, with their packet ids and
// order. The new node installs it in its Mochi as a disconnected session,
// running Mochi's hooks (OnSubscribed, OnQosPublish) so that the session
// store and the cross-node subscriptions see it, makes it durable, and
// only then tells the old node (umbra.sessions.<node>.release), which
// sends what was queued for the id in between and drops its copy. Mochi's
// own takeover then hands the installed session to the new connection
// (session present, queued messages resent in order).
//
// The copy that outlives a node. The entry also holds a persistent
// session's subscriptions, rewritten (compare-and-set on the revision the
// connection last wrote) whenever they change, before the SUBACK. If the
// previous owner does not answer within HandoverTimeout (it is down), the
// connection is accepted with the subscriptions from the entry (session
// present) but without the messages that were queued on that node. A node
// that comes back drops the sessions it restored from its store whose
// entry names another node (DropForeign).
//
// Holders. With authentication on, the entry also names who holds the
// session (kind, name and method of the identity), and a connect on
// another node is checked against it as against a session on its own node
// (Holder: one service cannot take over another's session). A session that
// ends, with its connection or when it expires, deletes its entry (a
// compare-and-set on the revision its connection last wrote), so that the
// id is free again.
package clustersession

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/cluster"
	"github.com/umbra-iot/umbra/internal/hooks"

	"github.com/umbra-iot/umbra/internal/keyed"
	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/hooks/storage"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// Config configures the hook.
type Config struct {
	Server   *mqtt.Server
	NC       *nats.Conn
	JS       jetstream.JetStream
	Node     string // this node's name, unique in the cluster
	Bucket   string // KV bucket, default "umbra_sessions"
	Replicas int    // default 3
	// Timeout bounds each KV operation (default 5s).
	Timeout time.Duration
	// HandoverTimeout bounds how long a connect waits for the previous
	// owner to answer (default 2s).
	HandoverTimeout time.Duration
	// Flush makes the session changes staged by the hooks durable (the
	// session store's flush); nil when sessions are not persisted.
	Flush func(context.Context) error
	// Recorded, when set, makes what the hooks recorded about connections
	// that ended shared (the registry's connectivity records): a node that
	// closes a connection for a takeover calls it, after the connection's
	// OnDisconnect hooks ran and before it answers, so that the old
	// connection's end is recorded before the new one's start.
	Recorded func(context.Context) error
	// Identity, when set (authentication is on), is who a connection
	// authenticated as: the entry names the session's holder, so that a
	// connect on another node is checked against it as against a session
	// on its own node (Holder), and the entry is removed when the session
	// ends.
	Identity func(*mqtt.Client) auth.Identity
	Logger   *slog.Logger
}

// Hook is the Mochi hook. Add it before the other hooks, so that the
// session it installs in OnSessionEstablish is there when they run.
type Hook struct {
	mqtt.HookBase
	cfg  Config
	kv   jetstream.KeyValue
	subs []*nats.Subscription
	log  *slog.Logger

	ids keyed.Mutex[string] // per client id: claim and tracking vs. takeover requests

	mu     sync.Mutex
	byID   map[string]map[*mqtt.Client]*conn
	conns  map[*mqtt.Client]*conn
	handed map[string]*handoff            // sessions sent to another node, not yet released
	ended  map[*mqtt.Client]chan struct{} // connections closed for a takeover, until their OnDisconnect hooks ran
	// offline is, per client id of a persistent session gone offline here,
	// the entry revision its connection last wrote (entries naming
	// holders only): released when the session expires.
	offline  map[string]uint64
	dropping map[*mqtt.Client]bool // sessions drop is ending (see drop)

	handovers atomic.Int64 // sessions received (tests, logs)
}

// conn is one connection's generation and state.
type conn struct {
	gen         uint64
	rev         uint64 // the entry's revision this connection last wrote
	established bool   // CONNACK sent
	revoked     bool   // a newer connection elsewhere took the id over
}

// handoff is a session sent to another node, kept until it is released.
type handoff struct {
	client *mqtt.Client
	gen    uint64
	sent   map[uint16]bool
}

// owner is the value of a KV entry: the node that holds the session and,
// for a persistent session, its subscriptions (the copy that outlives the
// node).
type owner struct {
	Node   string                 `json:"node"`
	Holder *holder                `json:"holder,omitempty"`
	Subs   []storage.Subscription `json:"subscriptions,omitempty"`
}

// holder is who holds a session: what auth.Authenticator.MayTakeOver
// needs of the earlier connection's identity.
type holder struct {
	Kind   auth.Kind `json:"kind"`
	Name   string    `json:"name"`
	Method string    `json:"method"`
}

// session is a session as handed over.
type session struct {
	Found    bool                   `json:"found"`
	Client   storage.Client         `json:"client"`
	Subs     []storage.Subscription `json:"subscriptions,omitempty"`
	Inflight []storage.Message      `json:"inflight,omitempty"`
}

type takeoverRequest struct {
	Client  string `json:"client"`
	Gen     uint64 `json:"gen"`
	Session bool   `json:"session"` // false: a clean start, discard the session
	From    string `json:"from"`
}

// Open creates or binds the bucket and starts answering other nodes.
func Open(ctx context.Context, cfg Config) (*Hook, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = "umbra_sessions"
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 3
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.HandoverTimeout <= 0 {
		cfg.HandoverTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Hook{cfg: cfg, log: cfg.Logger, byID: map[string]map[*mqtt.Client]*conn{},
		conns: map[*mqtt.Client]*conn{}, handed: map[string]*handoff{}, ended: map[*mqtt.Client]chan struct{}{},
		offline: map[string]uint64{}, dropping: map[*mqtt.Client]bool{}}
	var kv jetstream.KeyValue
	err := cluster.Retry(ctx, func(ctx context.Context) (err error) {
		kv, err = openBucket(ctx, cfg)
		return err
	})
	if err != nil {
		return nil, err
	}
	h.kv = kv
	for suffix, fn := range map[string]nats.MsgHandler{"takeover": h.onTakeover, "release": h.onRelease} {
		// Each request in its own goroutine: a takeover waits for the
		// connection it closed to end, and one client id's wait must not
		// hold up the others' (a node whose devices all move at once).
		sub, err := cfg.NC.Subscribe(subject(cfg.Node, suffix), func(m *nats.Msg) { go fn(m) })
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("clustersession: subscribe: %w", err)
		}
		h.subs = append(h.subs, sub)
	}
	if err := cfg.NC.FlushWithContext(ctx); err != nil {
		h.Close()
		return nil, fmt.Errorf("clustersession: subscribe: %w", err)
	}
	return h, nil
}

func openBucket(ctx context.Context, cfg Config) (jetstream.KeyValue, error) {
	// The handle is bound below, after direct get is off.
	_, err := cfg.JS.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		_, err = cfg.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: cfg.Bucket, Description: "Umbra: which node holds each MQTT session",
			History: 1, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			err = nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("clustersession: bucket %s: %w", cfg.Bucket, err)
	}
	// A claim reads the entry and writes it back with its revision: with
	// direct get a follower may answer with an older state, or none, and
	// the claim would go round. Reads go to the stream leader, as for the
	// shadow bucket (internal/clusterstore); the binding reads the setting
	// once, so bind again after turning direct get off.
	stream := "KV_" + cfg.Bucket
	for range 5 {
		st, err := cfg.JS.Stream(ctx, stream)
		if err != nil {
			return nil, fmt.Errorf("clustersession: stream %s: %w", stream, err)
		}
		if sc := st.CachedInfo().Config; sc.AllowDirect {
			sc.AllowDirect = false
			if _, err := cfg.JS.UpdateStream(ctx, sc); err != nil {
				return nil, fmt.Errorf("clustersession: turn direct get off on %s: %w", stream, err)
			}
		}
		kv, err := cfg.JS.KeyValue(ctx, cfg.Bucket)
		if err != nil {
			return nil, fmt.Errorf("clustersession: bind bucket %s: %w", cfg.Bucket, err)
		}
		if st, err = cfg.JS.Stream(ctx, stream); err != nil {
			return nil, fmt.Errorf("clustersession: stream %s: %w", stream, err)
		}
		if !st.CachedInfo().Config.AllowDirect {
			return kv, nil
		}
	}
	return nil, fmt.Errorf("clustersession: direct get on %s keeps being turned on", stream)
}

// Close stops answering other nodes.
func (h *Hook) Close() {
	for _, s := range h.subs {
		_ = s.Unsubscribe()
	}
}

// Handovers is the number of sessions this node received from another.
func (h *Hook) Handovers() int64 { return h.handovers.Load() }

// subject is a node's subject; node names may hold characters that
// subjects may not.
func subject(node, suffix string) string {
	return "umbra.sessions." + base64.RawURLEncoding.EncodeToString([]byte(node)) + "." + suffix
}

// TakeoverSubject is the subject a node answers takeover requests on.
func TakeoverSubject(node string) string { return subject(node, "takeover") }

func key(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

// ID implements mqtt.Hook.
func (h *Hook) ID() string { return "umbra-cluster-sessions" }

// Provides implements mqtt.Hook.
func (h *Hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnClientExpired:
		return true
	}
	return false
}

// claim makes this node the owner of id; it returns the generation and the
// previous owner (Node "" if none). keep carries the previous owner's copy
// of the subscriptions over (a session that is not started clean).
func (h *Hook) claim(id string, keep bool, by *holder) (uint64, owner, error) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
	defer cancel()
	k := key(id)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// Another node's write is being applied (JetStream refuses a
			// write against the last sequence while one is pending, before
			// a read shows it): back off a little.
			select {
			case <-ctx.Done():
				return 0, owner{}, fmt.Errorf("clustersession: claim %q: %w", id, ctx.Err())
			case <-time.After(time.Duration(min(attempt, 25)) * 2 * time.Millisecond):
			}
		}
		e, err := h.kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			val, _ := json.Marshal(owner{Node: h.cfg.Node, Holder: by})
			rev, err := h.kv.Create(ctx, k, val)
			if casFailed(err) {
				continue
			}
			return rev, owner{}, err
		case err != nil:
			return 0, owner{}, err
		}
		var prev owner
		_ = json.Unmarshal(e.Value(), &prev)
		next := owner{Node: h.cfg.Node, Holder: by}
		if keep {
			next.Subs = prev.Subs
		}
		val, _ := json.Marshal(next)
		rev, err := h.kv.Update(ctx, k, val, e.Revision())
		if casFailed(err) {
			continue
		}
		return rev, prev, err
	}
}

// casFailed reports whether a KV write failed because the entry is not at
// the revision it named (another node wrote first).
func casFailed(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == errCodeWrongLastSequenceConst)
}

// errCodeWrongLastSequenceConst is the error code of a write whose
// expected last sequence for the subject does not hold.
const errCodeWrongLastSequenceConst = 10164

// OnSessionEstablish implements mqtt.Hook: it runs after authentication
// and before Mochi looks for an earlier session of the id.
func (h *Hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if cl.Properties.Props.AssignedClientID != "" {
		return // an id the broker made up is unique, and never seen again
	}
	want := !pk.Connect.Clean
	unlock := h.ids.Lock(cl.ID)
	h.mu.Lock()
	delete(h.offline, cl.ID) // the session is this connection's now
	h.mu.Unlock()
	gen, prev, err := h.claim(cl.ID, want, h.holderOf(cl))
	c := h.track(cl, gen)
	unlock()
	if err != nil {
		// Accepted on this node alone: availability over the cluster-wide
		// takeover while JetStream does not answer.
		h.log.Warn("cluster session: ownership not recorded", "client", cl.ID, "error", err)
		return
	}
	if prev.Node == "" || prev.Node == h.cfg.Node {
		return
	}
	snap, err := h.request(prev.Node, "takeover", takeoverRequest{Client: cl.ID, Gen: gen, Session: want, From: h.cfg.Node})
	if err != nil {
		// The previous node is gone or does not answer in time: the
		// session's subscriptions come from the copy in the bucket; what
		// was queued on that node stays there.
		h.log.Warn("cluster session: previous node did not hand over; its queued messages are not moved",
			"client", cl.ID, "node", prev.Node, "error", err, "subscriptions_from_bucket", len(prev.Subs))
		if want && len(prev.Subs) > 0 && !h.revoked(cl) {
			h.dropStale(cl)
			h.install(session{Found: true, Client: hooks.ClientRecord(cl), Subs: prev.Subs})
			if err := h.flush(); err != nil {
				h.log.Warn("cluster session: subscriptions from the bucket not durable", "client", cl.ID, "error", err)
			}
		}
		return
	}
	if !want || !snap.Found || h.revoked(cl) {
		if !want || !snap.Found {
			h.dropStale(cl)
		}
		if want && !snap.Found {
			h.saveSubs(cl, c, nil) // the claim kept the old node's copy
		}
		return
	}
	h.dropStale(cl)
	ph := h.install(snap)
	if err := h.flush(); err != nil {
		// Not durable here: leave the session on the old node.
		h.log.Warn("cluster session: handed-over session not durable; not released", "client", cl.ID, "error", err)
		return
	}
	h.saveSubs(cl, c, snap.Subs)
	rest, err := h.request(prev.Node, "release", takeoverRequest{Client: cl.ID, Gen: gen, From: h.cfg.Node})
	if err != nil {
		h.log.Warn("cluster session: release not confirmed", "client", cl.ID, "node", prev.Node, "error", err)
		return
	}
	if len(rest.Inflight) > 0 {
		h.addInflight(ph, rest.Inflight)
		if err := h.flush(); err != nil {
			h.log.Warn("cluster session: messages queued during the handover not durable", "client", cl.ID, "error", err)
		}
	}
	h.handovers.Add(1)
	h.log.Debug("cluster session: handed over", "client", cl.ID, "from", prev.Node, "subscriptions", len(snap.Subs), "messages", len(snap.Inflight)+len(rest.Inflight))
}

// OnSubscribed implements mqtt.Hook: the subscriptions of a persistent
// session are written to its entry in the bucket (before the SUBACK), so
// that they outlive this node.
func (h *Hook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) { h.subsChanged(cl) }

// OnUnsubscribed implements mqtt.Hook.
func (h *Hook) OnUnsubscribed(cl *mqtt.Client, _ packets.Packet) { h.subsChanged(cl) }

func (h *Hook) subsChanged(cl *mqtt.Client) {
	if ephemeral(cl) || cl.IsTakenOver() {
		return
	}
	h.mu.Lock()
	c := h.conns[cl]
	h.mu.Unlock()
	if c == nil {
		return // not a connection (a session being installed or dropped)
	}
	unlock := h.ids.Lock(cl.ID)
	defer unlock()
	h.saveSubs(cl, c, subscriptions(cl))
}

// saveSubs writes a session's subscriptions to its entry, if the entry is
// still the one the connection wrote (compare-and-set): a newer owner's
// entry is left alone.
func (h *Hook) saveSubs(cl *mqtt.Client, c *conn, subs []storage.Subscription) {
	id := cl.ID
	h.mu.Lock()
	rev := c.rev
	h.mu.Unlock()
	if rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
	defer cancel()
	val, _ := json.Marshal(owner{Node: h.cfg.Node, Holder: h.holderOf(cl), Subs: subs})
	next, err := h.kv.Update(ctx, key(id), val, rev)
	if err != nil {
		if !casFailed(err) {
			h.log.Warn("cluster session: subscriptions not written to the bucket", "client", id, "error", err)
		}
		return
	}
	h.mu.Lock()
	if c.rev == rev {
		c.rev = next
	}
	h.mu.Unlock()
}

// OnSessionEstablished implements mqtt.Hook: a connection that a newer
// one on another node took over before its CONNACK went out is closed now.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	c := h.conns[cl]
	revoked := false
	if c != nil {
		c.established = true
		revoked = c.revoked
	}
	h.mu.Unlock()
	if revoked {
		_ = h.cfg.Server.DisconnectClient(cl, packets.ErrSessionTakenOver)
	}
}

// OnDisconnect implements mqtt.Hook. When entries name holders, a session
// that ends with its connection gives its entry up; one that lives on
// offline keeps it until it expires (OnClientExpired).
func (h *Hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	h.mu.Lock()
	c, tracked := h.conns[cl]
	if tracked {
		delete(h.conns, cl)
		if m := h.byID[cl.ID]; m != nil {
			delete(m, cl)
			if len(m) == 0 {
				delete(h.byID, cl.ID)
			}
		}
	}
	var rev uint64
	if tracked && h.cfg.Identity != nil {
		rev = c.rev
		if !expire {
			h.offline[cl.ID] = rev
		}
	}
	h.mu.Unlock()
	if rev != 0 && expire {
		h.release(cl.ID, rev)
	}
}

// OnClientExpired implements mqtt.Hook: a persistent session that
// expired here gives its entry up (when entries name holders).
func (h *Hook) OnClientExpired(cl *mqtt.Client) {
	if h.cfg.Identity == nil {
		return
	}
	h.mu.Lock()
	rev, ok := h.offline[cl.ID]
	dropped := h.dropping[cl]
	delete(h.offline, cl.ID)
	h.mu.Unlock()
	if dropped {
		return
	}
	if !ok {
		// Restored from the store at start: the revision is the entry's,
		// if it names this node and no connection here claimed it since.
		unlock := h.ids.Lock(cl.ID)
		defer unlock()
		h.mu.Lock()
		claimed := len(h.byID[cl.ID]) > 0
		h.mu.Unlock()
		if claimed {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
		defer cancel()
		e, err := h.kv.Get(ctx, key(cl.ID))
		var o owner
		if err != nil || json.Unmarshal(e.Value(), &o) != nil || o.Node != h.cfg.Node {
			return
		}
		rev = e.Revision()
	}
	h.release(cl.ID, rev)
}

// release deletes the entry of a session that ended on this node if it is
// still at rev, the revision the session's connection last wrote
// (compare-and-set: a connect that claimed the id since, here or
// elsewhere, keeps it). The holder no longer holds anything, so it must
// not keep other principals from the client id.
func (h *Hook) release(id string, rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
	defer cancel()
	if err := h.kv.Delete(ctx, key(id), jetstream.LastRevision(rev)); err != nil && !casFailed(err) {
		h.log.Warn("cluster session: ended session's entry not removed", "client", id, "error", err)
	}
}

// Holder returns who holds the session of client id on another node, if
// the entry names one (authentication on): the access hook checks a
// connect against it as against a session on this node. A session on
// this node is the local check's. Without an answer from JetStream the
// connect is not held back (as the connect itself is then accepted on
// this node alone).
func (h *Hook) Holder(id string) (auth.Identity, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
	defer cancel()
	e, err := h.kv.Get(ctx, key(id))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			h.log.Warn("cluster session: holder not read", "client", id, "error", err)
		}
		return auth.Identity{}, false
	}
	var o owner
	if json.Unmarshal(e.Value(), &o) != nil || o.Holder == nil || o.Node == h.cfg.Node {
		return auth.Identity{}, false
	}
	return auth.Identity{Kind: o.Holder.Kind, Name: o.Holder.Name, Method: o.Holder.Method, ClientID: id}, true
}

// holderOf is what the entry says of cl's identity (nil: entries name no
// holder).
func (h *Hook) holderOf(cl *mqtt.Client) *holder {
	if h.cfg.Identity == nil {
		return nil
	}
	id := h.cfg.Identity(cl)
	return &holder{Kind: id.Kind, Name: id.Name, Method: id.Method}
}

// track records a connection's generation; connections whose CONNACK
// failed (closed, never established) are pruned here.
func (h *Hook) track(cl *mqtt.Client, gen uint64) *conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.byID[cl.ID]
	if m == nil {
		m = map[*mqtt.Client]*conn{}
		h.byID[cl.ID] = m
	}
	for o, c := range m {
		if !c.established && o.Closed() {
			delete(m, o)
			delete(h.conns, o)
		}
	}
	c := &conn{gen: gen, rev: gen}
	m[cl] = c
	h.conns[cl] = c
	return c
}

// Generation is a connection's generation (0 if it has none): the
// revision of the ownership entry its connect wrote, higher for a newer
// connection of the same client id on any node. The presence hook orders
// a client's connectivity reports by it.
func (h *Hook) Generation(cl *mqtt.Client) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.conns[cl]; c != nil {
		return int64(c.gen)
	}
	return 0
}

func (h *Hook) revoked(cl *mqtt.Client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.conns[cl]
	return c != nil && c.revoked
}

// request asks a node and decodes its answer.
func (h *Hook) request(node, suffix string, req takeoverRequest) (session, error) {
	var s session
	data, _ := json.Marshal(req)
	msg, err := h.cfg.NC.Request(subject(node, suffix), data, h.cfg.HandoverTimeout)
	if err != nil {
		return s, err
	}
	if e := msg.Header.Get("error"); e != "" {
		return s, errors.New(e)
	}
	return s, json.Unmarshal(msg.Data, &s)
}

func reply(m *nats.Msg, s session) {
	data, err := json.Marshal(s)
	if err != nil {
		replyError(m, err.Error())
		return
	}
	_ = m.Respond(data)
}

// replyError answers a request with an "error" header and no data.
func replyError(m *nats.Msg, text string) {
	out := nats.NewMsg(m.Reply)
	out.Header.Set("error", text)
	_ = m.RespondMsg(out)
}

// onTakeover answers another node that became the owner of a client id:
// close the older connections, and hand over or discard the session.
func (h *Hook) onTakeover(m *nats.Msg) {
	var req takeoverRequest
	if err := json.Unmarshal(m.Data, &req); err != nil || req.Client == "" {
		replyError(m, "bad takeover request")
		return
	}
	unlock := h.ids.Lock(req.Client)
	defer unlock()
	h.mu.Lock()
	var established, pending []*mqtt.Client
	newer := false
	for cl, c := range h.byID[req.Client] {
		switch {
		case c.gen < req.Gen:
			c.revoked = true
			if c.established {
				established = append(established, cl)
			} else {
				pending = append(pending, cl)
			}
		case !cl.Closed():
			newer = true
		}
	}
	h.mu.Unlock()
	h.closeAndRecord(established)
	for _, cl := range pending {
		cl.Stop(packets.ErrSessionTakenOver) // before its CONNACK: just close
	}
	// A new network connection to the session was made on the other node:
	// a will waiting for its delay here (the connection just closed, or
	// one that dropped earlier) is not sent [MQTT-3.1.3-9], as a local
	// reconnect cancels it.
	h.cfg.Server.CancelDelayedWill(req.Client)
	if newer {
		// A newer connection here holds the id; its own claim closes the
		// requester's connection.
		reply(m, session{})
		return
	}
	existing, ok := h.cfg.Server.Clients.Get(req.Client)
	if !ok || !existing.Closed() {
		reply(m, session{})
		return
	}
	if !req.Session || ephemeral(existing) {
		h.drop(existing) // a clean start ends the session [MQTT-3.1.2-4]
		reply(m, session{})
		return
	}
	s := snapshot(existing)
	sent := make(map[uint16]bool, len(s.Inflight))
	for _, msg := range s.Inflight {
		sent[msg.PacketID] = true
	}
	h.mu.Lock()
	h.handed[req.Client] = &handoff{client: existing, gen: req.Gen, sent: sent}
	h.mu.Unlock()
	reply(m, s)
}

// closeAndRecord closes connections taken over by another node (DISCONNECT
// 0x8E) and waits, a bounded time, until their ends are recorded: their
// OnDisconnect hooks ran (the Last hook saw them) and Config.Recorded
// returned. The new node reports its connection after this node's answer,
// so a shared registry gets the end before the start.
func (h *Hook) closeAndRecord(cls []*mqtt.Client) {
	if len(cls) == 0 {
		return
	}
	waits := make([]chan struct{}, len(cls))
	h.mu.Lock()
	for i, cl := range cls {
		waits[i] = make(chan struct{})
		h.ended[cl] = waits[i]
	}
	h.mu.Unlock()
	for _, cl := range cls {
		_ = h.cfg.Server.DisconnectClient(cl, packets.ErrSessionTakenOver) // [MQTT-3.1.4-3]
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.HandoverTimeout/2)
	defer cancel()
	for i, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			h.mu.Lock()
			delete(h.ended, cls[i])
			h.mu.Unlock()
			h.log.Warn("cluster session: a connection taken over did not end in time", "client", cls[i].ID)
		}
	}
	if h.cfg.Recorded != nil {
		if err := h.cfg.Recorded(ctx); err != nil {
			h.log.Warn("cluster session: the end of a connection taken over not recorded before the answer", "error", err)
		}
	}
}

// Last returns the hook to add after all others: it tells the takeover
// that a closed connection's OnDisconnect hooks have run.
func (h *Hook) Last() mqtt.Hook { return &lastHook{h: h} }

type lastHook struct {
	mqtt.HookBase
	h *Hook
}

func (l *lastHook) ID() string { return "umbra-cluster-sessions-last" }

func (l *lastHook) Provides(b byte) bool { return b == mqtt.OnDisconnect }

func (l *lastHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	l.h.mu.Lock()
	w := l.h.ended[cl]
	delete(l.h.ended, cl)
	l.h.mu.Unlock()
	if w != nil {
		close(w)
	}
}

// onRelease answers the node that stored a session handed to it: send
// what was queued since, and drop the local copy.
func (h *Hook) onRelease(m *nats.Msg) {
	var req takeoverRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		replyError(m, "bad release request")
		return
	}
	unlock := h.ids.Lock(req.Client)
	defer unlock()
	h.mu.Lock()
	ho := h.handed[req.Client]
	if ho != nil && ho.gen == req.Gen {
		delete(h.handed, req.Client)
	} else {
		ho = nil
	}
	h.mu.Unlock()
	var rest session
	if ho != nil {
		if cur, ok := h.cfg.Server.Clients.Get(req.Client); ok && cur == ho.client && cur.Closed() {
			for _, msg := range snapshot(cur).Inflight {
				if !ho.sent[msg.PacketID] {
					rest.Inflight = append(rest.Inflight, msg)
				}
			}
			h.drop(cur)
		}
	}
	reply(m, rest)
}

// drop deletes a disconnected session from this node, running the hooks
// Mochi runs when a session expires (the session store forgets it).
func (h *Hook) drop(cl *mqtt.Client) {
	s := h.cfg.Server
	if !s.Clients.DeleteIf(cl.ID, cl) {
		return
	}
	s.UnsubscribeClient(cl)
	cl.ClearInflights()
	// The session went to a newer connection (here or on another node),
	// which owns the entry now: this hook's OnClientExpired leaves it.
	h.mu.Lock()
	h.dropping[cl] = true
	h.mu.Unlock()
	s.Hooks().OnClientExpired(cl)
	h.mu.Lock()
	delete(h.dropping, cl)
	h.mu.Unlock()
}

// DropForeign drops the disconnected sessions this node restored from its
// store whose entry names another node: that node took the session over
// while this one was down, so the copy here is out of date (and would
// otherwise keep its subscriptions and queue messages until it expires).
// The broker runs it once after start.
func (h *Hook) DropForeign(ctx context.Context) {
	for id, cl := range h.cfg.Server.Clients.GetAll() {
		if ctx.Err() != nil {
			return
		}
		if !cl.Closed() {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
		e, err := h.kv.Get(gctx, key(id))
		cancel()
		if err != nil {
			continue // no entry, or JetStream does not answer: keep it
		}
		var o owner
		if json.Unmarshal(e.Value(), &o) != nil || o.Node == "" || o.Node == h.cfg.Node {
			continue
		}
		unlock := h.ids.Lock(id)
		if cur, ok := h.cfg.Server.Clients.Get(id); ok && cur == cl && cl.Closed() {
			h.drop(cl)
			h.log.Info("cluster session: dropped a session another node took over while this one was down", "client", id, "owner", o.Node)
		}
		unlock()
	}
}

// dropStale drops this node's own earlier copy of cl's session: the owner
// record named another node, so that copy is out of date.
func (h *Hook) dropStale(cl *mqtt.Client) {
	if old, ok := h.cfg.Server.Clients.Get(cl.ID); ok && old != cl && old.Closed() {
		h.drop(old)
	}
}

// install adds a handed-over session to Mochi as a disconnected session,
// as Mochi restores one at start, and runs the hooks for its
// subscriptions and messages.
func (h *Hook) install(snap session) *mqtt.Client {
	s := h.cfg.Server
	cl := s.RestoredClient(snap.Client)
	cl.Stop(packets.ErrSessionTakenOver)
	s.Clients.Add(cl)
	if len(snap.Subs) > 0 {
		sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}}
		var codes []byte
		for _, r := range snap.Subs {
			sb := packets.Subscription{Filter: r.Filter, RetainHandling: r.RetainHandling, Qos: r.Qos,
				RetainAsPublished: r.RetainAsPublished, NoLocal: r.NoLocal, Identifier: r.Identifier}
			if s.Topics.Subscribe(cl.ID, sb) {
				atomic.AddInt64(&s.Info.Subscriptions, 1)
			}
			cl.State.Subscriptions.Add(sb.Filter, sb)
			sub.Filters = append(sub.Filters, sb)
			codes = append(codes, sb.Qos)
		}
		s.Hooks().OnSubscribed(cl, sub, codes)
	}
	h.addInflight(cl, snap.Inflight)
	return cl
}

func (h *Hook) addInflight(cl *mqtt.Client, msgs []storage.Message) {
	s := h.cfg.Server
	for _, m := range msgs {
		pk := m.ToPacket()
		if cl.State.Inflight.Set(pk) {
			atomic.AddInt64(&s.Info.Inflight, 1)
		}
		s.Hooks().OnQosPublish(cl, pk, m.Sent, 0)
	}
}

func (h *Hook) flush() error {
	if h.cfg.Flush == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
	defer cancel()
	return h.cfg.Flush(ctx)
}

// ephemeral reports whether a session ends with its connection.
func ephemeral(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval == 0
	}
	return cl.Properties.Clean
}

// snapshot copies a disconnected session.
func snapshot(cl *mqtt.Client) session {
	s := session{Found: true, Client: hooks.ClientRecord(cl), Subs: subscriptions(cl)}
	for _, pk := range cl.State.Inflight.GetAll(false) {
		s.Inflight = append(s.Inflight, *hooks.MessageRecord(pk, cl.ID, storage.InflightKey, cl.ID, 0))
	}
	return s
}

func subscriptions(cl *mqtt.Client) []storage.Subscription {
	var out []storage.Subscription
	for _, sb := range cl.State.Subscriptions.GetAll() {
		out = append(out, storage.Subscription{ID: cl.ID + "\x00" + sb.Filter, T: storage.SubscriptionKey, Client: cl.ID,
			Qos: sb.Qos, Filter: sb.Filter, Identifier: sb.Identifier, NoLocal: sb.NoLocal,
			RetainHandling: sb.RetainHandling, RetainAsPublished: sb.RetainAsPublished})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Filter < out[j].Filter })
	return out
}
