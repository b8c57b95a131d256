package broker_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/clustersession"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// connectedOn reports on which nodes a connection with client id is open.
func connectedOn(nodes []*brokertest.Server, id string) []int {
	var on []int
	for i, n := range nodes {
		if cl, ok := n.MQTT().Clients.Get(id); ok && !cl.Closed() {
			on = append(on, i)
		}
	}
	return on
}

// Issue 19: an offline persistent device whose session is on node A
// reconnects to node C and finds its session there: session present, the
// deltas queued while it was away (in order), and its subscription, which
// now delivers what happens on node C. Node A no longer holds the session.
// Both protocol versions: MQTT 5 (clean start 0, session expiry) and
// MQTT 3.1.1 (clean session 0).
func TestClusterPersistentSessionMovesToAnotherNode(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	for _, v := range []byte{5, 4} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			testSessionMoves(t, nodes, v, fmt.Sprintf("lamp-v%d", v), 0)
		})
	}
}

// The wording: the updates are made on node B while the device's
// session is on node A, so each delta crosses the bridge into A's offline
// session, and the device reconnects to node C right after the updates
// were answered.
func TestClusterQueuedDeltaFromNodeBReachesDeviceOnNodeC(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	for _, v := range []byte{5, 4} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			testSessionMoves(t, nodes, v, fmt.Sprintf("lamp-b-v%d", v), 1)
		})
	}
}

func testSessionMoves(t *testing.T, nodes []*brokertest.Server, v byte, thing string, updateOn int) {
	delta := "$aws/things/" + thing + "/shadow/update/delta"

	dev, ack := rawConnect(t, hostPort(nodes[0].MQTTURL()), nil, v, thing, false)
	if ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("first CONNACK on node A: code %#x present %v", ack.ReasonCode, ack.SessionPresent)
	}
	if sa := dev.subscribe(1, delta, 1); sa.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	dev.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	dev.expectClosed()
	waitFor(t, "node A to see the device gone", func() bool { return len(connectedOn(nodes, thing)) == 0 })

	// Two changes while the device is away, made on node updateOn (A, where
	// its session is, or B).
	httpDo(t, "POST", nodes[updateOn].HTTPURL()+"/things/"+thing+"/shadow", `{"state":{"desired":{"on":true}}}`, 200)
	httpDo(t, "POST", nodes[updateOn].HTTPURL()+"/things/"+thing+"/shadow", `{"state":{"desired":{"color":"red"}}}`, 200)

	start := time.Now()
	dev, ack = rawConnect(t, hostPort(nodes[2].MQTTURL()), nil, v, thing, false)
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("CONNACK on node C: code %#x present %v, want the session from node A", ack.ReasonCode, ack.SessionPresent)
	}
	t.Logf("CONNACK with the session handed over from node A after %v", time.Since(start))
	for want := int64(1); want <= 2; want++ {
		pk := dev.nextPublish()
		if pk.TopicName != delta || gjson.GetBytes(pk.Payload, "version").Int() != want {
			t.Fatalf("queued message %d: %s %s", want, pk.TopicName, pk.Payload)
		}
	}
	// The subscription moved: a change made on node C reaches the device.
	httpDo(t, "POST", nodes[2].HTTPURL()+"/things/"+thing+"/shadow", `{"state":{"desired":{"level":3}}}`, 200)
	pk := dev.nextPublish()
	if pk.TopicName != delta || gjson.GetBytes(pk.Payload, "version").Int() != 3 {
		t.Fatalf("delta after the move: %s %s", pk.TopicName, pk.Payload)
	}
	waitFor(t, "node A to drop the session it handed over", func() bool {
		_, ok := nodes[0].MQTT().Clients.Get(thing)
		return !ok
	})
}

// Issue 19: a client id connected on node A that connects on node C takes
// the session over across the cluster: node A closes its connection with
// DISCONNECT 0x8E (Session taken over), the connection on node C works, and
// the registry shows the client connected.
func TestClusterClientIDTakenOverAcrossNodes(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)

	old, _ := rawConnect(t, hostPort(nodes[0].MQTTURL()), nil, 5, "lamp", true)
	old.subscribe(1, "$aws/things/lamp/shadow/update/delta", 1)
	waitFor(t, "node A to show the device connected", func() bool {
		return gjson.Get(httpGet(t, nodes[0].HTTPURL()+"/api/things/lamp/connectivity", 200), "connectivity.connected").Bool()
	})

	cur, ack := rawConnect(t, hostPort(nodes[2].MQTTURL()), nil, 5, "lamp", true)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK on node C: %#x", ack.ReasonCode)
	}
	got := old.expectClosed()
	if len(got) == 0 || got[len(got)-1].FixedHeader.Type != packets.Disconnect || got[len(got)-1].ReasonCode != packets.ErrSessionTakenOver.Code {
		t.Fatalf("node A's connection ended with %v, want DISCONNECT 0x8E", got)
	}
	if on := connectedOn(nodes, "lamp"); len(on) != 1 || on[0] != 2 {
		t.Fatalf("connections of lamp on nodes %v, want [2]", on)
	}
	cur.subscribe(1, "$aws/things/lamp/shadow/update/delta", 1)
	httpDo(t, "POST", nodes[2].HTTPURL()+"/things/lamp/shadow", `{"state":{"desired":{"on":true}}}`, 200)
	if pk := cur.nextPublish(); gjson.GetBytes(pk.Payload, "state.on").Bool() != true {
		t.Fatalf("delta on node C: %s", pk.Payload)
	}
	waitFor(t, "node C to show the device connected", func() bool {
		return gjson.Get(httpGet(t, nodes[2].HTTPURL()+"/api/things/lamp/connectivity", 200), "connectivity.connected").Bool()
	})
}

// Issue 19: connects of one client id racing on two nodes end with one
// connection across the cluster, and that one works.
func TestClusterRacingConnectsLeaveOneConnection(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	for round := range 5 {
		id := fmt.Sprintf("racer-%d", round)
		clients := make([]*rawClient, 2)
		var wg sync.WaitGroup
		for k, node := range []int{0, 2} {
			clients[k] = rawDial(t, hostPort(nodes[node].MQTTURL()), nil, 5)
			wg.Add(1)
			go func(c *rawClient) {
				defer wg.Done()
				c.conn.Write(connectBytes(id)) //nolint:errcheck // a failed write shows as a closed connection below
			}(clients[k])
		}
		wg.Wait()
		// Each connection is read until it closes; one must close (the
		// loser may get its CONNACK and a DISCONNECT 0x8E first).
		pkts := []chan packets.Packet{make(chan packets.Packet, 8), make(chan packets.Packet, 8)}
		done := []chan struct{}{make(chan struct{}), make(chan struct{})}
		for k, c := range clients {
			go func() {
				defer close(done[k])
				for {
					pk, err := c.read(3 * mt.Wait)
					if err != nil {
						return
					}
					pkts[k] <- pk
				}
			}()
		}
		var loser int
		select {
		case <-done[0]:
			loser = 0
		case <-done[1]:
			loser = 1
		case <-time.After(mt.Wait):
			t.Fatalf("%s: both connections still open on nodes %v", id, connectedOn(nodes, id))
		}
		k := 1 - loser
		winner := []int{0, 2}[k]
		select {
		case pk := <-pkts[k]:
			if pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
				t.Fatalf("%s: winner on node %d got %v", id, winner, pk)
			}
		case <-time.After(mt.Wait):
			t.Fatalf("%s: no CONNACK for the winner on node %d", id, winner)
		}
		clients[k].send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "racers/" + id, Qos: 1}}})
		select {
		case pk := <-pkts[k]:
			if pk.FixedHeader.Type != packets.Suback || pk.ReasonCodes[0] != 1 {
				t.Fatalf("%s: winner on node %d got %v, want SUBACK", id, winner, pk)
			}
		case <-done[k]:
			t.Fatalf("%s: the winner's connection on node %d closed too", id, winner)
		case <-time.After(mt.Wait):
			t.Fatalf("%s: no SUBACK for the winner on node %d", id, winner)
		}
		if on := connectedOn(nodes, id); len(on) != 1 || on[0] != winner {
			t.Fatalf("%s: connections on nodes %v after the race, winner was %d", id, on, winner)
		}
		clients[k].close()
	}
}

// connectBytes is a clean-start MQTT 5 CONNECT for id.
func connectBytes(id string) []byte {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Clean: true, Keepalive: 60},
	}
	var buf bytes.Buffer
	_ = pk.ConnectEncode(&buf)
	return buf.Bytes()
}

// waitFor polls cond until it holds or mt.Wait passes.
func waitFor(t *testing.T, what string, cond func() bool, state ...func() string) {
	t.Helper()
	deadline := time.Now().Add(mt.Wait)
	for !cond() {
		if time.Now().After(deadline) {
			for _, s := range state {
				what += ": " + s()
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Issue 19: when the node that held a persistent session is gone, the
// device is still accepted on another node at once, with the session's
// subscriptions from the copy in JetStream (session present): a change
// made there reaches it without a new SUBSCRIBE. What was queued on the
// dead node is not moved (docs/cluster.md).
func TestClusterSessionOfADeadNode(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	const delta = "$aws/things/lamp/shadow/update/delta"

	dev, _ := rawConnect(t, hostPort(nodes[0].MQTTURL()), nil, 5, "lamp", false)
	dev.subscribe(1, delta, 1)
	dev.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	dev.expectClosed()
	if err := nodes[0].Close(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	dev, ack := rawConnect(t, hostPort(nodes[2].MQTTURL()), nil, 5, "lamp", false)
	took := time.Since(start)
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("CONNACK on node C with node A gone: code %#x present %v", ack.ReasonCode, ack.SessionPresent)
	}
	t.Logf("CONNACK on node C %v after node A went away", took)
	httpDo(t, "POST", nodes[2].HTTPURL()+"/things/lamp/shadow", `{"state":{"desired":{"on":true}}}`, 200)
	if pk := dev.nextPublish(); pk.TopicName != delta || gjson.GetBytes(pk.Payload, "version").Int() != 1 {
		t.Fatalf("delta on node C: %s %s", pk.TopicName, pk.Payload)
	}

	// Node A comes back with its copy of the session in its store; the
	// session is node C's now, so node A drops its copy.
	a := nodes[0].Restart(t)
	waitFor(t, "the restarted node A to drop its out-of-date copy", func() bool {
		_, ok := a.MQTT().Clients.Get("lamp")
		return !ok
	})
}

// Issue 19: a node that is up but does not answer holds a connect on
// another node for the handover timeout (2 s) at most; the device is then
// accepted with its subscriptions from the bucket.
func TestClusterSessionOfAStuckNode(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	dev, _ := rawConnect(t, hostPort(nodes[0].MQTTURL()), nil, 5, "lamp", false)
	dev.subscribe(1, "$aws/things/lamp/shadow/update/delta", 1)
	dev.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	dev.expectClosed()
	if err := nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	// Something listens on node A's subject and never answers.
	stuck := nc.Connect(1)
	got := make(chan struct{}, 1)
	if _, err := stuck.Subscribe(clustersession.TakeoverSubject("node-0"), func(*nats.Msg) { got <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if err := stuck.Flush(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	dev, ack := rawConnect(t, hostPort(nodes[2].MQTTURL()), nil, 5, "lamp", false)
	took := time.Since(start)
	select {
	case <-got:
	default:
		t.Fatal("node C did not ask node A's subject")
	}
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("CONNACK on node C: code %#x present %v", ack.ReasonCode, ack.SessionPresent)
	}
	if took > mt.Wait {
		t.Fatalf("CONNACK after %v", took)
	}
	t.Logf("CONNACK on node C %v after the CONNECT, node A not answering", took)
	httpDo(t, "POST", nodes[2].HTTPURL()+"/things/lamp/shadow", `{"state":{"desired":{"on":true}}}`, 200)
	if pk := dev.nextPublish(); gjson.GetBytes(pk.Payload, "version").Int() != 1 {
		t.Fatalf("delta on node C: %s %s", pk.TopicName, pk.Payload)
	}
}

// Issue 19: a device moving back and forth between nodes ends "connected"
// in the shared registry, on every node: the old node's disconnect
// (DUPLICATE_CLIENTID) is recorded before the new node's connect, never
// after it.
func TestClusterTakeoverLeavesDeviceConnected(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	var prev *rawClient
	for round := range 6 {
		node := []int{0, 2}[round%2]
		c, ack := rawConnect(t, hostPort(nodes[node].MQTTURL()), nil, 5, "lamp", true)
		if ack.ReasonCode != 0 {
			t.Fatalf("round %d: CONNACK %#x", round, ack.ReasonCode)
		}
		if prev != nil {
			prev.expectClosed()
		}
		prev = c
	}
	for i, n := range nodes {
		var last string
		waitFor(t, fmt.Sprintf("node %d to show lamp connected", i), func() bool {
			last = httpGet(t, n.HTTPURL()+"/api/things/lamp/connectivity", 200)
			return gjson.Get(last, "connectivity.connected").Bool()
		}, func() string { return last })
	}
}

// A device whose persistent session moves to another node has the will
// its old connection left waiting for its delay cancelled, as a reconnect
// on one node does [MQTT-3.1.3-9]: whether the old connection was still
// open (taken over) or had dropped just before, the session went on
// elsewhere, so no "gone" message may follow on any node.
func TestClusterTakeoverCancelsDelayedWill(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	// Watched on the old node and on another one.
	var wills []<-chan mt.Message
	for _, n := range []int{0, 1} {
		w := mt.Connect(t, nodes[n].MQTTURL(), fmt.Sprint("wt-watcher-", n))
		wills = append(wills, w.Subscribe("wt/#", 1))
	}
	for i, dropFirst := range []bool{false, true} {
		id := fmt.Sprint("wt-lamp-", i)
		old, _ := rawConnect(t, hostPort(nodes[0].MQTTURL()), nil, 5, id, false, sessionExpiry(600), will("wt/"+id, 1))
		if dropFirst {
			old.close() // no DISCONNECT: the will waits for its delay
		}
		cur, ack := rawConnect(t, hostPort(nodes[2].MQTTURL()), nil, 5, id, false, sessionExpiry(600))
		if !ack.SessionPresent {
			t.Fatalf("%s on node C: session not present", id)
		}
		if !dropFirst {
			got := old.expectClosed()
			if len(got) == 0 || got[len(got)-1].ReasonCode != packets.ErrSessionTakenOver.Code {
				t.Fatalf("node A's connection ended with %v, want DISCONNECT 0x8E", got)
			}
		}

		// A device on node A drops after the move with a 2 s delay: had
		// the lamp's will not been cancelled it would have come a second
		// earlier, from node A.
		other := fmt.Sprint("wt-other-", i)
		b, _ := rawConnect(t, hostPort(nodes[0].MQTTURL()), nil, 5, other, false, sessionExpiry(600), will("wt/"+other, 2))
		b.close()
		for n, w := range wills {
			if m := mt.Next(t, w); m.Topic != "wt/"+other {
				t.Fatalf("watcher on node %d: first will on %s: the will of a session that moved to another node was published", n, m.Topic)
			}
		}
		cur.close()
	}
}
