package reliability

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/clusterstore"
	"github.com/umbra-iot/umbra/internal/natstest"
)

var linClusterDuration = flag.Duration("lin.cluster.duration", 8*time.Second, "length of the history in TestClusterNodesLinearizable")

// TestClusterNodesLinearizable checks with porcupine, against shadowModel,
// the history of concurrent get/update/delete requests that real MQTT
// clients send through the AWS shadow topics to three in-process Umbra
// nodes in cluster mode on a 3-node NATS JetStream cluster (node i talks
// to NATS server i only). Each client is connected to one node and gets
// its replies from that node. During the run:
//
//   - Umbra node 2 is shut down: its clients' requests in flight have an
//     unknown outcome (open-ended in the history), and the clients
//     reconnect to node 0 and carry on;
//   - the NATS server that leads the shadow bucket's stream is stopped and
//     started again on its store (-lin.restarts times, the leader of the
//     moment each time): the bucket elects another leader, and the node
//     connected to that server cannot reach JetStream meanwhile; requests
//     answered 500 may or may not have taken effect (open-ended).
//
// The default run lasts -lin.cluster.duration (8s); make it longer with
// -lin.cluster.duration 60s -lin.restarts 5.
func TestClusterNodesLinearizable(t *testing.T) {
	seed := *linSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("lin seed %d", seed)
	nc := natstest.StartCluster(t, 3)
	var nodes []*brokertest.Server
	for i := range nc.N() {
		nodes = append(nodes, brokertest.Start(t, noShadowLimits, func(o *broker.Options) {
			o.WSAddr = broker.Off
			o.Cluster = broker.ClusterOptions{URLs: []string{nc.URL(i)}, Name: fmt.Sprintf("node-%d", i), Timeout: 2 * time.Second}
		}))
	}
	targets := make([]*linTarget, len(nodes))
	for i, srv := range nodes {
		targets[i] = &linTarget{srv: srv, ready: make(chan struct{})}
		close(targets[i].ready)
	}
	rec := &linRecorder{t0: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const clientsPerNode = 3
	var (
		wg    sync.WaitGroup
		fails atomic.Int64
	)
	for id := range len(nodes) * clientsPerNode {
		w := &linWorker{t: t, id: id, lt: targets[id%len(nodes)], rec: rec, rng: rand.New(rand.NewPCG(seed, uint64(id))),
			prefix: fmt.Sprintf("N-%d-", id), open500: true, fails: &fails}
		wg.Go(func() { w.runMQTT(ctx) })
	}

	restarts := max(*linRestarts, 1)
	step := *linClusterDuration / time.Duration(restarts+2)
	<-time.After(step)
	// Kill node 2; its clients go to node 0.
	lt := targets[2]
	lt.mu.Lock()
	lt.ready = make(chan struct{})
	lt.mu.Unlock()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := nodes[2].Shutdown(sctx); err != nil {
		t.Errorf("shutdown of node 2: %v", err)
	}
	scancel()
	lt.mu.Lock()
	lt.srv = nodes[0]
	close(lt.ready)
	lt.mu.Unlock()
	killed := rec.now()
	t.Logf("node 2 shut down at %v", time.Duration(killed).Round(time.Millisecond))
	var restarted int64
	restartedServer := -1
	for range restarts {
		<-time.After(step)
		restartedServer = bucketLeader(nc)
		nc.Stop(restartedServer)
		nc.Restart(restartedServer)
		restarted = rec.now()
		t.Logf("NATS server %d (the bucket's stream leader) restarted at %v", restartedServer, time.Duration(restarted).Round(time.Millisecond))
	}
	<-time.After(step)
	cancel()
	wg.Wait()

	// The run must have gone through both failures with traffic on every
	// node: answers to node 2's clients before its shutdown and (from node
	// 0) after it, answers after the last NATS restart on every node still
	// up.
	answered := map[string]int{}
	for _, op := range rec.ops {
		if op.Output.(linOutput).code == 0 {
			continue
		}
		switch node := op.ClientId % len(nodes); {
		case node == 2 && op.Return < killed:
			answered["node 2 before its shutdown"]++
		case node == 2 && op.Call > killed && op.Call < restarted:
			answered["node 2's clients on node 0"]++
		case node != 2 && op.Call > restarted:
			answered[fmt.Sprintf("node %d after the NATS restart", node)]++
		}
	}
	t.Logf("%d requests answered 500; answered: %v", fails.Load(), answered)
	for _, phase := range []string{"node 2 before its shutdown", "node 2's clients on node 0", "node 0 after the NATS restart", "node 1 after the NATS restart"} {
		if answered[phase] == 0 {
			t.Errorf("no request answered for %s", phase)
		}
	}
	checkLinearizable(t, rec.ops)
}

// bucketLeader is the NATS server that leads the shadow bucket's stream
// (server 1 when none does at the moment).
func bucketLeader(nc *natstest.Cluster) int {
	for i := range nc.N() {
		if srv := nc.Server(i); srv != nil && srv.JetStreamIsStreamLeader("$G", "KV_"+clusterstore.DefaultBucket) {
			return i
		}
	}
	return 1
}
