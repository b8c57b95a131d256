package broker_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/natstest"
)

// ordered makes paho hand messages over in the order they arrived, so a
// fence message proves that what came before it has been seen.
func ordered(o *paho.ClientOptions) { o.SetOrderMatters(true) }

// untilRouted calls probe with "probe-0", "probe-1", … until a probe
// reaches ch: a subscription made on one node is known to the other NATS
// servers shortly after its SUBACK, not at once. Messages that are not
// probes are returned for the test to look at.
func untilRouted(t *testing.T, ch <-chan mt.Message, probe func(payload string)) {
	t.Helper()
	deadline := time.Now().Add(mt.Wait)
	for i := 0; time.Now().Before(deadline); i++ {
		probe(fmt.Sprintf("probe-%d", i))
		select {
		case m := <-ch:
			if strings.HasPrefix(string(m.Payload), "probe-") {
				return
			}
			t.Fatalf("unexpected message before any probe: %s %q", m.Topic, m.Payload)
		case <-time.After(50 * time.Millisecond): // poll interval, then probe again
		}
	}
	t.Fatalf("no probe crossed the cluster within %s", mt.Wait)
}

// until collects the messages on ch that are not probes, up to and
// including the first whose payload is fence.
func until(t *testing.T, ch <-chan mt.Message, fence string) []mt.Message {
	t.Helper()
	var got []mt.Message
	deadline := time.After(mt.Wait)
	for {
		select {
		case m := <-ch:
			if strings.HasPrefix(string(m.Payload), "probe-") {
				continue
			}
			got = append(got, m)
			if string(m.Payload) == fence {
				return got
			}
		case <-deadline:
			t.Fatalf("no %q within %s (got %d messages)", fence, mt.Wait, len(got))
		}
	}
}

func count(ms []mt.Message, payload string) int {
	n := 0
	for _, m := range ms {
		if string(m.Payload) == payload {
			n++
		}
	}
	return n
}

// A device on node A receives the delta of an update made through node B's
// HTTP API: the shadow service on B publishes it, the bridge carries it.
func TestClusterDeltaReachesDeviceOnOtherNode(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 2)
	dev := mt.Connect(t, nodes[0].MQTTURL(), "lamp", ordered)
	deltas := dev.Subscribe("$aws/things/lamp/shadow/update/delta", 1)
	probe := 0
	untilDelta := func(ch <-chan mt.Message) {
		deadline := time.Now().Add(mt.Wait)
		for time.Now().Before(deadline) {
			probe++
			httpDo(t, "POST", nodes[1].HTTPURL()+"/things/lamp/shadow", fmt.Sprintf(`{"state":{"desired":{"probe":%d}}}`, probe), 200)
			select {
			case <-ch:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		t.Fatal("no delta crossed the cluster")
	}
	untilDelta(deltas)
	body := httpDo(t, "POST", nodes[1].HTTPURL()+"/things/lamp/shadow", `{"state":{"desired":{"color":"red"}}}`, 200)
	version := gjson.Get(body, "version").Int()
	for {
		m := mt.Next(t, deltas)
		if gjson.GetBytes(m.Payload, "version").Int() < version {
			continue // a probe's delta
		}
		if gjson.GetBytes(m.Payload, "state.color").String() != "red" || m.QoS != 1 {
			t.Fatalf("delta on node A for the update on node B: qos %d %s", m.QoS, m.Payload)
		}
		break
	}
}

// A plain publish on node C reaches the subscribers on nodes A and B once
// each, at each subscriber's QoS, also with overlapping filters on one
// node; nothing comes back (the other nodes publish nothing to NATS).
func TestClusterPublishReachesOtherNodesOnce(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	a1 := mt.Connect(t, nodes[0].MQTTURL(), "app-a1", ordered).Subscribe("chat/room", 1)
	a2 := mt.Connect(t, nodes[0].MQTTURL(), "app-a2", ordered).Subscribe("chat/+", 1)
	a3 := mt.Connect(t, nodes[0].MQTTURL(), "app-a3", ordered).Subscribe("chat/#", 1)
	b0 := mt.Connect(t, nodes[1].MQTTURL(), "app-b0", ordered).Subscribe("chat/room", 0)
	cSub := mt.Connect(t, nodes[2].MQTTURL(), "app-c", ordered).Subscribe("chat/room", 1)
	pub := mt.Connect(t, nodes[2].MQTTURL(), "pub-c", ordered)
	send := func(p string) { pub.Publish("chat/room", 1, false, p) }
	for _, ch := range []<-chan mt.Message{a1, a2, a3, b0} {
		untilRouted(t, ch, send)
	}
	// Every node also publishes its own lifecycle events (a client
	// connected); from here on only node C publishes anything.
	out := `umbra_cluster_bridge_messages_total{direction="out"}`
	before := make([]float64, len(nodes))
	for i, n := range nodes {
		before[i] = metricValue(t, n, out)
	}
	pub.Publish("chat/room", 1, false, "hello")
	pub.Publish("chat/room", 1, false, "fence")
	for name, c := range map[string]struct {
		ch  <-chan mt.Message
		qos byte
	}{"a1": {a1, 1}, "a2": {a2, 1}, "a3": {a3, 1}, "b0": {b0, 0}, "c": {cSub, 1}} {
		got := until(t, c.ch, "fence")
		if count(got, "hello") != 1 || len(got) != 2 {
			t.Errorf("%s got %d messages, %d of them hello; want hello once then the fence", name, len(got), count(got, "hello"))
		}
		if got[0].QoS != c.qos {
			t.Errorf("%s got QoS %d, subscribed with %d", name, got[0].QoS, c.qos)
		}
	}
	for i, n := range nodes {
		want := 0.0
		if i == 2 {
			want = 2
		}
		if d := metricValue(t, n, out) - before[i]; d != want {
			t.Errorf("node %d published %v messages to NATS for 2 publishes on node C; want %v", i, d, want)
		}
	}
	if n := metricValue(t, nodes[0], `umbra_cluster_bridge_messages_total{direction="in"}`); n == 0 {
		t.Error("node A counted no bridged message in")
	}
}

// A device's shadow update on node A is handled once, by node A: node B
// only forwards the request and A's replies to its own subscribers (version
// 1, one accepted), as AWS forwards an accepted update.
func TestClusterShadowUpdateHandledOnce(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	obs := mt.Connect(t, nodes[1].MQTTURL(), "observer", ordered).Subscribe("$aws/things/lamp/shadow/#", 1)
	dev := mt.Connect(t, nodes[0].MQTTURL(), "lamp", ordered)
	untilRouted(t, obs, func(p string) { dev.Publish("$aws/things/lamp/shadow/probe", 1, false, p) })
	dev.Publish("$aws/things/lamp/shadow/update", 1, false, `{"state":{"reported":{"on":true}}}`)
	dev.Publish("$aws/things/lamp/shadow/probe", 1, false, "fence")
	got := until(t, obs, "fence")
	var accepted, requests int
	for _, m := range got {
		switch m.Topic {
		case "$aws/things/lamp/shadow/update/accepted":
			accepted++
			if v := gjson.GetBytes(m.Payload, "version").Int(); v != 1 {
				t.Errorf("accepted version %d", v)
			}
		case "$aws/things/lamp/shadow/update":
			requests++
		case "$aws/things/lamp/shadow/update/rejected":
			t.Errorf("rejected: %s", m.Payload)
		}
	}
	if accepted != 1 || requests != 1 {
		t.Fatalf("node B saw %d accepted and %d forwarded requests; want 1 and 1 (%d messages)", accepted, requests, len(got))
	}
	for i, n := range nodes {
		body := httpDo(t, "GET", n.HTTPURL()+"/things/lamp/shadow", "", 200)
		if v := gjson.Get(body, "version").Int(); v != 1 {
			t.Fatalf("node %d: shadow version %d after one update: %s", i, v, body)
		}
	}
}

// NATS-native services: a NATS subscriber sees device traffic on the
// subject nats-server's MQTT mapping gives, with its QoS header; a plain
// NATS publish reaches an MQTT subscriber (QoS 0, or the QoS its
// Nmqtt-Pub header asks for, at most the subscription's).
func TestClusterNATSInterop(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 2)
	svc, err := nats.Connect(nc.URL(2))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	telemetry := make(chan *nats.Msg, 64)
	if _, err := svc.ChanSubscribe("devices.*.telemetry//v1", telemetry); err != nil {
		t.Fatal(err)
	}
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	dev := mt.Connect(t, nodes[0].MQTTURL(), "x", ordered)
	cmds := dev.Subscribe("devices/x/cmd", 1)
	deadline := time.Now().Add(mt.Wait)
	var m *nats.Msg
	for m == nil && time.Now().Before(deadline) {
		dev.Publish("devices/x/telemetry.v1", 1, false, `{"t":21}`)
		select {
		case m = <-telemetry:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if m == nil {
		t.Fatal("no device message reached the NATS subscriber")
	}
	if m.Subject != "devices.x.telemetry//v1" || string(m.Data) != `{"t":21}` || m.Header.Get("Nmqtt-Pub") != "1" || m.Header.Get("Umbra-Node") != "node-0" {
		t.Fatalf("NATS got %s %q headers %v", m.Subject, m.Data, m.Header)
	}

	untilRouted(t, cmds, func(p string) {
		if err := svc.Publish("devices.x.cmd", []byte(p)); err != nil {
			t.Fatal(err)
		}
	})
	if err := svc.Publish("devices.x.cmd", []byte("reboot")); err != nil {
		t.Fatal(err)
	}
	q1 := nats.NewMsg("devices.x.cmd")
	q1.Header.Set("Nmqtt-Pub", "1")
	q1.Data = []byte("fence")
	if err := svc.PublishMsg(q1); err != nil {
		t.Fatal(err)
	}
	got := until(t, cmds, "fence")
	if len(got) != 2 || string(got[0].Payload) != "reboot" || got[0].QoS != 0 || got[1].QoS != 1 {
		t.Fatalf("MQTT subscriber got %+v; want reboot at QoS 0, then the fence at QoS 1", got)
	}
}

// A shared subscription group with members on two nodes gets each message
// once across the cluster, whether it was published on a node with a
// member (A) or without (C).
func TestClusterSharedSubscriptionOnceAcrossNodes(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	wa := mt.Connect(t, nodes[0].MQTTURL(), "worker-a", ordered)
	wb := mt.Connect(t, nodes[1].MQTTURL(), "worker-b", ordered)
	both := make(chan mt.Message, 1024)
	for _, w := range []*mt.Client{wa, wb} {
		ch := w.Subscribe("$share/workers/jobs/+", 1)
		go func() {
			for m := range ch {
				both <- m
			}
		}()
	}
	pubC := mt.Connect(t, nodes[2].MQTTURL(), "pub-c")
	pubA := mt.Connect(t, nodes[0].MQTTURL(), "pub-a")
	untilRouted(t, both, func(p string) { pubC.Publish("jobs/x", 1, false, p) })
	const n = 20
	for i := range n {
		pub := pubC
		if i%2 == 1 {
			pub = pubA
		}
		pub.Publish("jobs/x", 1, false, fmt.Sprintf("job-%d", i))
	}
	seen := map[string]int{}
	deadline := time.After(mt.Wait)
	for len(seen) < n {
		select {
		case m := <-both:
			if p := string(m.Payload); strings.HasPrefix(p, "job-") {
				seen[p]++
			}
		case <-deadline:
			t.Fatalf("the group got %d of %d jobs", len(seen), n)
		}
	}
	// A duplicate would be a second copy of a job; one more round of
	// publishes, all seen, bounds the wait for one.
	for i := range n {
		pubC.Publish("jobs/x", 1, false, fmt.Sprintf("fence-%d", i))
	}
	fences := 0
	for fences < n {
		select {
		case m := <-both:
			if p := string(m.Payload); strings.HasPrefix(p, "job-") {
				seen[p]++
			} else if strings.HasPrefix(p, "fence-") {
				fences++
			}
		case <-time.After(mt.Wait):
			t.Fatalf("the group got %d of %d fences", fences, n)
		}
	}
	for p, c := range seen {
		if c != 1 {
			t.Errorf("%s delivered %d times across the group", p, c)
		}
	}
}

// A retained message published on node A is what a subscriber on node C
// gets; an empty retained publish on node B deletes it on every node.
func TestClusterRetainedAcrossNodes(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	pubA := mt.Connect(t, nodes[0].MQTTURL(), "pub-a")
	pubA.Publish("config/site", 1, true, "v1")
	pubA.Publish("config/sentinel", 1, true, "s1")
	got := retainedOn(t, nodes[2], "s1")
	if got["config/site"] != "v1" {
		t.Fatalf("node C's retained messages: %v", got)
	}
	pubB := mt.Connect(t, nodes[1].MQTTURL(), "pub-b")
	pubB.Publish("config/site", 1, true, "")
	pubB.Publish("config/sentinel", 1, true, "s2")
	for i, n := range nodes {
		if got := retainedOn(t, n, "s2"); len(got) != 1 {
			t.Fatalf("node %d still retains %v after the delete on node B", i, got)
		}
	}
	// A NATS-native service retains by publishing into the stream.
	svc, err := nats.Connect(nc.URL(1))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if err := svc.Publish("$UMBRA.retained.config.sentinel", []byte("s3")); err != nil {
		t.Fatal(err)
	}
	retainedOn(t, nodes[0], "s3")
}

// retainedOn subscribes to config/# on node until the retained sentinel
// it gets is want, and returns the retained messages of that subscription.
// Each round ends with a live message on config/fence, which follows the
// retained ones on the connection.
func retainedOn(t *testing.T, node *brokertest.Server, want string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(mt.Wait)
	for round := 0; time.Now().Before(deadline); round++ {
		c := mt.Connect(t, node.MQTTURL(), fmt.Sprintf("reader-%d", round), ordered)
		ch := c.Subscribe("config/#", 1)
		c.Publish("config/fence", 1, false, "fence")
		got := map[string]string{}
		for _, m := range until(t, ch, "fence") {
			if m.Retained {
				got[m.Topic] = string(m.Payload)
			}
		}
		c.Disconnect(0)
		if got["config/sentinel"] == want {
			return got
		}
	}
	t.Fatalf("node never retained sentinel %q", want)
	return nil
}

// A persistent session's subscription keeps its node's NATS interest while
// the device is offline and after the node restarts (restored from the
// session store): QoS 1 messages published on node C are queued on node A
// and delivered when the device comes back.
func TestClusterPersistentSessionKeepsInterest(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	persistent := func(ch chan mt.Message) func(*paho.ClientOptions) {
		return func(o *paho.ClientOptions) {
			o.SetCleanSession(false).SetOrderMatters(true)
			o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
				ch <- mt.Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos()}
			})
		}
	}
	dev := mt.Connect(t, nodes[0].MQTTURL(), "d1", persistent(make(chan mt.Message, 64)))
	cmds := dev.Subscribe("devices/d1/cmd", 1)
	pubC := mt.Connect(t, nodes[2].MQTTURL(), "pub-c")
	untilRouted(t, cmds, func(p string) { pubC.Publish("devices/d1/cmd", 1, false, p) })
	dev.Disconnect(50)

	// queue publishes on node C until node A has taken one in from NATS.
	in := `umbra_cluster_bridge_messages_total{direction="in"}`
	queue := func(name string) {
		t.Helper()
		before := metricValue(t, nodes[0], in)
		deadline := time.After(mt.Wait)
		tick := time.NewTicker(20 * time.Millisecond) // poll interval of the metric
		defer tick.Stop()
		for i := 0; metricValue(t, nodes[0], in) == before; i++ {
			pubC.Publish("devices/d1/cmd", 1, false, fmt.Sprintf("%s-%d", name, i))
			select {
			case <-deadline:
				t.Fatalf("node A took in none of the %q messages", name)
			case <-tick.C:
			}
		}
	}
	queue("offline")
	nodes[0] = nodes[0].Restart(t)
	queue("restarted")

	back := make(chan mt.Message, 64)
	mt.Connect(t, nodes[0].MQTTURL(), "d1", persistent(back))
	want := map[string]bool{"offline-": false, "restarted-": false}
	deadline := time.After(mt.Wait)
	for !want["offline-"] || !want["restarted-"] {
		select {
		case m := <-back:
			for p := range want {
				if strings.HasPrefix(string(m.Payload), p) {
					want[p] = true
					if m.QoS != 1 {
						t.Errorf("%s delivered at QoS %d", m.Payload, m.QoS)
					}
				}
			}
		case <-deadline:
			t.Fatalf("queued messages delivered on reconnect: %v", want)
		}
	}
}

// MQTT 5 properties cross nodes: content type, response topic,
// correlation data, payload format, message expiry and user properties (in
// order, a key repeated) reach a subscriber on another node.
func TestClusterMQTT5PropertiesAcrossNodes(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 2)
	ctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
	defer cancel()
	got := make(chan *paho5.Publish, 64)
	conn, err := net.Dial("tcp", nodes[0].MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	sub := paho5.NewClient(paho5.ClientConfig{Conn: conn, OnPublishReceived: []func(paho5.PublishReceived) (bool, error){
		func(r paho5.PublishReceived) (bool, error) { got <- r.Packet; return true, nil },
	}})
	if _, err := sub.Connect(ctx, &paho5.Connect{ClientID: "rpc-server", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Disconnect(&paho5.Disconnect{}) })
	if _, err := sub.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "rpc/req", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	pub := connect5(t, nodes[1].MQTTAddr(), "rpc-client", nil)
	publish := func(payload string, props *paho5.PublishProperties) {
		if _, err := pub.Publish(ctx, &paho5.Publish{Topic: "rpc/req", QoS: 1, Payload: []byte(payload), Properties: props}); err != nil {
			t.Fatal(err)
		}
	}
	routed := false
	for i := 0; !routed; i++ { // probe until the subscription is known on node B's server
		publish(fmt.Sprintf("probe-%d", i), nil)
		select {
		case <-got:
			routed = true
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no probe crossed the cluster")
		}
	}
	format, expiry := byte(1), uint32(3600)
	publish("call", &paho5.PublishProperties{
		ContentType: "application/json", ResponseTopic: "rpc/resp/7", CorrelationData: []byte{0, 1, 2, 0xff},
		PayloadFormat: &format, MessageExpiry: &expiry,
		User: paho5.UserProperties{{Key: "trace", Value: "abc"}, {Key: "k", Value: "1"}, {Key: "k", Value: "2"}},
	})
	var p *paho5.Publish
	deadline := time.After(mt.Wait)
	for p == nil || strings.HasPrefix(string(p.Payload), "probe-") {
		select {
		case p = <-got:
		case <-deadline:
			t.Fatal("the MQTT 5 publish did not cross the cluster")
		}
	}
	pr := p.Properties
	if pr == nil || pr.ContentType != "application/json" || pr.ResponseTopic != "rpc/resp/7" ||
		string(pr.CorrelationData) != "\x00\x01\x02\xff" || pr.PayloadFormat == nil || *pr.PayloadFormat != 1 ||
		pr.MessageExpiry == nil || *pr.MessageExpiry == 0 || *pr.MessageExpiry > 3600 {
		t.Fatalf("properties on node A: %+v", pr)
	}
	if fmt.Sprint(pr.User) != fmt.Sprint(paho5.UserProperties{{Key: "trace", Value: "abc"}, {Key: "k", Value: "1"}, {Key: "k", Value: "2"}}) {
		t.Fatalf("user properties on node A: %v", pr.User)
	}
}

// A session taken over on its node (same client id, persistent) keeps its
// filters subscribed on NATS: messages from node C reach the new
// connection without it subscribing again.
func TestClusterTakeoverKeepsInterest(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	first := mt.Connect(t, nodes[0].MQTTURL(), "d3", func(o *paho.ClientOptions) { o.SetCleanSession(false).SetOrderMatters(true) })
	cmds := first.Subscribe("devices/d3/cmd", 1)
	pubC := mt.Connect(t, nodes[2].MQTTURL(), "pub-c")
	untilRouted(t, cmds, func(p string) { pubC.Publish("devices/d3/cmd", 1, false, p) })

	got := make(chan mt.Message, 64)
	mt.Connect(t, nodes[0].MQTTURL(), "d3", func(o *paho.ClientOptions) {
		o.SetCleanSession(false).SetOrderMatters(true)
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			got <- mt.Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos()}
		})
	})
	pubC.Publish("devices/d3/cmd", 1, false, "after-takeover")
	if ms := until(t, got, "after-takeover"); len(ms) != 1 || ms[0].QoS != 1 {
		t.Fatalf("new connection got %+v", ms)
	}
}
