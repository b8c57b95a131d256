// Package bridge carries MQTT messages between the Umbra nodes of a
// cluster (docs/cluster.md, "Cross-node delivery") over NATS subjects,
// using nats-server's own MQTT topic <-> subject mapping (mapping.go), so
// that NATS-native services see device traffic and can publish to devices.
//
// # Out: what a node publishes
//
// Every message Mochi accepts on this node reaches the bridge's OnPublished
// (OnWillSent for wills): a device's publish, and Umbra's own publishes
// through Mochi's inline client (shadow replies, jobs notifications,
// registry lifecycle events). The bridge publishes it once on core NATS,
// on the mapped subject, with headers carrying the QoS (nats-server's
// "Nmqtt-Pub"), the retain flag, the MQTT 5 properties it can (content
// type, response topic, correlation data, payload format, message expiry
// interval, user properties) and this node's name. A rejected request
// (Mochi's Ignore) is not published; $SYS topics stay on the node; topics
// that map into NATS's or Umbra's own subject spaces ($JS, $KV, _INBOX, …)
// are never published, so a device cannot reach the JetStream API.
// A retained message is also written to the JetStream stream UMBRA_RETAINED
// (subject "$UMBRA.retained.<subject>", one message per subject; an empty
// payload is kept as the deletion).
//
// # In: what a node delivers
//
// A node subscribes on NATS only to the filters its local sessions hold:
// one NATS subscription (two for "x/#": "x.>" and "x") per distinct filter,
// reference-counted by holder (the client id; an inline subscription's
// identifier). A message that arrives is delivered only to this node's
// subscribers, through Mochi's DeliverToSubscribers (fork patch 16): no
// OnPublish hook runs, so the receiving node's shadow and jobs routers
// never see it, nothing is retained from it, and it is never published to
// NATS again. A node ignores its own messages on plain subscriptions
// (Mochi delivered them locally already). When several local filters
// match one subject, the message arrives once per NATS subscription; only
// the canonical one (the exact filter if there is one, else the smallest
// matching wildcard filter) delivers it, and Mochi's matching then reaches
// every local subscriber once.
//
// Shared subscriptions "$share/g/F" are NATS queue subscriptions (queue g on
// F's subject), so one message reaches one member of g across the cluster;
// a node's own publishes reach its local group members only through that
// queue (OnSelectSubscribers drops shared subscribers from local delivery).
//
// Retained messages: every node mirrors UMBRA_RETAINED into its Mochi
// retained index with an ordered consumer (last message per subject, then
// live), in stream order, so the nodes converge on the stream's order.
// Mochi's own subscribe path then sends them.
//
// # Contract for code that changes subscriptions
//
// The bridge's interest follows Mochi's OnSubscribed and OnUnsubscribed
// hooks. Subscriptions that appear without those hooks (restored from the
// session store at start, or placed directly in the topics index) are
// picked up by Resync, which the broker calls once after Mochi has read its
// store; code that adds subscriptions outside Mochi's normal subscribe path
// must call Resync (or Subscribe) after doing so. A session taken over
// keeps its client id, so its subscriptions keep counting; subscriptions
// of disconnected persistent sessions count until Mochi unsubscribes the
// expired session (its QoS 1 messages are queued on the node holding it).
package bridge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/umbra-iot/umbra/internal/cluster"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// NATS headers of a bridged message.
const (
	HdrQoS             = "Nmqtt-Pub" // nats-server's: the QoS digit
	HdrNode            = "Umbra-Node"
	HdrRetain          = "Umbra-Retain" // "1"
	HdrContentType     = "Umbra-Content-Type"
	HdrResponseTopic   = "Umbra-Response-Topic"
	HdrCorrelationData = "Umbra-Correlation-Data" // base64 (standard)
	HdrPayloadFormat   = "Umbra-Payload-Format"   // "0" or "1"
	HdrMessageExpiry   = "Umbra-Message-Expiry"   // seconds
	HdrUserProperties  = "Umbra-User-Properties"  // JSON [[key, value], ...]
)

// RetainedStream holds the retained messages, RetainedPrefix+subject each.
const (
	RetainedStream = "UMBRA_RETAINED"
	RetainedPrefix = "$UMBRA.retained."
)

// origin marks packets the bridge delivers: a NUL cannot be part of an MQTT
// client id [MQTT-1.5.4-2], so no client's NoLocal matches it.
const origin = "\x00umbra-bridge"

// Config is what the bridge needs.
type Config struct {
	NC       *nats.Conn
	Server   *mqtt.Server
	Node     string        // this node's name (HdrNode)
	Replicas int           // of UMBRA_RETAINED
	Timeout  time.Duration // JetStream requests, retained catch-up at Start
	Logger   *slog.Logger
	// Buffer is the inbound queue (messages); default 65536. NATS drops
	// messages for this node beyond it (a slow consumer).
	Buffer int
}

// Bridge is the Mochi hook and the NATS side of cross-node delivery.
type Bridge struct {
	mqtt.HookBase
	cfg Config
	log *slog.Logger
	js  jetstream.JetStream
	in  chan *nats.Msg

	mu      sync.Mutex
	filters map[string]*interest // by filter as subscribed
	bySub   map[*nats.Subscription]*interest
	exact   map[string]struct{} // plain filters without wildcards
	wild    map[string]struct{} // plain filters with wildcards

	retainedSeq      atomic.Uint64
	retainedSeen     chan struct{} // signalled on each retained message
	cmu              sync.Mutex    // consume, closed
	consume          jetstream.ConsumeContext
	closed           bool
	retainedRestarts atomic.Int64 // mirror restarted by watchRetained

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	msgs   *prometheus.CounterVec
	errs   *prometheus.CounterVec
	gauges prometheus.Collector
}

type interest struct {
	filter  string // as subscribed ("$share/g/a/+" or "a/+")
	group   string // shared subscription group, "" for plain
	inner   string // the filter without "$share/g/"
	wild    bool
	holders map[string]struct{}
	subs    []*nats.Subscription
}

// New builds the bridge; add it to Mochi as a hook, then call Start once
// Mochi serves.
func New(cfg Config) (*Bridge, error) {
	if cfg.NC == nil || cfg.Server == nil || cfg.Node == "" {
		return nil, errors.New("bridge: NATS connection, Mochi server and node name are required")
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 1 << 16
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{
		cfg: cfg, log: log, in: make(chan *nats.Msg, cfg.Buffer),
		filters: map[string]*interest{}, bySub: map[*nats.Subscription]*interest{},
		exact: map[string]struct{}{}, wild: map[string]struct{}{},
		retainedSeen: make(chan struct{}, 1), stop: make(chan struct{}),
		msgs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umbra_cluster_bridge_messages_total",
			Help: "MQTT messages bridged over NATS: out (published to NATS), in (delivered here from NATS), retained_in (mirrored into the local retained index).",
		}, []string{"direction"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umbra_cluster_bridge_errors_total",
			Help: "Cross-node delivery failures by operation: publish, retained (JetStream write), subscribe, topic (no NATS subject for it).",
		}, []string{"op"}),
	}
	b.gauges = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "umbra_cluster_bridge_filters",
		Help: "Distinct MQTT filters this node subscribes to on NATS.",
	}, func() float64 {
		b.mu.Lock()
		defer b.mu.Unlock()
		return float64(len(b.filters))
	})
	for _, l := range []string{"out", "in", "retained_in"} {
		b.msgs.WithLabelValues(l)
	}
	for _, l := range []string{"publish", "retained", "subscribe", "topic"} {
		b.errs.WithLabelValues(l)
	}
	var err error
	b.js, err = jetstream.New(cfg.NC, jetstream.WithDefaultTimeout(cfg.Timeout),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			b.errs.WithLabelValues("retained").Inc()
			b.log.Warn("bridge: retained message not stored in JetStream", "subject", m.Subject, "error", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("bridge: jetstream: %w", err)
	}
	return b, nil
}

// Collectors are the bridge's metrics.
func (b *Bridge) Collectors() []prometheus.Collector {
	return []prometheus.Collector{b.msgs, b.errs, b.gauges}
}

// Start creates (or updates) the retained stream, mirrors it into Mochi's
// retained index (waiting, up to Timeout, until what the stream held at
// start is in), picks up the subscriptions Mochi restored (Resync) and
// starts delivering.
func (b *Bridge) Start(ctx context.Context) error {
	b.wg.Add(1)
	go b.run()
	b.Resync()
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	var st jetstream.Stream
	err := cluster.Retry(ctx, func(ctx context.Context) (err error) {
		st, err = b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:              RetainedStream,
			Description:       "Umbra: MQTT retained messages, one per topic (an empty one is a deletion)",
			Subjects:          []string{RetainedPrefix + ">"},
			MaxMsgsPerSubject: 1,
			Replicas:          b.cfg.Replicas,
			Storage:           jetstream.FileStorage,
			Discard:           jetstream.DiscardOld,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("bridge: retained stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("bridge: retained stream: %w", err)
	}
	if err := b.mirror(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy}); err != nil {
		return err
	}
	b.wg.Add(1)
	go b.watchRetained(st)
	if info.State.Msgs == 0 {
		return nil
	}
	for b.retainedSeq.Load() < info.State.LastSeq {
		select {
		case <-b.retainedSeen:
		case <-ctx.Done():
			b.log.Warn("bridge: retained messages not all loaded at start; they keep arriving", "have", b.retainedSeq.Load(), "want", info.State.LastSeq)
			return nil
		}
	}
	return nil
}

// mirror starts the ordered consumer that copies the retained stream into
// Mochi's retained index, replacing the one running.
func (b *Bridge) mirror(ctx context.Context, cfg jetstream.OrderedConsumerConfig) error {
	cons, err := b.js.OrderedConsumer(ctx, RetainedStream, cfg)
	if err != nil {
		return fmt.Errorf("bridge: retained consumer: %w", err)
	}
	// Short expiry and heartbeat, as internal/clusterkv's follower: the
	// mirror resumes within seconds after its server restarts.
	cc, err := cons.Consume(b.retained, jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return fmt.Errorf("bridge: retained consumer: %w", err)
	}
	b.cmu.Lock()
	defer b.cmu.Unlock()
	if b.closed {
		cc.Stop()
		return nil
	}
	if b.consume != nil {
		b.consume.Stop()
	}
	b.consume = cc
	return nil
}

// retainedStallAfter is how long the mirror may stay behind the retained
// stream without applying anything before it is started again after the
// last message it applied. Why: internal/clusterkv's follower, an ordered
// consumer like this one, was seen after a NATS server restart to keep
// its heartbeats but deliver nothing more; a stalled mirror leaves the
// node's retained messages stale for good.
var retainedStallAfter = 3 * time.Second

// watchRetained compares, every second, the retained stream's last
// sequence with the last one the mirror applied, and restarts a mirror
// that is behind and has not moved for retainedStallAfter.
func (b *Bridge) watchRetained(st jetstream.Stream) {
	defer b.wg.Done()
	t := time.NewTicker(retainedStallAfter / 3)
	defer t.Stop()
	var seen uint64
	moved := time.Now()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
		info, err := st.Info(ctx)
		cancel()
		if err != nil {
			continue // JetStream unreachable: nothing to catch up with now
		}
		have := b.retainedSeq.Load()
		if have >= info.State.LastSeq || have != seen {
			seen, moved = have, time.Now()
			continue
		}
		if time.Since(moved) < retainedStallAfter {
			continue
		}
		b.log.Warn("bridge: retained mirror stalled; starting it again", "applied", have, "stream", info.State.LastSeq)
		ctx, cancel = context.WithTimeout(context.Background(), b.cfg.Timeout)
		err = b.mirror(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: have + 1})
		cancel()
		if err != nil {
			b.errs.WithLabelValues("retained").Inc()
			b.log.Warn("bridge: retained mirror not started again", "error", err)
			continue
		}
		b.retainedRestarts.Add(1)
		moved = time.Now()
	}
}

// Close stops delivery and unsubscribes from NATS.
func (b *Bridge) Close() {
	b.stopOnce.Do(func() {
		b.cmu.Lock()
		b.closed = true
		if b.consume != nil {
			b.consume.Stop()
		}
		b.cmu.Unlock()
		b.mu.Lock()
		for _, in := range b.filters {
			for _, s := range in.subs {
				_ = s.Unsubscribe()
			}
		}
		b.filters, b.bySub = map[string]*interest{}, map[*nats.Subscription]*interest{}
		b.exact, b.wild = map[string]struct{}{}, map[string]struct{}{}
		b.mu.Unlock()
		close(b.stop)
		b.wg.Wait()
	})
}

// ID implements mqtt.Hook.
func (b *Bridge) ID() string { return "umbra-cluster-bridge" }

// Provides implements mqtt.Hook.
func (b *Bridge) Provides(x byte) bool {
	switch x {
	case mqtt.OnPublished, mqtt.OnWillSent, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnSelectSubscribers:
		return true
	}
	return false
}

// OnPublished forwards a message accepted here to the other nodes.
func (b *Bridge) OnPublished(_ *mqtt.Client, pk packets.Packet) { b.forward(pk) }

// OnWillSent forwards a will message published here.
func (b *Bridge) OnWillSent(_ *mqtt.Client, pk packets.Packet) { b.forward(pk) }

// OnSelectSubscribers keeps shared subscribers out of the local delivery of
// a message published here: they get it through their NATS queue group,
// which picks one member across the cluster (this node's included).
func (b *Bridge) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	if !b.bridged(pk.TopicName) {
		return subs
	}
	subs.Shared = map[string]map[string]packets.Subscription{}
	subs.SharedSelected = map[string]packets.Subscription{}
	return subs
}

// OnSubscribed adds the granted filters to this node's NATS interest.
func (b *Bridge) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}
		b.Subscribe(holder(cl, f), f.Filter)
	}
}

// OnUnsubscribed removes the filters from this node's NATS interest.
func (b *Bridge) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	for _, f := range pk.Filters {
		b.Unsubscribe(holder(cl, f), f.Filter)
	}
}

func holder(cl *mqtt.Client, f packets.Subscription) string {
	if cl.Net.Inline {
		return "\x00inline/" + strconv.Itoa(f.Identifier)
	}
	return cl.ID
}

// Resync adds every subscription in Mochi's sessions (connected or not) to
// the NATS interest; idempotent.
func (b *Bridge) Resync() {
	for _, cl := range b.cfg.Server.Clients.GetAll() {
		if cl.Net.Inline {
			continue
		}
		for _, sub := range cl.State.Subscriptions.GetAll() {
			b.Subscribe(cl.ID, sub.Filter)
		}
	}
}

// Subscribe records that holder subscribes to filter, subscribing on NATS
// when it is the filter's first holder.
func (b *Bridge) Subscribe(holder, filter string) {
	inner, group := filter, ""
	if g, f, ok := splitShared(filter); ok {
		inner, group = f, g
	}
	if localOnly(inner) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	in := b.filters[filter]
	if in == nil {
		in = &interest{filter: filter, group: group, inner: inner, wild: strings.ContainsAny(inner, "+#"), holders: map[string]struct{}{}}
		b.filters[filter] = in
		subjects, err := FilterSubjects(inner)
		if err != nil {
			b.errs.WithLabelValues("subscribe").Inc()
			b.log.Warn("bridge: filter has no NATS subject; it receives only this node's messages", "filter", filter, "error", err)
		}
		for _, s := range subjects {
			var sub *nats.Subscription
			if group != "" {
				sub, err = b.cfg.NC.ChanQueueSubscribe(s, group, b.in)
			} else {
				sub, err = b.cfg.NC.ChanSubscribe(s, b.in)
			}
			if err != nil {
				b.errs.WithLabelValues("subscribe").Inc()
				b.log.Warn("bridge: NATS subscribe", "filter", filter, "subject", s, "error", err)
				continue
			}
			in.subs = append(in.subs, sub)
			b.bySub[sub] = in
		}
		if group == "" {
			if in.wild {
				b.wild[inner] = struct{}{}
			} else {
				b.exact[inner] = struct{}{}
			}
		}
	}
	in.holders[holder] = struct{}{}
}

// Unsubscribe removes holder's subscription to filter, unsubscribing on
// NATS when it was the last holder.
func (b *Bridge) Unsubscribe(holder, filter string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	in := b.filters[filter]
	if in == nil {
		return
	}
	delete(in.holders, holder)
	if len(in.holders) > 0 {
		return
	}
	for _, s := range in.subs {
		_ = s.Unsubscribe()
		delete(b.bySub, s)
	}
	delete(b.filters, filter)
	if in.group == "" {
		delete(b.wild, in.inner)
		delete(b.exact, in.inner)
	}
}

// Filters lists the filters this node subscribes to on NATS (tests, debugging).
func (b *Bridge) Filters() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.filters))
	for f := range b.filters {
		out = append(out, f)
	}
	return out
}

// localOnly: $SYS describes this node only.
func localOnly(topic string) bool {
	return topic == "$SYS" || strings.HasPrefix(topic, "$SYS/")
}

// reservedSubject reports subjects that are NATS's or Umbra's own: never
// published from MQTT (a device must not reach the JetStream API or the
// shadow bucket) and never delivered to MQTT subscribers.
func reservedSubject(subject string) bool {
	first, _, _ := strings.Cut(subject, ".")
	if strings.HasPrefix(first, "_") {
		return true // _INBOX, _R_: replies
	}
	switch first {
	case "$JS", "$JSC", "$KV", "$O", "$SYS", "$NRG", "$MQTT", "$UMBRA", "$SRV", "$G", "$LDS":
		return true
	}
	return false
}

// bridged reports whether messages on topic cross nodes.
func (b *Bridge) bridged(topic string) bool {
	if localOnly(topic) {
		return false
	}
	s, err := TopicToSubject(topic)
	return err == nil && !reservedSubject(s)
}

func (b *Bridge) forward(pk packets.Packet) {
	if pk.Ignore || pk.Origin == origin || localOnly(pk.TopicName) {
		return
	}
	subject, err := TopicToSubject(pk.TopicName)
	if err != nil {
		b.errs.WithLabelValues("topic").Inc()
		return
	}
	if reservedSubject(subject) {
		return
	}
	m := &nats.Msg{Subject: subject, Header: b.header(pk), Data: pk.Payload}
	if err := b.cfg.NC.PublishMsg(m); err != nil {
		b.errs.WithLabelValues("publish").Inc()
		b.log.Warn("bridge: publish to NATS", "topic", pk.TopicName, "error", err)
		return
	}
	b.msgs.WithLabelValues("out").Inc()
	if pk.FixedHeader.Retain {
		r := &nats.Msg{Subject: RetainedPrefix + subject, Header: m.Header, Data: pk.Payload}
		if _, err := b.js.PublishMsgAsync(r); err != nil {
			b.errs.WithLabelValues("retained").Inc()
			b.log.Warn("bridge: retained message not stored in JetStream", "topic", pk.TopicName, "error", err)
		}
	}
}

func (b *Bridge) header(pk packets.Packet) nats.Header {
	h := nats.Header{}
	h.Set(HdrNode, b.cfg.Node)
	h.Set(HdrQoS, strconv.Itoa(int(pk.FixedHeader.Qos)))
	if pk.FixedHeader.Retain {
		h.Set(HdrRetain, "1")
	}
	p := pk.Properties
	// A header value cannot hold a line break: such a content type or
	// response topic (legal UTF-8 in MQTT, absurd in practice) is left out.
	if p.ContentType != "" && !strings.ContainsAny(p.ContentType, "\r\n") {
		h.Set(HdrContentType, p.ContentType)
	}
	if p.ResponseTopic != "" && !strings.ContainsAny(p.ResponseTopic, "\r\n") {
		h.Set(HdrResponseTopic, p.ResponseTopic)
	}
	if len(p.CorrelationData) > 0 {
		h.Set(HdrCorrelationData, base64.StdEncoding.EncodeToString(p.CorrelationData))
	}
	if p.PayloadFormatFlag {
		h.Set(HdrPayloadFormat, strconv.Itoa(int(p.PayloadFormat)))
	}
	if p.MessageExpiryInterval > 0 {
		h.Set(HdrMessageExpiry, strconv.FormatUint(uint64(p.MessageExpiryInterval), 10))
	}
	if len(p.User) > 0 {
		pairs := make([][2]string, len(p.User))
		for i, u := range p.User {
			pairs[i] = [2]string{u.Key, u.Val}
		}
		j, _ := json.Marshal(pairs)
		h.Set(HdrUserProperties, string(j))
	}
	return h
}

// packet rebuilds the MQTT message from a NATS one. A message without
// HdrQoS (a NATS-native publisher) is QoS 0, as nats-server delivers it.
func packet(h nats.Header, topic string, data []byte) packets.Packet {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic, Payload: data, Origin: origin, Created: time.Now().Unix(),
	}
	if q := h.Get(HdrQoS); q != "" && q[0] >= '0' && q[0] <= '2' {
		pk.FixedHeader.Qos = q[0] - '0'
	}
	pk.FixedHeader.Retain = h.Get(HdrRetain) == "1"
	pk.Properties.ContentType = h.Get(HdrContentType)
	pk.Properties.ResponseTopic = h.Get(HdrResponseTopic)
	if v := h.Get(HdrCorrelationData); v != "" {
		pk.Properties.CorrelationData, _ = base64.StdEncoding.DecodeString(v)
	}
	if v := h.Get(HdrPayloadFormat); v == "0" || v == "1" {
		pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = v[0]-'0', true
	}
	if v, err := strconv.ParseUint(h.Get(HdrMessageExpiry), 10, 32); err == nil {
		pk.Properties.MessageExpiryInterval = uint32(v)
	}
	if v := h.Get(HdrUserProperties); v != "" {
		var pairs [][2]string
		if json.Unmarshal([]byte(v), &pairs) == nil {
			for _, p := range pairs {
				pk.Properties.User = append(pk.Properties.User, packets.UserProperty{Key: p[0], Val: p[1]})
			}
		}
	}
	return pk
}

func (b *Bridge) run() {
	defer b.wg.Done()
	for {
		select {
		case m := <-b.in:
			b.deliver(m)
		case <-b.stop:
			return
		}
	}
}

// deliver hands a message from NATS to this node's subscribers.
func (b *Bridge) deliver(m *nats.Msg) {
	if reservedSubject(m.Subject) {
		return
	}
	topic := SubjectToTopic(m.Subject)
	if topic == "" || !mqtt.IsValidFilter(topic, true) {
		return // not an MQTT topic name (a NATS subject with '+' or '#')
	}
	b.mu.Lock()
	in := b.bySub[m.Sub]
	var choose func(*mqtt.Subscribers) *mqtt.Subscribers
	switch {
	case in == nil: // unsubscribed meanwhile
	case in.group != "":
		choose = onlyGroup(in.filter)
	case m.Header.Get(HdrNode) == b.cfg.Node:
		// published here: Mochi delivered it already
	case b.canonical(in, topic):
		choose = noShared
	}
	b.mu.Unlock()
	if choose == nil {
		return
	}
	b.cfg.Server.DeliverToSubscribers(packet(m.Header, topic, m.Data), choose)
	b.msgs.WithLabelValues("in").Inc()
}

// canonical reports whether in is the one plain filter of this node that
// delivers a message on topic: every matching NATS subscription receives
// it, and Mochi's delivery reaches all local subscribers at once.
func (b *Bridge) canonical(in *interest, topic string) bool {
	if !in.wild {
		return true
	}
	if _, ok := b.exact[topic]; ok {
		return false
	}
	best := ""
	for f := range b.wild {
		if (best == "" || f < best) && matches(f, topic) {
			best = f
		}
	}
	return best == in.inner
}

func noShared(s *mqtt.Subscribers) *mqtt.Subscribers {
	s.Shared = map[string]map[string]packets.Subscription{}
	s.SharedSelected = map[string]packets.Subscription{}
	return s
}

// onlyGroup delivers to one member of the shared subscription filter (as
// Mochi keys it: the filter as subscribed) and to nobody else.
func onlyGroup(filter string) func(*mqtt.Subscribers) *mqtt.Subscribers {
	return func(s *mqtt.Subscribers) *mqtt.Subscribers {
		out := &mqtt.Subscribers{
			Shared:              map[string]map[string]packets.Subscription{},
			SharedSelected:      map[string]packets.Subscription{},
			Subscriptions:       map[string]packets.Subscription{},
			InlineSubscriptions: map[int]mqtt.InlineSubscription{},
		}
		if members, ok := s.Shared[filter]; ok {
			out.Shared[filter] = members
		}
		return out
	}
}

// retained mirrors one message of the retained stream into Mochi's
// retained index (an empty payload deletes the topic's).
func (b *Bridge) retained(m jetstream.Msg) {
	subject, ok := strings.CutPrefix(m.Subject(), RetainedPrefix)
	if ok {
		topic := SubjectToTopic(subject)
		if topic != "" && mqtt.IsValidFilter(topic, true) {
			pk := packet(m.Headers(), topic, m.Data())
			pk.FixedHeader.Retain = true
			b.cfg.Server.Topics.RetainMessage(pk)
			b.msgs.WithLabelValues("retained_in").Inc()
		}
	}
	if md, err := m.Metadata(); err == nil {
		for { // never backwards (a restarted mirror delivers from the next one on)
			cur := b.retainedSeq.Load()
			if md.Sequence.Stream <= cur || b.retainedSeq.CompareAndSwap(cur, md.Sequence.Stream) {
				break
			}
		}
	}
	select {
	case b.retainedSeen <- struct{}{}:
	default:
	}
}
