package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/umbra-iot/umbra/tempfork/mochi/hooks/storage"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
	bolt "go.etcd.io/bbolt"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/store"
)

// metricValue reads one sample from /metrics ("name{labels}" as printed).
func metricValue(t *testing.T, srv *brokertest.Server, sample string) float64 {
	t.Helper()
	resp, err := http.Get(srv.HTTPURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no sample %s", sample)
	return 0
}

// storedBucket opens the database file of a stopped broker read-only and
// returns the records of bucket whose key starts with prefix: how many and
// their payload bytes (decoded) and raw bytes on disk.
func storedBucket(t *testing.T, dataDir string, bucket []byte, prefix string) (n int, payload, raw int64, fileSize int64) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dataDir, store.FileName), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		fileSize = tx.Size()
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			var m storage.Message
			if err := m.UnmarshalBinary(v); err != nil {
				return err
			}
			n++
			payload += int64(len(m.Payload))
			raw += int64(len(v))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return
}

func connect5(t *testing.T, addr, id string, onDisconnect func(*paho5.Disconnect)) *paho5.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho5.ClientConfig{Conn: conn}
	if onDisconnect != nil {
		cfg.OnServerDisconnect = onDisconnect
	}
	c := paho5.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
	defer cancel()
	if _, err := c.Connect(ctx, &paho5.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho5.Disconnect{}) })
	return c
}

// The retained flood, scaled down: one client retains 10 KB
// messages on ever new topics. With a quota of 20 messages, the 21st and
// every later one is refused with 0x97 (MQTT 5 QoS 1 and 2), the store
// holds 20 messages, a restart does not let the client add more, and a
// restart with a lower quota restores only that many.
func TestQuotaRetainedFlood(t *testing.T) {
	const quota, size, flood = 20, 10_000, 60
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Quotas = broker.QuotaOptions{RetainedMessages: quota, RetainedBytes: 1 << 20}
	})
	payload := bytes.Repeat([]byte("x"), size)
	ctx, cancel := context.WithTimeout(context.Background(), 4*mt.Wait)
	defer cancel()
	c := connect5(t, srv.MQTTAddr(), "flooder", nil)
	publish := func(c *paho5.Client, i int, qos byte, payload []byte) byte {
		t.Helper()
		resp, err := c.Publish(ctx, &paho5.Publish{Topic: fmt.Sprintf("flood/flooder/%d", i), QoS: qos, Retain: true, Payload: payload})
		if resp == nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		return resp.ReasonCode
	}
	var refused int
	for i := range flood {
		switch rc := publish(c, i, 1, payload); {
		case i < quota && rc != 0:
			t.Fatalf("publish %d within quota: reason 0x%02x", i, rc)
		case i >= quota && rc != 0x97:
			t.Fatalf("publish %d over quota: reason 0x%02x, want 0x97 quota exceeded", i, rc)
		case rc == 0x97:
			refused++
		}
	}
	if rc := publish(c, flood, 2, payload); rc != 0x97 {
		t.Fatalf("QoS 2 over quota: PUBREC reason 0x%02x, want 0x97", rc)
	}
	// Replacing one of its own topics and clearing one stay possible.
	if rc := publish(c, 0, 1, []byte("smaller")); rc != 0 {
		t.Fatalf("replace own retained: 0x%02x", rc)
	}
	if rc := publish(c, 1, 1, nil); rc != 0 {
		t.Fatalf("clear own retained: 0x%02x", rc)
	}
	if rc := publish(c, 1, 1, payload); rc != 0 {
		t.Fatalf("retain after clearing one: 0x%02x", rc)
	}
	if got := retainedUnder(srv, "flood/flooder/"); got != quota {
		t.Fatalf("broker holds %d retained messages, want %d", got, quota)
	}
	if got := metricValue(t, srv, `umbra_quota_refusals_total{quota="retained"}`); got != float64(refused+1) {
		t.Fatalf("refusal metric %v, want %d", got, refused+1)
	}
	// Another client is not affected by the flooder's quota.
	other := connect5(t, srv.MQTTAddr(), "other", nil)
	if resp, err := other.Publish(ctx, &paho5.Publish{Topic: "flood/other/1", QoS: 1, Retain: true, Payload: payload}); resp == nil || resp.ReasonCode != 0 {
		t.Fatalf("other client: %v %v", resp, err)
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	n, pay, raw, file := storedBucket(t, srv.Options.DataDir, store.BucketRetained, "flood/flooder/")
	t.Logf("after %d retained publishes of %d B: %d stored, %d B payload, %d B records, db file %d B", flood+1, size, n, pay, raw, file)
	if n != quota || pay > quota*size {
		t.Fatalf("stored %d messages, %d payload bytes; want %d, <= %d", n, pay, quota, quota*size)
	}
	srv2 := brokertest.StartWith(t, srv.Options)
	c = connect5(t, srv2.MQTTAddr(), "flooder", nil)
	if rc := publish(c, flood+1, 1, payload); rc != 0x97 {
		t.Fatalf("after restart: reason 0x%02x, want 0x97 (the quota must count what was restored)", rc)
	}
	_ = c.Disconnect(&paho5.Disconnect{})

	// A lower quota at the next start restores only that many.
	if err := srv2.Close(); err != nil {
		t.Fatal(err)
	}
	opts := srv.Options
	opts.Quotas.RetainedMessages = 5
	srv3 := brokertest.StartWith(t, opts)
	if got := retainedUnder(srv3, "flood/"); got != 5+1 { // the flooder's 5 and other's 1
		t.Fatalf("restored %d retained messages with a quota of 5 per client, want 6", got)
	}
}

// retainedUnder counts the broker's retained messages under a topic prefix
// (Mochi retains its $SYS topics too).
func retainedUnder(srv *brokertest.Server, prefix string) int {
	n := 0
	for topic := range srv.MQTT().Topics.Retained.GetAll() {
		if strings.HasPrefix(topic, prefix) {
			n++
		}
	}
	return n
}

// MQTT 3.1.1 has no way to refuse a publish: a client over its retained
// quota is disconnected (documented). An MQTT 5 QoS 0 publish, which has no
// acknowledgement, gets DISCONNECT 0x97.
func TestQuotaRetainedRefusalWithoutAck(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Quotas = broker.QuotaOptions{RetainedMessages: 1}
	})
	lost := make(chan error, 1)
	v3 := mt.Connect(t, srv.MQTTURL(), "v3", func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	})
	v3.Publish("q/v3/a", 1, true, "one")
	select {
	case err := <-lost:
		t.Fatalf("connection lost within quota: %v", err)
	default:
	}
	v3.Client.Publish("q/v3/b", 1, true, "two") // no PUBACK will come
	select {
	case <-lost:
	case <-time.After(mt.Wait):
		t.Fatal("MQTT 3.1.1 client over the retained quota was not disconnected")
	}
	if _, ok := srv.MQTT().Topics.Retained.Get("q/v3/b"); ok {
		t.Fatal("refused message was retained")
	}

	disc := make(chan *paho5.Disconnect, 1)
	c := connect5(t, srv.MQTTAddr(), "v5", func(d *paho5.Disconnect) { disc <- d })
	ctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
	defer cancel()
	for _, topic := range []string{"q/v5/a", "q/v5/b"} {
		if _, err := c.Publish(ctx, &paho5.Publish{Topic: topic, QoS: 0, Retain: true, Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case d := <-disc:
		if d.ReasonCode != packets.ErrQuotaExceeded.Code {
			t.Fatalf("DISCONNECT reason 0x%02x, want 0x97", d.ReasonCode)
		}
	case <-ctx.Done():
		t.Fatal("MQTT 5 QoS 0 over the retained quota: no DISCONNECT")
	}
}

// rawSubscriber is the attacker: an MQTT 3.1.1 client with a
// persistent session that subscribes at QoS 1 and reads every delivery but
// never acknowledges one.
type rawSubscriber struct {
	conn     net.Conn
	received chan int
}

func newRawSubscriber(t *testing.T, addr, id, filter string) *rawSubscriber {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	var buf bytes.Buffer
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: false, Keepalive: 60, ClientIdentifier: id}}
	if err := connect.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}}
	if err := sub.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	s := &rawSubscriber{conn: conn, received: make(chan int, 1<<16)}
	go func() {
		r := bufio.NewReader(conn)
		for {
			h, err := r.ReadByte()
			if err != nil {
				return
			}
			n, mul := 0, 1
			for {
				b, err := r.ReadByte()
				if err != nil {
					return
				}
				n += int(b&0x7f) * mul
				mul *= 128
				if b&0x80 == 0 {
					break
				}
			}
			if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
				return
			}
			if h>>4 == packets.Publish {
				s.received <- n
			}
		}
	}()
	return s
}

// heldBytes is what Mochi holds for a session: its inflight messages.
func heldBytes(srv *brokertest.Server, id string) (bytes int64, n int) {
	cl, ok := srv.MQTT().Clients.Get(id)
	if !ok {
		return 0, 0
	}
	for _, m := range cl.State.Inflight.GetAll(false) {
		bytes += int64(len(m.Payload) + len(m.TopicName))
		n++
	}
	return bytes, n
}

// The unacknowledged QoS 1 flood, scaled down: a subscriber that
// never acknowledges receives 10 KB messages. The bytes its session holds
// (Mochi's inflight map, then the stored session) stay within the 64 KiB
// quota, the excess is counted, and after a restart the session still
// cannot grow past it.
func TestQuotaInflightFlood(t *testing.T) {
	const quota, size, flood = 64 << 10, 10_000, 40
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Quotas = broker.QuotaOptions{InflightBytes: quota}
	})
	victim := newRawSubscriber(t, srv.MQTTAddr(), "hog", "hog/in")
	pub := mt.Connect(t, srv.MQTTURL(), "feeder")
	// Wait for the subscription: a retained-free probe is not possible on
	// a never-acking client, so poll the broker's subscription index.
	quotaPoll(t, "the subscription", func() bool { return len(srv.MQTT().Topics.Subscribers("hog/in").Subscriptions) > 0 })
	payload := strings.Repeat("y", size)
	for range flood {
		pub.Publish("hog/in", 1, false, payload)
	}
	accounted := func(srv *brokertest.Server) (held int64, n int, refused float64) {
		held, n = heldBytes(srv, "hog")
		return held, n, metricValue(t, srv, `umbra_quota_refusals_total{quota="inflight_bytes"}`)
	}
	quotaPoll(t, "every delivery held or refused", func() bool {
		_, n, refused := accounted(srv)
		return n+int(refused) == flood
	})
	held, n, refused := accounted(srv)
	t.Logf("%d unacked QoS 1 deliveries of %d B: session holds %d messages, %d B; %v refused", flood, size, n, held, refused)
	if held > quota || refused == 0 {
		t.Fatalf("session holds %d B (quota %d), %v refused", held, quota, refused)
	}
	if got := len(victim.received); got == 0 {
		t.Fatal("the subscriber received nothing at all")
	}

	_ = victim.conn.Close()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	n, pay, raw, file := storedBucket(t, srv.Options.DataDir, store.BucketInflight, "hog\x00")
	t.Logf("stored session: %d messages, %d B payload, %d B records; db file %d B", n, pay, raw, file)
	if n == 0 || pay > quota {
		t.Fatalf("stored session holds %d messages, %d B of payload; want some, within the quota %d", n, pay, quota)
	}
	srv2 := brokertest.StartWith(t, srv.Options)
	pub2 := mt.Connect(t, srv2.MQTTURL(), "feeder")
	for range flood {
		pub2.Publish("hog/in", 1, false, payload)
	}
	// The restored session is full (or one message short of it), so at
	// most one of the new messages fits.
	quotaPoll(t, "the new messages refused", func() bool {
		_, _, refused := accounted(srv2)
		return refused >= flood-1
	})
	held, n, refused = accounted(srv2)
	t.Logf("after restart and %d more: session holds %d messages, %d B; %v refused", flood, n, held, refused)
	if held > quota {
		t.Fatalf("after restart the session holds %d B, quota %d", held, quota)
	}
}

// quotaPoll polls cond until it holds or mt.Wait passes.
func quotaPoll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(mt.Wait)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, mt.Wait)
		}
		<-tick.C
	}
}

// A session's subscriptions (persisted with a persistent session) are
// capped: the filters beyond the quota get 0x97 in the SUBACK (0x80 for
// MQTT 3.1.1), re-subscribing to a granted filter stays possible.
func TestQuotaSubscriptions(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Quotas = broker.QuotaOptions{Subscriptions: 3} })
	c := connect5(t, srv.MQTTAddr(), "subber", nil)
	ctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
	defer cancel()
	var opts []paho5.SubscribeOptions
	for i := range 5 {
		opts = append(opts, paho5.SubscribeOptions{Topic: fmt.Sprintf("s/%d", i), QoS: 1})
	}
	sa, _ := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: opts})
	if sa == nil || !bytes.Equal(sa.Reasons, []byte{1, 1, 1, 0x97, 0x97}) {
		t.Fatalf("SUBACK %v, want 1 1 1 0x97 0x97", sa)
	}
	if sa, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "s/0", QoS: 0}}}); err != nil || sa.Reasons[0] != 0 {
		t.Fatalf("re-subscribe to a granted filter: %v %v", sa, err)
	}
	if got := metricValue(t, srv, `umbra_quota_refusals_total{quota="subscriptions"}`); got != 2 {
		t.Fatalf("refusal metric %v, want 2", got)
	}
	v3 := mt.Connect(t, srv.MQTTURL(), "subber3")
	toks := []paho.Token{}
	for i := range 4 {
		toks = append(toks, v3.Client.Subscribe(fmt.Sprintf("s3/%d", i), 1, nil))
	}
	for i, tok := range toks {
		tok.WaitTimeout(mt.Wait)
		st := tok.(*paho.SubscribeToken)
		code := st.Result()[fmt.Sprintf("s3/%d", i)]
		if (i < 3 && code != 1) || (i == 3 && code != 0x80) {
			t.Fatalf("3.1.1 subscribe %d: code 0x%02x", i, code)
		}
	}
}

// A retained will that would put its client over the retained quota is
// delivered but not retained.
func TestQuotaRetainedWill(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Quotas = broker.QuotaOptions{RetainedMessages: 1} })
	watcher := mt.Connect(t, srv.MQTTURL(), "watcher")
	wills := watcher.Subscribe("w/dying/status", 0)
	conn, err := net.Dial("tcp", srv.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "dying",
			WillFlag: true, WillTopic: "w/dying/status", WillPayload: []byte("gone"), WillRetain: true}}
	if err := connect.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, ProtocolVersion: 4,
		TopicName: "w/dying/other", Payload: []byte("fills the quota")}
	if err := pub.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	quotaPoll(t, "the retained publish", func() bool { _, ok := srv.MQTT().Topics.Retained.Get("w/dying/other"); return ok })
	_ = conn.Close() // no DISCONNECT: the will is sent
	if m := mt.Next(t, wills); string(m.Payload) != "gone" {
		t.Fatalf("will %q", m.Payload)
	}
	if _, ok := srv.MQTT().Topics.Retained.Get("w/dying/status"); ok {
		t.Fatal("a will over the retained quota was retained")
	}
	if got := metricValue(t, srv, `umbra_quota_refusals_total{quota="retained"}`); got != 1 {
		t.Fatalf("refusal metric %v, want 1", got)
	}
}
