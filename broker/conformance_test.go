package broker_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// These tests back the rows of docs/mqtt-conformance.md. Each drives the
// real in-process broker with raw packets (to see exactly what is on the
// wire) or with paho.

// Issue 14.3: a persistent-session device that reconnects while it has
// messages in flight and resubscribes must get its subscription granted.
// The client's SUBSCRIBE packet id lives in the client's id space; the
// server's outbound in-flight ids are another.
func TestResubscribeWithMessagesInFlightIsGranted(t *testing.T) {
	srv := brokertest.Start(t)
	addr := hostPort(srv.MQTTURL())
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			id := fmt.Sprintf("resub-%d", v)
			topic := "resub/" + id
			c, _ := rawConnect(t, addr, nil, v, id, false)
			if ack := c.subscribe(1, topic, 1); ack.ReasonCodes[0] != 1 {
				t.Fatalf("first SUBACK %x", ack.ReasonCodes)
			}
			pub := mt.Connect(t, srv.MQTTURL(), "resub-pub-"+id)
			for i := range 3 {
				pub.Publish(topic, 1, false, fmt.Sprint("m", i))
			}
			var ids []uint16
			for range 3 { // received, never acknowledged
				pk := c.next()
				ids = append(ids, pk.PacketID)
			}
			c.close()
			c, ack := rawConnect(t, addr, nil, v, id, false)
			if !ack.SessionPresent {
				t.Fatal("session not present on reconnect")
			}
			for _, pid := range ids { // the device resubscribes with ids the server also uses
				if ack := c.subscribe(pid, topic, 1); len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != 1 {
					t.Fatalf("resubscribe with packet id %d while the server has %v in flight: SUBACK %#x, want [0x01]", pid, ids, ack.ReasonCodes)
				}
			}
		})
	}
}

// Issue 14.6: a QoS 2 delivery whose PUBREC/PUBREL exchange happened
// before a restart continues with PUBREL after it, never with the PUBLISH
// again (MQTT-4.3.3).
func TestQoS2PubrelStateSurvivesRestart(t *testing.T) {
	srv := brokertest.Start(t)
	c, _ := rawConnect(t, hostPort(srv.MQTTURL()), nil, 4, "q2-dev", false)
	c.subscribe(1, "q2/once", 2)
	pub := mt.Connect(t, srv.MQTTURL(), "q2-pub")
	pub.Publish("q2/once", 2, false, "exactly once")
	pk := c.next()
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 2 {
		t.Fatalf("expected a QoS 2 PUBLISH, got %s qos %d", packets.PacketNames[pk.FixedHeader.Type], pk.FixedHeader.Qos)
	}
	c.ack(packets.Pubrec, pk.PacketID)
	if rel := c.next(); rel.FixedHeader.Type != packets.Pubrel || rel.PacketID != pk.PacketID {
		t.Fatalf("expected PUBREL %d, got %s %d", pk.PacketID, packets.PacketNames[rel.FixedHeader.Type], rel.PacketID)
	}
	c.close() // before PUBCOMP
	srv = srv.Restart(t)

	c, _ = rawConnect(t, hostPort(srv.MQTTURL()), nil, 4, "q2-dev", false)
	got := c.next()
	if got.FixedHeader.Type != packets.Pubrel || got.PacketID != pk.PacketID {
		t.Fatalf("after restart: got %s (id %d, dup %v, payload %q); want PUBREL %d",
			packets.PacketNames[got.FixedHeader.Type], got.PacketID, got.FixedHeader.Dup, got.Payload, pk.PacketID)
	}
	c.ack(packets.Pubcomp, pk.PacketID)
	expectNothingPending(t, c)
	c.close()

	srv = srv.Restart(t)
	c, _ = rawConnect(t, hostPort(srv.MQTTURL()), nil, 4, "q2-dev", false)
	expectNothingPending(t, c)
}

// Issue 14.6 (done-when): a QoS 2 message published to an offline
// persistent subscriber is delivered exactly once after a broker restart.
func TestQoS2ToOfflineSubscriberExactlyOnceAcrossRestart(t *testing.T) {
	srv := brokertest.Start(t)
	c, _ := rawConnect(t, hostPort(srv.MQTTURL()), nil, 4, "q2-off", false)
	c.subscribe(1, "q2/offline", 2)
	pub := mt.Connect(t, srv.MQTTURL(), "q2-off-pub")
	goOffline(t, pub, c, "q2-off")
	pub.Publish("q2/offline", 2, false, "while away") // returns after PUBCOMP
	srv = srv.Restart(t)

	c, _ = rawConnect(t, hostPort(srv.MQTTURL()), nil, 4, "q2-off", false)
	pk := c.next()
	if pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != "while away" || pk.FixedHeader.Qos != 2 {
		t.Fatalf("after restart: got %s %q qos %d", packets.PacketNames[pk.FixedHeader.Type], pk.Payload, pk.FixedHeader.Qos)
	}
	if pk.FixedHeader.Dup {
		t.Error("first delivery of a queued message marked DUP")
	}
	c.ack(packets.Pubrec, pk.PacketID)
	if rel := c.next(); rel.FixedHeader.Type != packets.Pubrel {
		t.Fatalf("expected PUBREL, got %s", packets.PacketNames[rel.FixedHeader.Type])
	}
	c.ack(packets.Pubcomp, pk.PacketID)
	expectNothingPending(t, c)
	c.close()

	srv = srv.Restart(t)
	c, _ = rawConnect(t, hostPort(srv.MQTTURL()), nil, 4, "q2-off", false)
	expectNothingPending(t, c)
}

// goOffline closes c's connection and returns once the broker has noticed
// (its presence event is out), so what is published next is queued for an
// offline client rather than written to a dying connection.
func goOffline(t *testing.T, watcher *mt.Client, c *rawClient, id string) {
	t.Helper()
	gone := watcher.Subscribe("$aws/events/presence/disconnected/"+id, 1)
	c.close()
	mt.Next(t, gone)
	watcher.Client.Unsubscribe("$aws/events/presence/disconnected/" + id).WaitTimeout(mt.Wait)
}

// routed returns once everything pub published before has been routed to
// its subscribers. Mochi sends PUBACK before it routes a QoS 1 publish, but
// handles one client's packets in order, so the PUBACK of a later publish
// means the earlier ones are routed. Without it a test that reconnects the
// subscriber right after publishing races the routing of the last message
// with the session takeover (see docs/mqtt-conformance.md).
func routed(pub *mt.Client) { pub.Publish("conformance/fence", 1, false, "") }

// expectNothingPending pings and fails if anything but PINGRESP comes
// first: the broker answers in order, so nothing else was queued.
func expectNothingPending(t *testing.T, c *rawClient) {
	t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	if pk := c.next(); pk.FixedHeader.Type != packets.Pingresp {
		t.Fatalf("expected nothing more; got %s id %d dup %v payload %q", packets.PacketNames[pk.FixedHeader.Type], pk.PacketID, pk.FixedHeader.Dup, pk.Payload)
	}
}

// Issue 14.7: messages queued for an offline persistent subscriber come
// back in publish order, first delivery without DUP, also across a restart.
func TestQueuedMessagesKeepPublishOrder(t *testing.T) {
	srv := brokertest.Start(t)
	const n = 12
	c, _ := rawConnect(t, hostPort(srv.MQTTURL()), nil, 4, "order-dev", false)
	c.subscribe(1, "order/t", 1)
	pub := mt.Connect(t, srv.MQTTURL(), "order-pub")
	goOffline(t, pub, c, "order-dev")
	check := func(phase string, c *rawClient) {
		t.Helper()
		var got []string
		for range n {
			pk := c.next()
			if pk.FixedHeader.Type != packets.Publish {
				t.Fatalf("%s: got %s", phase, packets.PacketNames[pk.FixedHeader.Type])
			}
			if pk.FixedHeader.Dup {
				t.Errorf("%s: first delivery of %q marked DUP", phase, pk.Payload)
			}
			got = append(got, string(pk.Payload))
			c.ack(packets.Puback, pk.PacketID)
		}
		for i, m := range got {
			if m != fmt.Sprintf("%s-m%d", phase, i+1) {
				t.Fatalf("%s: delivered %v, want publish order", phase, got)
			}
		}
		expectNothingPending(t, c)
	}
	for i := 1; i <= n; i++ {
		pub.Publish("order/t", 1, false, fmt.Sprintf("online-m%d", i))
	}
	routed(pub)
	c, _ = rawConnect(t, hostPort(srv.MQTTURL()), nil, 4, "order-dev", false)
	check("online", c)
	goOffline(t, pub, c, "order-dev")

	for i := 1; i <= n; i++ {
		pub.Publish("order/t", 1, false, fmt.Sprintf("restart-m%d", i))
	}
	pub.Disconnect(0)
	srv = srv.Restart(t)
	c, _ = rawConnect(t, hostPort(srv.MQTTURL()), nil, 4, "order-dev", false)
	check("restart", c)
}

// Issue 14.10: PUBACK and PUBREC do not repeat the publish's user
// properties.
func TestAcksDoNotEchoUserPropertiesRaw(t *testing.T) {
	srv := brokertest.Start(t)
	c, _ := rawConnect(t, hostPort(srv.MQTTURL()), nil, 5, "props-dev", true)
	for _, qos := range []byte{1, 2} {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: uint16(qos),
			TopicName: "props/t", Payload: []byte("x"),
			Properties: packets.Properties{User: []packets.UserProperty{{Key: "trace", Val: strings.Repeat("z", 40)}}}})
		ack := c.next()
		if len(ack.Properties.User) != 0 {
			t.Errorf("QoS %d %s echoes user properties %v", qos, packets.PacketNames[ack.FixedHeader.Type], ack.Properties.User)
		}
		if qos == 2 {
			c.ack(packets.Pubrel, ack.PacketID)
			c.next()
		}
	}
}

// Issue 14.9: CONNACK announces the limits the broker enforces, and an
// MQTT 5 client that breaks one is told why (DISCONNECT with a reason)
// before the connection closes.
func TestConnackAnnouncesLimitsAndViolationsGetReasons(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxPacketSize = 4096 })
	addr := hostPort(srv.MQTTURL())
	c, ack := rawConnect(t, addr, nil, 5, "limits-dev", true)
	if ack.Properties.MaximumPacketSize != 4096 {
		t.Errorf("CONNACK Maximum Packet Size = %d, want 4096", ack.Properties.MaximumPacketSize)
	}
	tam := ack.Properties.TopicAliasMaximum
	if tam == 0 {
		t.Fatalf("CONNACK has no Topic Alias Maximum")
	}
	if tam != broker.TopicAliasMaximum {
		t.Errorf("CONNACK Topic Alias Maximum = %d, want %d", tam, broker.TopicAliasMaximum)
	}

	t.Run("alias above the maximum", func(t *testing.T) {
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "limits/a", Payload: []byte("x"),
			Properties: packets.Properties{TopicAlias: tam + 1, TopicAliasFlag: true}})
		expectDisconnect(t, c, packets.ErrTopicAliasInvalid.Code)
	})
	t.Run("alias within the maximum", func(t *testing.T) {
		c, _ := rawConnect(t, addr, nil, 5, "limits-ok", true)
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 7, TopicName: "limits/a", Payload: []byte("x"),
			Properties: packets.Properties{TopicAlias: tam, TopicAliasFlag: true}})
		if pk := c.next(); pk.FixedHeader.Type != packets.Puback || pk.ReasonCode != 0 {
			t.Fatalf("got %s reason %#x", packets.PacketNames[pk.FixedHeader.Type], pk.ReasonCode)
		}
	})
	t.Run("oversized publish", func(t *testing.T) {
		c, _ := rawConnect(t, addr, nil, 5, "limits-big", true)
		c.publish(0, "limits/big", 0, strings.Repeat("b", 8000))
		expectDisconnect(t, c, packets.ErrPacketTooLarge.Code)
	})
	t.Run("oversized publish, MQTT 3.1.1: closed without DISCONNECT", func(t *testing.T) {
		c, _ := rawConnect(t, addr, nil, 4, "limits-big3", true)
		c.publish(0, "limits/big", 0, strings.Repeat("b", 8000))
		if got := c.expectClosed(); len(got) != 0 {
			t.Fatalf("a 3.1.1 client was sent %s", packets.PacketNames[got[0].FixedHeader.Type])
		}
	})
}

func expectDisconnect(t *testing.T, c *rawClient, code byte) {
	t.Helper()
	got := c.expectClosed()
	if len(got) == 0 {
		t.Fatalf("connection closed without DISCONNECT (want reason %#x)", code)
	}
	last := got[len(got)-1]
	if last.FixedHeader.Type != packets.Disconnect || last.ReasonCode != code {
		t.Fatalf("last packet %s reason %#x, want DISCONNECT %#x", packets.PacketNames[last.FixedHeader.Type], last.ReasonCode, code)
	}
}

// Issue 14.9: a broker configured with a maximum keep alive tells an MQTT 5
// client that asked for more (or for none) the value it will enforce.
func TestServerKeepAliveIsAnnounced(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxKeepAlive = 300 * time.Second })
	addr := hostPort(srv.MQTTURL())
	for _, asked := range []uint16{0, 1200} {
		_, ack := rawConnect(t, addr, nil, 5, fmt.Sprint("ka-", asked), true, func(p *packets.Packet) { p.Connect.Keepalive = asked })
		if !ack.Properties.ServerKeepAliveFlag || ack.Properties.ServerKeepAlive != 300 {
			t.Errorf("asked keep alive %d: CONNACK Server Keep Alive %v/%d, want 300", asked, ack.Properties.ServerKeepAliveFlag, ack.Properties.ServerKeepAlive)
		}
	}
	_, ack := rawConnect(t, addr, nil, 5, "ka-60", true, func(p *packets.Packet) { p.Connect.Keepalive = 60 })
	if ack.Properties.ServerKeepAliveFlag {
		t.Errorf("keep alive 60 within the maximum was overridden: %d", ack.Properties.ServerKeepAlive)
	}
}

// Issue 14.8: a client's Receive Maximum is honoured without stalling or
// losing messages: with receive maximum 2 and manual acknowledgements all
// ten messages arrive, never more than two unacknowledged, also when the
// client goes away with messages in flight and comes back.
func TestReceiveMaximumDeliversEverything(t *testing.T) {
	srv := brokertest.Start(t)
	pub := mt.Connect(t, srv.MQTTURL(), "rm-pub")
	ctx, cancel := context.WithTimeout(context.Background(), 4*mt.Wait)
	defer cancel()

	type delivery struct {
		p   *paho5.Publish
		cli *paho5.Client
	}
	got := make(chan delivery, 64)
	connect := func(clean bool) *paho5.Client {
		conn, err := dialTCP(hostPort(srv.MQTTURL()))
		if err != nil {
			t.Fatal(err)
		}
		var c *paho5.Client
		c = paho5.NewClient(paho5.ClientConfig{
			Conn:                       conn,
			EnableManualAcknowledgment: true,
			OnPublishReceived: []func(paho5.PublishReceived) (bool, error){
				func(p paho5.PublishReceived) (bool, error) { got <- delivery{p.Packet, c}; return true, nil },
			},
		})
		rm, exp := uint16(2), uint32(600)
		ca, err := c.Connect(ctx, &paho5.Connect{ClientID: "rm-dev", CleanStart: clean, KeepAlive: 30,
			Properties: &paho5.ConnectProperties{ReceiveMaximum: &rm, SessionExpiryInterval: &exp}})
		if err != nil || ca.ReasonCode != 0 {
			t.Fatalf("connect: %v %+v", err, ca)
		}
		return c
	}
	c := connect(true)
	if _, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "rm/t", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	receive := func(c *paho5.Client, want map[string]bool, ack bool) {
		t.Helper()
		for len(want) > 0 {
			select {
			case d := <-got:
				if d.cli != c {
					continue // from the earlier connection
				}
				delete(want, string(d.p.Payload))
				if ack {
					if err := c.Ack(d.p); err != nil {
						t.Fatal(err)
					}
				}
			case <-ctx.Done():
				t.Fatalf("stalled: still waiting for %v", want)
			}
		}
	}
	want := map[string]bool{}
	for i := range 10 {
		pub.Publish("rm/t", 1, false, fmt.Sprint("a", i))
		want[fmt.Sprint("a", i)] = true
	}
	receive(c, want, true)

	// Away with two unacknowledged in flight and eight more queued.
	for i := range 10 {
		pub.Publish("rm/t", 1, false, fmt.Sprint("b", i))
	}
	receive(c, map[string]bool{"b0": true, "b1": true}, false)
	_ = c.Disconnect(&paho5.Disconnect{})
	c = connect(false)
	defer c.Disconnect(&paho5.Disconnect{})
	want = map[string]bool{}
	for i := range 10 {
		want[fmt.Sprint("b", i)] = true
	}
	receive(c, want, true)
}

// Issue 14.4: an MQTT 3.1.1 device whose publish is denied is not sent a
// DISCONNECT (3.1.1 has none): the connection is closed, as AWS IoT does,
// and a device that comes straight back is made to wait for its CONNACK,
// longer each time, so replaying the denied publish cannot loop at full
// speed.
func TestDeniedPublishMQTT311ClosesAndBacksOff(t *testing.T) {
	const base = 300 * time.Millisecond
	s := startSecured(t, func(o *broker.Options) { o.DeniedPublishBackoff = base })
	secret := s.issue(t, "deny-dev")
	conf := &tls.Config{RootCAs: s.ca.Pool(), ServerName: "127.0.0.1"}
	login := func(p *packets.Packet) {
		p.Connect.UsernameFlag, p.Connect.Username = true, []byte("deny-dev")
		p.Connect.PasswordFlag, p.Connect.Password = true, []byte(secret)
	}
	addr := hostPort(s.tlsMQTTURL)
	c, ack := rawConnect(t, addr, conf, 4, "deny-dev", true, login)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ack.ReasonCode)
	}
	wait := base
	for round := range 3 {
		c.publish(5, "$aws/things/someone-else/shadow/update", 1, `{"state":{}}`)
		if got := c.expectClosed(); len(got) != 0 {
			t.Fatalf("round %d: denied publish answered with %s to an MQTT 3.1.1 client", round, packets.PacketNames[got[0].FixedHeader.Type])
		}
		start := time.Now()
		c, ack = rawConnect(t, addr, conf, 4, "deny-dev", true, login)
		if ack.ReasonCode != 0 {
			t.Fatalf("round %d: reconnect CONNACK %#x", round, ack.ReasonCode)
		}
		if waited := time.Since(start); waited < wait {
			t.Fatalf("round %d: offender reconnected in %v, want a back-off of at least %v", round, waited, wait)
		}
		wait *= 2
	}
	// The connection works normally once admitted.
	c.publish(6, "$aws/things/deny-dev/shadow/get", 1, "{}")
	if pk := c.next(); pk.FixedHeader.Type != packets.Puback {
		t.Fatalf("allowed publish: %s", packets.PacketNames[pk.FixedHeader.Type])
	}

	// MQTT 5 keeps its PUBACK with reason 0x87 and the connection.
	c5, _ := rawConnect(t, addr, conf, 5, "deny-dev", true, login)
	c5.publish(7, "$aws/things/someone-else/shadow/update", 1, `{"state":{}}`)
	if pk := c5.next(); pk.FixedHeader.Type != packets.Puback || pk.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Fatalf("MQTT 5 denied publish: %s %#x", packets.PacketNames[pk.FixedHeader.Type], pk.ReasonCode)
	}
	expectNothingPending(t, c5)
}
