package broker_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// MQTT 5 behaviours of docs/mqtt-conformance.md, each against the real
// in-process broker with raw packets.

// subscribeWith sends one SUBSCRIBE carrying sub's options and returns the
// SUBACK.
func (c *rawClient) subscribeWith(id uint16, sub packets.Subscription) packets.Packet {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: id,
		Filters: packets.Subscriptions{sub}})
	for {
		if pk := c.next(); pk.FixedHeader.Type == packets.Suback {
			return pk
		}
	}
}

// nextPublish returns the next PUBLISH, acknowledging it if QoS 1.
func (c *rawClient) nextPublish() packets.Packet {
	c.t.Helper()
	pk := c.next()
	if pk.FixedHeader.Type != packets.Publish {
		c.t.Fatalf("expected PUBLISH, got %s reason %#x", packets.PacketNames[pk.FixedHeader.Type], pk.ReasonCode)
	}
	if pk.FixedHeader.Qos == 1 {
		c.ack(packets.Puback, pk.PacketID)
	}
	return pk
}

func sessionExpiry(s uint32) func(*packets.Packet) {
	return func(p *packets.Packet) {
		p.Properties.SessionExpiryInterval = s
		p.Properties.SessionExpiryIntervalFlag = true
	}
}

func noSessionExpiry(p *packets.Packet) {
	p.Properties.SessionExpiryInterval = 0
	p.Properties.SessionExpiryIntervalFlag = false
}

func will(topic string, delay uint32) func(*packets.Packet) {
	return func(p *packets.Packet) {
		p.Connect.WillFlag = true
		p.Connect.WillTopic = topic
		p.Connect.WillPayload = []byte("gone")
		p.Connect.WillProperties.WillDelayInterval = delay
	}
}

// TestSessionExpiry: MQTT 5 Session Expiry Interval. 0 (sent or absent)
// ends the session with the connection [MQTT-3.1.2-23]; a positive interval
// keeps subscriptions and queued messages; a request above the broker's
// maximum is answered with the maximum in CONNACK; an expired session is
// gone (and its delayed will published at its end [MQTT-3.1.3-9]).
func TestSessionExpiry(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.SessionExpiry = time.Minute })
	addr := hostPort(srv.MQTTURL())
	watcher := mt.Connect(t, srv.MQTTURL(), "se-watcher")

	for name, expiry := range map[string]func(*packets.Packet){"0": sessionExpiry(0), "absent": noSessionExpiry} {
		t.Run("interval "+name+" ends the session with the connection", func(t *testing.T) {
			id := "se-zero-" + name
			c, _ := rawConnect(t, addr, nil, 5, id, false, expiry)
			c.subscribe(1, "se/"+id, 1)
			goOffline(t, watcher, c, id)
			watcher.Publish("se/"+id, 1, false, "not for a dead session")
			routed(watcher)
			c, ack := rawConnect(t, addr, nil, 5, id, false, sessionExpiry(600))
			if ack.SessionPresent {
				t.Fatal("CONNACK session present: the session outlived its connection")
			}
			expectNothingPending(t, c)
		})
	}
	t.Run("positive interval keeps the session", func(t *testing.T) {
		c, _ := rawConnect(t, addr, nil, 5, "se-kept", false, sessionExpiry(600))
		c.subscribe(1, "se/kept", 1)
		goOffline(t, watcher, c, "se-kept")
		watcher.Publish("se/kept", 1, false, "queued")
		routed(watcher)
		c, ack := rawConnect(t, addr, nil, 5, "se-kept", false, sessionExpiry(600))
		if !ack.SessionPresent {
			t.Fatal("session not present")
		}
		if pk := c.nextPublish(); string(pk.Payload) != "queued" {
			t.Fatalf("got %q", pk.Payload)
		}
	})
	t.Run("capped at the broker's maximum", func(t *testing.T) {
		_, ack := rawConnect(t, addr, nil, 5, "se-cap", false, sessionExpiry(3600))
		if !ack.Properties.SessionExpiryIntervalFlag || ack.Properties.SessionExpiryInterval != 60 {
			t.Fatalf("CONNACK Session Expiry Interval %v/%d, want 60", ack.Properties.SessionExpiryIntervalFlag, ack.Properties.SessionExpiryInterval)
		}
	})
	t.Run("expires", func(t *testing.T) {
		// A broker whose maximum is 1 s: the client asks for an hour and is
		// told 1 s; its will's delay is an hour. The will is published when
		// the session ends [MQTT-3.1.3-9], the sign that it has expired.
		srv := brokertest.Start(t, func(o *broker.Options) { o.SessionExpiry = time.Second })
		addr := hostPort(srv.MQTTURL())
		wills := mt.Connect(t, srv.MQTTURL(), "se-watcher").Subscribe("se/will/expiring", 1)
		c, ack := rawConnect(t, addr, nil, 5, "se-expiring", false, sessionExpiry(3600), will("se/will/expiring", 3600))
		if ack.Properties.SessionExpiryInterval != 1 {
			t.Fatalf("CONNACK Session Expiry Interval %d, want the broker's 1", ack.Properties.SessionExpiryInterval)
		}
		c.subscribe(1, "se/expiring", 1)
		c.close()
		mt.Next(t, wills)
		_, ack = rawConnect(t, addr, nil, 5, "se-expiring", false, sessionExpiry(600))
		if ack.SessionPresent {
			t.Fatal("session present after its expiry")
		}
	})
}

// TestMessageExpiry: a message whose Message Expiry Interval has passed
// while queued for an offline subscriber is not delivered [MQTT-3.3.2-5];
// one still alive is, with the interval it has left [MQTT-3.3.2-6].
func TestMessageExpiry(t *testing.T) {
	srv := brokertest.Start(t)
	addr := hostPort(srv.MQTTURL())
	watcher := mt.Connect(t, srv.MQTTURL(), "me-watcher")
	c, _ := rawConnect(t, addr, nil, 5, "me-dev", false, sessionExpiry(600))
	c.subscribe(1, "me/t", 1)
	goOffline(t, watcher, c, "me-dev")

	pub, _ := rawConnect(t, addr, nil, 5, "me-pub", true)
	for i, exp := range []uint32{1, 3600} {
		pub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i + 1),
			TopicName: "me/t", Payload: []byte(fmt.Sprint("expiry-", exp)),
			Properties: packets.Properties{MessageExpiryInterval: exp}})
		if ack := pub.next(); ack.FixedHeader.Type != packets.Puback {
			t.Fatalf("publish: %s", packets.PacketNames[ack.FixedHeader.Type])
		}
	}
	// A clock the broker keeps: a session that expires after 3 s publishes
	// its will when it ends; by then the 1 s message has expired and the
	// broker's once-a-second sweep has run past it.
	clock := watcher.Subscribe("me/clock", 1)
	cc, _ := rawConnect(t, addr, nil, 5, "me-clock", false, sessionExpiry(3), will("me/clock", 3600))
	cc.close()
	mt.Next(t, clock)

	c, _ = rawConnect(t, addr, nil, 5, "me-dev", false, sessionExpiry(600))
	pk := c.nextPublish()
	if string(pk.Payload) != "expiry-3600" {
		t.Fatalf("delivered %q first; the expired message must not be delivered", pk.Payload)
	}
	if left := pk.Properties.MessageExpiryInterval; left == 0 || left > 3600 {
		t.Errorf("Message Expiry Interval on delivery %d, want the time left (0 < x <= 3600)", left)
	}
	expectNothingPending(t, c)
}

// TestSharedSubscriptions: each message published to a shared
// subscription's topic goes to exactly one member of the group.
func TestSharedSubscriptions(t *testing.T) {
	srv := brokertest.Start(t)
	addr := hostPort(srv.MQTTURL())
	const n = 40
	got := make(chan string, 2*n)
	var members []*rawClient
	for i := range 2 {
		c, _ := rawConnect(t, addr, nil, 5, fmt.Sprint("sh-", i), true)
		if ack := c.subscribe(1, "$share/workers/sh/jobs", 1); ack.ReasonCodes[0] != 1 {
			t.Fatalf("SUBACK %#x", ack.ReasonCodes)
		}
		members = append(members, c)
	}
	for _, c := range members {
		go func(c *rawClient) {
			for {
				pk, err := c.read(mt.Wait)
				if err != nil {
					return
				}
				if pk.FixedHeader.Type == packets.Publish {
					got <- string(pk.Payload)
				}
			}
		}(c)
	}
	pub := mt.Connect(t, srv.MQTTURL(), "sh-pub")
	for i := range n {
		pub.Publish("sh/jobs", 1, false, fmt.Sprint("job-", i))
	}
	seen := map[string]int{}
	deadline := time.After(4 * mt.Wait)
	for len(seen) < n {
		select {
		case m := <-got:
			seen[m]++
			if seen[m] > 1 {
				t.Fatalf("%s delivered to more than one member", m)
			}
		case <-deadline:
			t.Fatalf("only %d of %d messages delivered", len(seen), n)
		}
	}
	for _, c := range members {
		c.close()
	}
	for {
		select {
		case m := <-got:
			t.Fatalf("%s delivered twice", m)
		default:
			return
		}
	}
}

// TestRetainHandlingAndRetainAsPublished: Retain Handling 0 sends retained
// messages at every subscribe, 1 only for a new subscription, 2 never
// [MQTT-3.3.1-9..11]; Retain As Published keeps the RETAIN flag on
// forwarded messages, without it the flag is cleared [MQTT-3.3.1-12/13].
func TestRetainHandlingAndRetainAsPublished(t *testing.T) {
	srv := brokertest.Start(t)
	addr := hostPort(srv.MQTTURL())
	pub := mt.Connect(t, srv.MQTTURL(), "rh-pub")
	pub.Publish("rh/t", 1, true, "kept")

	for _, tc := range []struct {
		rh           byte
		first, again bool
	}{{0, true, true}, {1, true, false}, {2, false, false}} {
		t.Run(fmt.Sprint("retain handling ", tc.rh), func(t *testing.T) {
			c, _ := rawConnect(t, addr, nil, 5, fmt.Sprint("rh-", tc.rh), true)
			for round, want := range []bool{tc.first, tc.again} {
				c.subscribeWith(uint16(round+1), packets.Subscription{Filter: "rh/t", Qos: 1, RetainHandling: tc.rh})
				if want {
					pk := c.nextPublish()
					if string(pk.Payload) != "kept" || !pk.FixedHeader.Retain {
						t.Fatalf("subscribe %d: got %q retain %v", round+1, pk.Payload, pk.FixedHeader.Retain)
					}
				}
				expectNothingPending(t, c)
			}
		})
	}

	rap, _ := rawConnect(t, addr, nil, 5, "rh-rap", true)
	rap.subscribeWith(1, packets.Subscription{Filter: "rh/live", Qos: 1, RetainAsPublished: true})
	plain, _ := rawConnect(t, addr, nil, 5, "rh-plain", true)
	plain.subscribeWith(1, packets.Subscription{Filter: "rh/live", Qos: 1})
	pub.Publish("rh/live", 1, true, "live")
	if pk := rap.nextPublish(); !pk.FixedHeader.Retain {
		t.Error("Retain As Published: RETAIN flag cleared on a forwarded retained publish")
	}
	if pk := plain.nextPublish(); pk.FixedHeader.Retain {
		t.Error("without Retain As Published: RETAIN flag kept on a live forwarded publish")
	}
}

// TestNoLocal: with No Local a client is not sent its own publishes
// [MQTT-3.8.3-3]; others' still arrive; without it, its own do.
func TestNoLocal(t *testing.T) {
	srv := brokertest.Start(t)
	addr := hostPort(srv.MQTTURL())
	c, _ := rawConnect(t, addr, nil, 5, "nl-dev", true)
	c.subscribeWith(1, packets.Subscription{Filter: "nl/quiet", Qos: 1, NoLocal: true})
	c.subscribeWith(2, packets.Subscription{Filter: "nl/echo", Qos: 1})
	c.publish(10, "nl/quiet", 1, "mine")
	if pk := c.next(); pk.FixedHeader.Type != packets.Puback {
		t.Fatalf("got %s, want only the PUBACK", packets.PacketNames[pk.FixedHeader.Type])
	}
	expectNothingPending(t, c)
	mt.Connect(t, srv.MQTTURL(), "nl-other").Publish("nl/quiet", 1, false, "theirs")
	if pk := c.nextPublish(); string(pk.Payload) != "theirs" {
		t.Fatalf("got %q", pk.Payload)
	}
	c.publish(11, "nl/echo", 1, "echo")
	var echoed bool
	for range 2 { // PUBACK and the echo, in either order
		if pk := c.next(); pk.FixedHeader.Type == packets.Publish {
			echoed = string(pk.Payload) == "echo"
			c.ack(packets.Puback, pk.PacketID)
		}
	}
	if !echoed {
		t.Fatal("without No Local the client's own publish was not delivered to it")
	}
}

// TestRequestResponsePropertiesPassThrough: Response Topic, Correlation
// Data, user properties, content type and payload format reach the
// subscriber unchanged [MQTT-3.3.2-15..20].
func TestRequestResponsePropertiesPassThrough(t *testing.T) {
	srv := brokertest.Start(t)
	addr := hostPort(srv.MQTTURL())
	responder, _ := rawConnect(t, addr, nil, 5, "rr-responder", true)
	responder.subscribe(1, "rr/requests", 1)
	requester, _ := rawConnect(t, addr, nil, 5, "rr-requester", true)
	sent := packets.Properties{
		ResponseTopic:     "rr/responses/rr-requester",
		CorrelationData:   []byte{0xca, 0xfe, 0x00, 0x01},
		User:              []packets.UserProperty{{Key: "trace", Val: "t-1"}, {Key: "trace", Val: "t-2"}},
		ContentType:       "application/json",
		PayloadFormat:     1,
		PayloadFormatFlag: true,
	}
	requester.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 3,
		TopicName: "rr/requests", Payload: []byte(`{"q":1}`), Properties: sent,
		Mods: packets.Mods{AllowResponseInfo: true}}) // lets the encoder write them
	pk := responder.nextPublish()
	p := pk.Properties
	if p.ResponseTopic != sent.ResponseTopic || !bytes.Equal(p.CorrelationData, sent.CorrelationData) ||
		p.ContentType != sent.ContentType || !p.PayloadFormatFlag || p.PayloadFormat != 1 ||
		fmt.Sprint(p.User) != fmt.Sprint(sent.User) {
		t.Fatalf("properties changed on the way:\n got  %+v\n sent %+v", p, sent)
	}
}

// TestWillDelay: a will with a Will Delay Interval is published after the
// delay [MQTT-3.1.3-9], not at all if the client reconnects first.
func TestWillDelay(t *testing.T) {
	srv := brokertest.Start(t)
	addr := hostPort(srv.MQTTURL())
	watcher := mt.Connect(t, srv.MQTTURL(), "wd-watcher")
	wills := watcher.Subscribe("wd/#", 1)

	// A drops and comes back within its 1 s delay: its will is cancelled.
	a, _ := rawConnect(t, addr, nil, 5, "wd-a", false, sessionExpiry(600), will("wd/a", 1))
	a.close()
	a, _ = rawConnect(t, addr, nil, 5, "wd-a", false, sessionExpiry(600))
	defer a.close()

	// B drops after A came back, with a 2 s delay: had A's will not been
	// cancelled it would have been due a whole second (one sweep) earlier.
	b, _ := rawConnect(t, addr, nil, 5, "wd-b", false, sessionExpiry(600), will("wd/b", 2))
	dropped := time.Now()
	b.close()
	m := mt.Next(t, wills)
	if m.Topic != "wd/b" {
		t.Fatalf("first will on %s: a client that reconnected within its will delay had its will published", m.Topic)
	}
	if waited := time.Since(dropped); waited < time.Second {
		t.Fatalf("will published %v after the drop, before its 2 s delay", waited)
	}
}

// TestServerTopicAliases: Umbra assigns topic aliases to messages it sends
// to an MQTT 5 client that allows them, never above the client's Topic
// Alias Maximum [MQTT-3.3.2-9], never to a client that allows none; a
// message queued while the client was away is resent with its topic name,
// since aliases do not survive the connection [MQTT-3.3.2-7].
func TestServerTopicAliases(t *testing.T) {
	srv := brokertest.Start(t)
	addr := hostPort(srv.MQTTURL())
	watcher := mt.Connect(t, srv.MQTTURL(), "ta-pub")
	aliasMax := func(n uint16) func(*packets.Packet) {
		return func(p *packets.Packet) { p.Properties.TopicAliasMaximum = n }
	}
	topics := []string{"ta/1", "ta/2", "ta/3", "ta/1", "ta/2", "ta/3", "ta/1"}
	receive := func(t *testing.T, c *rawClient, max uint16, aliases map[uint16]string) (used int) {
		t.Helper()
		for i, want := range topics {
			pk, err := c.read(mt.Wait)
			if err != nil || pk.FixedHeader.Type != packets.Publish {
				t.Fatalf("message %d (%s): got %s, %v", i, want, packets.PacketNames[pk.FixedHeader.Type], err)
			}
			c.ack(packets.Puback, pk.PacketID)
			a := pk.Properties.TopicAlias
			if max == 0 && (a != 0 || pk.Properties.TopicAliasFlag) {
				t.Fatalf("message %d: alias %d sent to a client whose Topic Alias Maximum is 0", i, a)
			}
			if a > max {
				t.Fatalf("message %d: alias %d above the client's maximum %d", i, a, max)
			}
			topic := pk.TopicName
			if a != 0 {
				used++
				if topic != "" {
					aliases[a] = topic
				} else {
					topic = aliases[a]
				}
			}
			if topic != want || string(pk.Payload) != fmt.Sprint("m", i) {
				t.Fatalf("message %d: resolved topic %q payload %q, want %q m%d", i, topic, pk.Payload, want, i)
			}
		}
		return used
	}
	for _, max := range []uint16{0, 2} {
		t.Run(fmt.Sprint("client maximum ", max), func(t *testing.T) {
			id := fmt.Sprint("ta-", max)
			c, _ := rawConnect(t, addr, nil, 5, id, false, sessionExpiry(600), aliasMax(max))
			c.subscribe(1, "ta/#", 1)
			for i, topic := range topics {
				watcher.Publish(topic, 1, false, fmt.Sprint("m", i))
			}
			t.Log("online")
			if used := receive(t, c, max, map[uint16]string{}); max > 0 && used == 0 {
				t.Fatal("no alias used although the client allows them")
			}
			// Queued while away: after reconnecting, every message must be
			// resolvable on the new connection.
			goOffline(t, watcher, c, id)
			for i, topic := range topics {
				watcher.Publish(topic, 1, false, fmt.Sprint("m", i))
			}
			routed(watcher)
			c, _ = rawConnect(t, addr, nil, 5, id, false, sessionExpiry(600), aliasMax(max))
			t.Log("after reconnect")
			receive(t, c, max, map[uint16]string{})
		})
	}
}

// TestReasonStrings: a refused MQTT 5 publish is answered with a reason
// code and a reason string, and a protocol error with a DISCONNECT that
// says why; a client that set Request Problem Information to 0 gets no
// reason string on the PUBACK [MQTT-3.1.2-29] (DISCONNECT may carry one).
func TestReasonStrings(t *testing.T) {
	s := startSecured(t)
	secret := s.issue(t, "rs-dev")
	conf := &tls.Config{RootCAs: s.ca.Pool(), ServerName: "127.0.0.1"}
	addr := hostPort(s.tlsMQTTURL)
	for _, problemInfo := range []bool{true, false} {
		t.Run(fmt.Sprint("request problem information ", problemInfo), func(t *testing.T) {
			c, _ := rawConnect(t, addr, conf, 5, "rs-dev", true, func(p *packets.Packet) {
				p.Connect.UsernameFlag, p.Connect.Username = true, []byte("rs-dev")
				p.Connect.PasswordFlag, p.Connect.Password = true, []byte(secret)
				if !problemInfo {
					p.Properties.RequestProblemInfo, p.Properties.RequestProblemInfoFlag = 0, true
				}
			})
			c.publish(4, "$aws/things/someone-else/shadow/update", 1, `{"state":{}}`)
			ack := c.next()
			if ack.FixedHeader.Type != packets.Puback || ack.ReasonCode != packets.ErrNotAuthorized.Code {
				t.Fatalf("got %s %#x, want PUBACK 0x87", packets.PacketNames[ack.FixedHeader.Type], ack.ReasonCode)
			}
			if got := ack.Properties.ReasonString != ""; got != problemInfo {
				t.Errorf("PUBACK 0x87 reason string %q; want one: %v", ack.Properties.ReasonString, problemInfo)
			}
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "rs/a", Payload: []byte("x"),
				Properties: packets.Properties{TopicAlias: broker.TopicAliasMaximum + 1, TopicAliasFlag: true}})
			got := c.expectClosed()
			if len(got) == 0 || got[len(got)-1].FixedHeader.Type != packets.Disconnect {
				t.Fatal("no DISCONNECT")
			}
			if d := got[len(got)-1]; problemInfo && d.Properties.ReasonString == "" {
				t.Errorf("DISCONNECT %#x without a reason string", d.ReasonCode)
			}
		})
	}
}

// TestWillDelayTakeover: a connection taken over by a new one to the same
// session has its delayed will cancelled by that new connection, as a
// reconnect would [MQTT-3.1.3-9]; a will without delay is published at
// once ([MQTT-3.1.4-3]: the old connection closes as any other).
func TestWillDelayTakeover(t *testing.T) {
	srv := brokertest.Start(t)
	addr := hostPort(srv.MQTTURL())
	watcher := mt.Connect(t, srv.MQTTURL(), "wt-watcher")
	wills := watcher.Subscribe("wt/#", 1)

	// A is taken over by a new connection (same session) while connected.
	old, _ := rawConnect(t, addr, nil, 5, "wt-a", false, sessionExpiry(600), will("wt/a", 1))
	defer old.close()
	a, ack := rawConnect(t, addr, nil, 5, "wt-a", false, sessionExpiry(600))
	defer a.close()
	if !ack.SessionPresent {
		t.Fatal("takeover: session not present")
	}
	if pk, err := old.read(mt.Wait); err != nil || pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrSessionTakenOver.Code {
		t.Fatalf("old connection: %v %v, want DISCONNECT 0x8E", pk.FixedHeader.Type, err)
	}

	// B drops after the takeover with a 2 s delay: had A's will not been
	// cancelled it would have been due a second earlier.
	b, _ := rawConnect(t, addr, nil, 5, "wt-b", false, sessionExpiry(600), will("wt/b", 2))
	b.close()
	if m := mt.Next(t, wills); m.Topic != "wt/b" {
		t.Fatalf("first will on %s: the will of a connection taken over by the same session was published", m.Topic)
	}
}
