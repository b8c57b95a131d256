package broker_test

import (
	"fmt"
	"strings"
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
