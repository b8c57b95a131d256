package broker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/natstest"
)

// startClusterNodes starts one Umbra node per NATS server of nc, node i
// connected to server i only (so a test can take its server away).
func startClusterNodes(t testing.TB, nc *natstest.Cluster, n int, modify ...func(i int, o *broker.Options)) []*brokertest.Server {
	t.Helper()
	nodes := make([]*brokertest.Server, n)
	for i := range n {
		nodes[i] = brokertest.Start(t, func(o *broker.Options) {
			o.Cluster = broker.ClusterOptions{URLs: []string{nc.URL(i)}, Name: fmt.Sprintf("node-%d", i)}
			for _, m := range modify {
				m(i, o)
			}
		})
	}
	return nodes
}

// Shadows are one set across the nodes: an update through node B's HTTP
// API is what node C's MQTT get returns, and a versioned update on node A
// naming the old version gets a 409.
func TestClusterNodesShareShadows(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)

	body := httpDo(t, "POST", nodes[1].HTTPURL()+"/things/lamp/shadow", `{"state":{"desired":{"on":true}}}`, 200)
	if gjson.Get(body, "version").Int() != 1 {
		t.Fatalf("update on node B: %s", body)
	}
	dev := mt.Connect(t, nodes[2].MQTTURL(), "lamp")
	got := dev.Subscribe("$aws/things/lamp/shadow/get/accepted", 1)
	dev.Publish("$aws/things/lamp/shadow/get", 1, false, "")
	doc := mt.Next(t, got).Payload
	if gjson.GetBytes(doc, "version").Int() != 1 || !gjson.GetBytes(doc, "state.delta.on").Bool() {
		t.Fatalf("get on node C after update on node B: %s", doc)
	}
	conflict := httpDo(t, "POST", nodes[0].HTTPURL()+"/things/lamp/shadow", `{"state":{"desired":{"on":false}},"version":0}`, 409)
	if gjson.Get(conflict, "message").String() != "Version conflict" {
		t.Fatalf("stale update on node A: %s", conflict)
	}
	body = httpDo(t, "POST", nodes[0].HTTPURL()+"/things/lamp/shadow", `{"state":{"desired":{"on":false}},"version":1}`, 200)
	if gjson.Get(body, "version").Int() != 2 {
		t.Fatalf("update on node A: %s", body)
	}
}

// /readyz is 503 while a node cannot reach JetStream (two of the three
// servers gone: no quorum), and 200 again once it can. A server that led
// the JetStream meta group keeps answering for its raft's lost-quorum
// interval (about 10 s) after the others went, hence the longer bound.
func TestClusterNodeNotReadyWithoutJetStream(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 1)
	waitStatus(t, nodes[0].HTTPURL()+"/readyz", 200)
	nc.Stop(1)
	nc.Stop(2)
	// When server 0 is the JetStream meta leader, it answers until it
	// notices the lost quorum: nats-server checks every 10 s for 10 s
	// without heartbeats, so this can take up to about 20 s.
	body := waitStatusFor(t, nodes[0].HTTPURL()+"/readyz", 503, 30*time.Second)
	if !strings.Contains(body, "cluster: JetStream unreachable") {
		t.Fatalf("/readyz without JetStream: %s", body)
	}
	nc.Restart(1)
	nc.Restart(2)
	waitStatusFor(t, nodes[0].HTTPURL()+"/readyz", 200, 30*time.Second)
}

// A wrong cluster URL fails Start with an error naming the problem.
func TestClusterBadURL(t *testing.T) {
	_, err := broker.New(broker.Options{Cluster: broker.ClusterOptions{URLs: []string{"localhost:4222"}}})
	if err == nil || !strings.Contains(err.Error(), "nats://host:port") {
		t.Fatalf("New with a URL without scheme: %v", err)
	}
}

// Three nodes started at the same moment on a fresh JetStream cluster (a
// compose file, a systemd boot) all start: each creates the same buckets
// and streams while JetStream elects their leaders, which leaves some of
// its requests unanswered; the node repeats them instead of failing.
func TestClusterNodesStartTogether(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() {
			o := brokertest.LoopbackOptions(t.TempDir())
			o.Cluster = broker.ClusterOptions{URLs: []string{nc.URL(i)}, Name: fmt.Sprintf("node-%d", i)}
			b, err := broker.New(o)
			if err != nil {
				errs[i] = err
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if errs[i] = b.Start(ctx); errs[i] == nil {
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_ = b.Shutdown(ctx)
				})
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d did not start: %v", i, err)
		}
	}
}

// The "one accept per version": writers on all three nodes send
// the same versioned update to one shadow at once; in every round exactly
// one is accepted and the others get 409 Version conflict, and every node
// then reads the final version.
func TestClusterVersionedUpdatesOneAcceptPerVersion(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3, func(_ int, o *broker.Options) { noRateLimit(o) })
	const writers, rounds = 6, 8
	topic := "$aws/things/contended/shadow"
	seed := mt.Connect(t, nodes[0].MQTTURL(), "seed")
	acc := seed.Subscribe(topic+"/update/accepted", 1)
	seed.Publish(topic+"/update", 1, false, `{"state":{"reported":{"n":0}}}`)
	mt.Next(t, acc)

	clients := make([]*mt.Client, writers)
	replies := make([]<-chan mt.Message, writers)
	for i := range clients {
		clients[i] = mt.Connect(t, nodes[i%3].MQTTURL(), fmt.Sprintf("w%d", i))
		replies[i] = clients[i].Subscribe(topic+"/update/+", 1)
	}
	for round := range rounds {
		version := int64(round + 1)
		var wg sync.WaitGroup
		accepted, conflicts := make([]int, writers), make([]int, writers)
		for i := range clients {
			wg.Go(func() {
				token := fmt.Sprintf("w%d-r%d", i, round)
				clients[i].Publish(topic+"/update", 1, false,
					fmt.Sprintf(`{"state":{"desired":{"owner":"w%d"}},"version":%d,"clientToken":"%s"}`, i, version, token))
				for {
					m := mt.Next(t, replies[i])
					if gjson.GetBytes(m.Payload, "clientToken").String() != token {
						continue // another writer's reply, from any node
					}
					switch {
					case strings.HasSuffix(m.Topic, "/accepted"):
						accepted[i]++
					case strings.HasSuffix(m.Topic, "/rejected") && gjson.GetBytes(m.Payload, "code").Int() == 409:
						conflicts[i]++
					default:
						continue
					}
					return
				}
			})
		}
		wg.Wait()
		won, lost := 0, 0
		for i := range writers {
			won += accepted[i]
			lost += conflicts[i]
		}
		if won != 1 || lost != writers-1 {
			t.Fatalf("round %d (version %d): %d accepted, %d conflicts across the nodes; want 1 and %d", round, version, won, lost, writers-1)
		}
	}
	for i, n := range nodes {
		doc := httpGet(t, n.HTTPURL()+"/things/contended/shadow", 200)
		if v := gjson.Get(doc, "version").Int(); v != rounds+1 {
			t.Fatalf("node %d reads version %d, want %d: %s", i, v, rounds+1, doc)
		}
	}
}
