// UMBRA PATCH: tests for the changes described in UMBRA-PATCHES.md.

package mqtt

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// publishTo returns a QoS 0 PUBLISH carrying topic, for queueing on cl.
func publishTo(topic string) *packets.Packet {
	return &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     []byte("x"),
	}
}

// readPublish reads one packet from r and returns its topic.
func readPublish(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	fh := new(packets.FixedHeader)
	b, err := r.ReadByte()
	require.NoError(t, err)
	require.NoError(t, fh.Decode(b))
	fh.Remaining, _, err = packets.DecodeLength(r)
	require.NoError(t, err)
	pk := packets.Packet{FixedHeader: *fh, ProtocolVersion: 4}
	body := make([]byte, fh.Remaining)
	_, err = io.ReadFull(r, body)
	require.NoError(t, err)
	require.NoError(t, pk.PublishDecode(body))
	return pk.TopicName
}

// writerIdle waits until no writer goroutine owns cl's queue.
func writerIdle(t *testing.T, cl *Client) {
	t.Helper()
	require.Eventually(t, func() bool {
		cl.State.outbound.mu.Lock()
		defer cl.State.outbound.mu.Unlock()
		return !cl.State.outbound.writing
	}, 5*time.Second, time.Millisecond)
}

func TestOutboundQueueWritesInOrderThenStopsWriter(t *testing.T) {
	cl, r, _ := newTestClient()
	defer cl.Stop(errClientStop)
	writerIdle(t, cl) // newTestClient's WriteLoop found nothing to write

	br := bufio.NewReader(r)
	for round := 0; round < 3; round++ { // the writer starts again for every burst
		topics := []string{"a", "b", "c"}
		for _, topic := range topics {
			require.True(t, cl.enqueue(publishTo(topic)))
		}
		for _, want := range topics {
			require.Equal(t, want, readPublish(t, br), "round %d", round)
		}
		writerIdle(t, cl)
		require.Zero(t, cl.State.outbound.waiting.Load())
		require.Zero(t, len(cl.State.outbound.packets))
	}
}

func TestOutboundQueueRefusesBeyondMaximum(t *testing.T) {
	cl, r, _ := newTestClient() // MaximumClientWritesPending: 3
	defer cl.Stop(errClientStop)
	writerIdle(t, cl)

	// Hold the queue's lock so the writer cannot take anything: the queue
	// itself must refuse the fourth packet.
	cl.State.outbound.mu.Lock()
	cl.State.outbound.writing = true
	cl.State.outbound.packets = append(cl.State.outbound.packets, publishTo("1"), publishTo("2"), publishTo("3"))
	cl.State.outbound.mu.Unlock()
	require.False(t, cl.enqueue(publishTo("4")))

	// Hand the queue back to a writer: all three arrive, the refused one not.
	cl.State.outbound.mu.Lock()
	cl.State.outbound.writing = false
	cl.State.outbound.mu.Unlock()
	go cl.WriteLoop()
	br := bufio.NewReader(r)
	for _, want := range []string{"1", "2", "3"} {
		require.Equal(t, want, readPublish(t, br))
	}
	writerIdle(t, cl)
}

func TestOutboundQueueDiscardedWhenClientStops(t *testing.T) {
	cl, _, _ := newTestClient()
	writerIdle(t, cl)
	cl.Stop(errClientStop)

	require.True(t, cl.enqueue(publishTo("late")))
	writerIdle(t, cl)
	require.Zero(t, len(cl.State.outbound.packets))
}

func TestOutboundQueueReleasesBurstCapacity(t *testing.T) {
	cl, r, _ := newTestClient()
	defer cl.Stop(errClientStop)
	cl.ops.options.Capabilities.MaximumClientWritesPending = 100
	writerIdle(t, cl)

	cl.State.outbound.mu.Lock() // queue a burst before the writer may start
	for i := 0; i < 50; i++ {
		cl.State.outbound.packets = append(cl.State.outbound.packets, publishTo("burst"))
	}
	cl.State.outbound.mu.Unlock()
	go cl.WriteLoop()
	br := bufio.NewReader(r)
	for i := 0; i < 50; i++ {
		require.Equal(t, "burst", readPublish(t, br))
	}
	writerIdle(t, cl)
	require.Nil(t, cl.State.outbound.packets, "a queue grown past outboundKeep is released once empty")
}

func TestIdleClientHasNoWriterGoroutine(t *testing.T) {
	s := newServer()
	defer s.Close()

	r, w := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- s.EstablishConnection("tcp", r) }()
	go func() { _, _ = w.Write(packets.TPacketData[packets.Connect].Get(packets.TConnectMqtt311).RawBytes) }()

	connack := make([]byte, 4)
	_, err := io.ReadFull(w, connack)
	require.NoError(t, err)
	require.Equal(t, packets.Connack<<4, connack[0])

	cl, ok := s.Clients.Get(packets.TPacketData[packets.Connect].Get(packets.TConnectMqtt311).Packet.Connect.ClientIdentifier)
	require.True(t, ok)
	cl.State.outbound.mu.Lock()
	writing := cl.State.outbound.writing
	cl.State.outbound.mu.Unlock()
	require.False(t, writing, "a connected client with nothing to receive runs no writer")

	_, _ = w.Write(packets.TPacketData[packets.Disconnect].Get(packets.TDisconnect).RawBytes)
	require.NoError(t, <-done)
}

func TestNextPacketIDDoesNotWaitForAWrite(t *testing.T) {
	cl, _, _ := newTestClient()
	defer cl.Stop(errClientStop)
	cl.Lock() // as WritePacket holds it while a write is blocked
	defer cl.Unlock()
	got := make(chan uint32, 1)
	go func() {
		id, err := cl.NextPacketID()
		require.NoError(t, err)
		got <- id
	}()
	select {
	case id := <-got:
		require.Equal(t, uint32(1), id)
	case <-time.After(5 * time.Second):
		t.Fatal("NextPacketID waited for the client's write lock")
	}
}

func TestInnerParticlesHaveNoMaps(t *testing.T) {
	index := NewTopicsIndex()
	index.Subscribe("cl1", packets.Subscription{Filter: "$aws/things/t1/shadow/update/delta"})

	leaf := index.seek("$aws/things/t1/shadow/update/delta", 0)
	require.NotNil(t, leaf)
	require.Equal(t, 1, leaf.subscriptions.Len())
	require.Nil(t, leaf.particles.internal, "a leaf has no children")
	require.Nil(t, leaf.shared.internal)
	require.Nil(t, leaf.inlineSubscriptions.internal)

	inner := index.seek("$aws/things/t1/shadow", 0)
	require.NotNil(t, inner)
	require.Nil(t, inner.subscriptions.internal, "an inner level holds no subscription")
	require.Equal(t, 1, inner.particles.len())

	// Matching and unsubscribing work through the nil maps.
	subs := index.Subscribers("$aws/things/t1/shadow/update/delta")
	require.Contains(t, subs.Subscriptions, "cl1")
	require.Empty(t, index.Subscribers("$aws/things/t1/shadow/update").Subscriptions)
	require.True(t, index.Unsubscribe("$aws/things/t1/shadow/update/delta", "cl1"))
	require.Nil(t, index.seek("$aws/things/t1", 0), "empty levels are trimmed")
}

func TestOutboundQueueThatNeverEmptiesStaysSmall(t *testing.T) {
	var q outboundQueue
	q.push(publishTo("first"))
	for i := 0; i < 100000; i++ { // one in, one out, one always waiting
		q.push(publishTo("next"))
		_, ok := q.pop()
		require.True(t, ok)
		require.Equal(t, 1, q.size())
		require.Equal(t, int32(1), q.waiting.Load())
	}
	require.LessOrEqual(t, cap(q.packets), 4, "the written front of the array is reused")

	for i := 0; i < 3; i++ { // order survives compaction
		q.push(publishTo(string(rune('a' + i))))
	}
	for _, want := range []string{"next", "a", "b", "c"} {
		pk, ok := q.pop()
		require.True(t, ok)
		require.Equal(t, want, pk.TopicName)
	}
	_, ok := q.pop()
	require.False(t, ok)
}

// UMBRA PATCH 9: a queued message that was never written is first delivered
// with DUP=0 [MQTT-3.3.1-1]; upstream set DUP on every resend. One written
// before (the stored copy says so) is resent with DUP=1, and after this
// delivery the stored copy says so too. Messages go out in Sequence order.
func TestResendInflightFirstDeliveryNotDup(t *testing.T) {
	cl, r, w := newTestClient()
	cl.State.Inflight.maximumSendQuota = 0 // no Receive Maximum limit here
	queued := *packets.TPacketData[packets.Publish].Get(packets.TPublishQos1).Packet
	queued.PacketID = 7
	sent := queued
	sent.PacketID = 3
	sent.FixedHeader.Dup = true
	cl.State.Inflight.Set(queued) // Sequence 1: first in delivery order
	cl.State.Inflight.Set(sent)   // Sequence 2

	type got struct {
		id  uint16
		dup bool
	}
	out := make(chan got, 2)
	go func() {
		br := bufio.NewReader(r)
		for i := 0; i < 2; i++ {
			fh := new(packets.FixedHeader)
			b, err := br.ReadByte()
			if err != nil {
				close(out)
				return
			}
			_ = fh.Decode(b)
			fh.Remaining, _, _ = packets.DecodeLength(br)
			body := make([]byte, fh.Remaining)
			_, _ = io.ReadFull(br, body)
			pk := packets.Packet{FixedHeader: *fh, ProtocolVersion: 4}
			_ = pk.PublishDecode(body)
			out <- got{pk.PacketID, fh.Dup}
		}
		close(out)
	}()
	require.NoError(t, cl.ResendInflightMessages(true))
	require.Equal(t, got{7, false}, <-out)
	require.Equal(t, got{3, true}, <-out)
	_ = w.Close()
	stored, ok := cl.State.Inflight.Get(7)
	require.True(t, ok)
	require.True(t, stored.FixedHeader.Dup, "a later resend of the delivered message must carry DUP")
}

// UMBRA PATCH 10: an MQTT 5 client whose packet exceeds the Maximum Packet
// Size is told why, DISCONNECT 0x95, before the connection closes; upstream
// closed without a word. A 3.1.1 client is not sent a DISCONNECT.
func TestPacketTooLargeDisconnect(t *testing.T) {
	for _, v5 := range []bool{true, false} {
		s := newServer()
		s.Options.Capabilities.MaximumPacketSize = 64
		cl, r, w := newTestClient()
		if v5 {
			cl.Properties.ProtocolVersion = 5
		} else {
			cl.Properties.ProtocolVersion = 4
		}
		done := make(chan []byte)
		go func() {
			buf, _ := io.ReadAll(r)
			done <- buf
		}()
		s.detachClient(cl, "", packets.ErrPacketTooLarge)
		_ = w.Close()
		buf := <-done
		if v5 {
			require.GreaterOrEqual(t, len(buf), 3)
			require.Equal(t, byte(packets.Disconnect<<4), buf[0])
			require.Equal(t, packets.ErrPacketTooLarge.Code, buf[2])
		} else {
			require.Empty(t, buf)
		}
	}
}

// UMBRA PATCH 11: a will waiting for its Will Delay Interval is published
// when the session ends first [MQTT-3.1.3-9]; upstream (which caps the delay
// at the expiry the client asked for, not the server-capped one) published
// it only when the delay ran out.
func TestWillSentWhenSessionExpiresBeforeDelay(t *testing.T) {
	s := newServer()
	n := time.Now().Unix()
	cl, _, _ := newTestClient()
	cl.ID = "sleeper"
	cl.State.disconnected = n - 10
	cl.State.cancelOpen()
	cl.Properties.ProtocolVersion = 5
	cl.Properties.Props.SessionExpiryInterval = 5
	cl.Properties.Props.SessionExpiryIntervalFlag = true
	s.Clients.Add(cl)
	s.loop.willDelayed.Add(cl.ID, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   "wills/sleeper", Payload: []byte("gone"),
		Expiry: n + 3600, Origin: cl.ID,
	})

	watcher, r, w := newTestClient()
	watcher.ID = "watcher"
	s.Clients.Add(watcher)
	s.Topics.Subscribe(watcher.ID, packets.Subscription{Filter: "wills/#"})

	got := make(chan string, 1)
	go func() {
		got <- readPublish(t, bufio.NewReader(r))
	}()
	s.clearExpiredClients(n)
	select {
	case topic := <-got:
		require.Equal(t, "wills/sleeper", topic)
	case <-time.After(5 * time.Second):
		require.Fail(t, "the delayed will was not published when the session expired")
	}
	_ = w.Close()
	_, ok := s.loop.willDelayed.Get(cl.ID)
	require.False(t, ok)
	_, ok = s.Clients.Get(cl.ID)
	require.False(t, ok)
}

// UMBRA PATCH 13: an MQTT 5 session with Session Expiry Interval 0 (or
// none, which means 0) ended with its connection [MQTT-3.1.2-23]. Between
// the client's Stop and detachClient's delete (the OnDisconnect hooks run in
// between) a reconnect must not inherit it; upstream handed it over.
func TestSessionExpiryZeroNotInheritedAfterStop(t *testing.T) {
	for _, flag := range []bool{true, false} {
		s := newServer()
		old, _, _ := newTestClient()
		old.ID = "zero"
		old.Properties.ProtocolVersion = 5
		old.Properties.Props.SessionExpiryInterval = 0
		old.Properties.Props.SessionExpiryIntervalFlag = flag
		old.State.Subscriptions.Add("a/b", packets.Subscription{Filter: "a/b"})
		old.Stop(packets.CodeDisconnect) // stopped, not yet deleted
		s.Clients.Add(old)

		cl, _, _ := newTestClient()
		cl.ID = "zero"
		cl.Properties.ProtocolVersion = 5
		present := s.inheritClientSession(packets.Packet{ProtocolVersion: 5}, cl)
		require.False(t, present, "flag %v: session inherited", flag)
		require.Equal(t, 0, cl.State.Subscriptions.Len())
	}
}

// UMBRA PATCH 14: a clean-session connection that ends on its own after a
// newer connection with the same client id was registered leaves the newer
// one's registration and subscriptions alone.
func TestDetachLeavesANewerConnectionWithTheSameID(t *testing.T) {
	s := newServer()
	defer s.Close()
	oldConn, _ := net.Pipe()
	old := s.NewClient(oldConn, "tcp", "device", false)
	old.Properties.ProtocolVersion = 4
	old.Properties.Clean = true
	s.Clients.Add(old)
	filter := packets.Subscription{Filter: "a/b", Qos: 1}
	old.State.Subscriptions.Add(filter.Filter, filter)
	s.Topics.Subscribe(old.ID, filter)

	// The newer connection is registered (and subscribed) before the old
	// one's detach runs: the interleaving that lost it upstream.
	newConn, _ := net.Pipe()
	newer := s.NewClient(newConn, "tcp", "device", false)
	newer.Properties.ProtocolVersion = 4
	newer.Properties.Clean = true
	s.Clients.Add(newer)
	newer.State.Subscriptions.Add(filter.Filter, filter)
	s.Topics.Subscribe(newer.ID, filter)

	s.detachClient(old, "tcp", nil)

	got, ok := s.Clients.Get("device")
	require.True(t, ok, "the newer connection was deleted")
	require.Same(t, newer, got)
	require.Contains(t, s.Topics.Subscribers("a/b").Subscriptions, "device", "the newer connection's subscription was removed")

	// The newer connection, ending in turn, does end its session.
	s.detachClient(newer, "tcp", nil)
	_, ok = s.Clients.Get("device")
	require.False(t, ok)
	require.NotContains(t, s.Topics.Subscribers("a/b").Subscriptions, "device")
}

// UMBRA PATCH 15: HasSubscribers answers as Subscribers would, for plain,
// wildcard, shared and inline subscriptions and the $-topic rule, and
// allocates nothing.
func TestHasSubscribersAgreesWithSubscribers(t *testing.T) {
	index := NewTopicsIndex()
	index.Subscribe("c1", packets.Subscription{Filter: "a/b/c"})
	index.Subscribe("c2", packets.Subscription{Filter: "x/+/z"})
	index.Subscribe("c3", packets.Subscription{Filter: "m/#"})
	index.Subscribe("c4", packets.Subscription{Filter: "#"})
	index.Subscribe("c5", packets.Subscription{Filter: "$share/g/s/t", ShareName: []string{"g"}})
	index.InlineSubscribe(InlineSubscription{Subscription: packets.Subscription{Filter: "i/j", Identifier: 1}})
	index.Subscribe("c6", packets.Subscription{Filter: "$aws/things/+/shadow/update/delta"})

	topics := []string{"a/b/c", "a/b", "a/b/c/d", "x/y/z", "x/y", "m", "m/n/o", "s/t", "i/j", "i",
		"$aws/things/t1/shadow/update/delta", "$aws/things/t1/shadow/update/documents", "$SYS/x", "q"}
	check := func(name string) {
		t.Helper()
		for _, topic := range topics {
			subs := index.Subscribers(topic)
			want := len(subs.Subscriptions) > 0 || len(subs.Shared) > 0 || len(subs.InlineSubscriptions) > 0
			require.Equal(t, want, index.HasSubscribers(topic), "%s: topic %q", name, topic)
		}
	}
	check("with a catch-all # subscription")
	index.Unsubscribe("#", "c4")
	check("without it")
	require.True(t, index.HasSubscribers("s/t"), "shared")
	require.True(t, index.HasSubscribers("i/j"), "inline")
	require.False(t, index.HasSubscribers("$aws/things/t1/shadow/update/documents"))
	require.True(t, index.HasSubscribers("$aws/things/t1/shadow/update/delta"))
	require.Zero(t, testing.AllocsPerRun(100, func() { index.HasSubscribers("$aws/things/t1/shadow/update/documents") }))
}

// countingHook counts the publish hooks DeliverToSubscribers must not run.
type countingHook struct {
	HookBase
	publish, published, selected int
}

func (h *countingHook) ID() string { return "counting" }
func (h *countingHook) Provides(b byte) bool {
	return b == OnPublish || b == OnPublished || b == OnSelectSubscribers
}
func (h *countingHook) OnPublish(cl *Client, pk packets.Packet) (packets.Packet, error) {
	h.publish++
	return pk, nil
}
func (h *countingHook) OnPublished(cl *Client, pk packets.Packet) { h.published++ }
func (h *countingHook) OnSelectSubscribers(subs *Subscribers, pk packets.Packet) *Subscribers {
	h.selected++
	return subs
}

// UMBRA PATCH 16: DeliverToSubscribers reaches the matching subscribers
// without any publish hook and without retaining; choose decides who gets it.
func TestDeliverToSubscribersRunsNoHook(t *testing.T) {
	s := newServerWithInlineClient()
	h := new(countingHook)
	require.NoError(t, s.AddHook(h, nil))
	var got []string
	require.NoError(t, s.Subscribe("a/+", 1, func(_ *Client, _ packets.Subscription, pk packets.Packet) {
		got = append(got, string(pk.Payload))
	}))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: "a/b", Payload: []byte("one")}
	s.DeliverToSubscribers(pk, nil)
	require.Equal(t, []string{"one"}, got)
	require.Equal(t, 0, h.publish+h.published+h.selected)
	require.Empty(t, s.Topics.Messages("a/b"), "a delivered message is not retained")

	pk.Payload = []byte("two")
	s.DeliverToSubscribers(pk, func(*Subscribers) *Subscribers { return &Subscribers{} })
	require.Equal(t, []string{"one"}, got, "choose returned nobody")
	require.Equal(t, 0, h.selected)

	pk.Payload = []byte("three")
	s.publishToSubscribers(pk) // the ordinary path is unchanged
	require.Equal(t, []string{"one", "three"}, got)
}

// UMBRA PATCH 17: a retained publish and a subscribe's retained scan over
// the same topics run at once without a data race (run with -race).
func TestRetainWhileScanningMessages(t *testing.T) {
	x := NewTopicsIndex()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			payload := []byte("v")
			if i%2 == 1 {
				payload = nil // delete
			}
			x.RetainMessage(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: "config/site", Payload: payload})
		}
	}()
	for {
		select {
		case <-done:
			return
		default:
			x.Messages("config/+")
			x.Messages("config/#")
		}
	}
}

var subscribersSink *Subscribers

// UMBRA PATCH 19: Subscribers builds no set for a topic nobody subscribes
// to and only the set of the kind that matched otherwise; the sets it
// returns are the same as before (plain, wildcard, shared, inline, the
// $-topic rule), and a publish with shared subscribers still merges them.
func TestSubscribersAllocatesOnlyWhatMatches(t *testing.T) {
	index := NewTopicsIndex()
	index.Subscribe("c1", packets.Subscription{Filter: "a/b/c", Qos: 1})
	index.Subscribe("c1", packets.Subscription{Filter: "a/+/c", Qos: 0, Identifier: 7})
	index.Subscribe("c3", packets.Subscription{Filter: "m/#"})
	index.Subscribe("c5", packets.Subscription{Filter: "$share/g/s/t", ShareName: []string{"g"}})
	index.InlineSubscribe(InlineSubscription{Subscription: packets.Subscription{Filter: "i/j", Identifier: 1}})
	index.Subscribe("c6", packets.Subscription{Filter: "$aws/things/+/shadow/update/accepted", Qos: 1})
	index.Subscribe("c7", packets.Subscription{Filter: "+/things/t1/shadow/update/accepted"})

	none := index.Subscribers("$aws/things/t1/shadow/update")
	require.Empty(t, none.Subscriptions)
	require.Empty(t, none.Shared)
	require.Empty(t, none.InlineSubscriptions)
	// One allocation at most: the *Subscribers itself (upstream: 11); with
	// one subscriber, 5 (upstream: 16).
	require.LessOrEqual(t, testing.AllocsPerRun(100, func() { subscribersSink = index.Subscribers("$aws/things/t1/shadow/update") }), 1.0)
	require.LessOrEqual(t, testing.AllocsPerRun(100, func() { subscribersSink = index.Subscribers("$aws/things/t1/shadow/update/accepted") }), 5.0)

	one := index.Subscribers("$aws/things/t1/shadow/update/accepted")
	require.Len(t, one.Subscriptions, 1)
	require.Equal(t, byte(1), one.Subscriptions["c6"].Qos)
	require.Nil(t, one.Shared)
	require.Nil(t, one.InlineSubscriptions)

	merged := index.Subscribers("a/b/c")
	require.Len(t, merged.Subscriptions, 1)
	require.Equal(t, byte(1), merged.Subscriptions["c1"].Qos)
	require.Equal(t, 7, merged.Subscriptions["c1"].Identifiers["a/+/c"])

	require.Contains(t, index.Subscribers("m/n").Subscriptions, "c3")
	require.Contains(t, index.Subscribers("i/j").InlineSubscriptions, 1)

	shared := index.Subscribers("s/t")
	require.Nil(t, shared.Subscriptions)
	require.Contains(t, shared.Shared, "$share/g/s/t")
	shared.SelectShared()
	shared.MergeSharedSelected() // into a nil Subscriptions
	require.Contains(t, shared.Subscriptions, "c5")
}

// UMBRA PATCH 20: the delayed will of a connection that closes after a
// newer connection with its client id was registered is not kept (the
// newer connection cancelled wills when it was accepted, possibly before
// this one closed); with no newer connection it is kept; and
// CancelDelayedWill forgets one.
func TestDelayedWillOfATakenOverConnection(t *testing.T) {
	s := newServer()
	withWill := func() *Client {
		cl, _, _ := newTestClient()
		cl.ID = "dev"
		cl.Properties.Will = Will{Flag: 1, TopicName: "gone/dev", Payload: []byte("x"), WillDelayInterval: 5}
		return cl
	}
	old := withWill()
	s.Clients.Add(old)
	s.sendLWT(old)
	_, ok := s.loop.willDelayed.Get("dev")
	require.True(t, ok, "the delayed will of a connection still registered")

	s.CancelDelayedWill("dev")
	_, ok = s.loop.willDelayed.Get("dev")
	require.False(t, ok, "CancelDelayedWill")

	newer, _, _ := newTestClient()
	newer.ID = "dev"
	s.Clients.Add(newer) // the takeover: the newer connection is registered first
	s.sendLWT(old)
	_, ok = s.loop.willDelayed.Get("dev")
	require.False(t, ok, "the delayed will of a connection taken over was kept")
}
