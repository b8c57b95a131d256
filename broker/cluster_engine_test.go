package broker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/natstest"
)

// clusterLeaseTTL is the engine lease's TTL in these tests.
const clusterLeaseTTL = 2 * time.Second

func startEngineNodes(t *testing.T, nc *natstest.Cluster) []*brokertest.Server {
	return startClusterNodes(t, nc, 3, func(i int, o *broker.Options) {
		o.Cluster.LeaseTTL = clusterLeaseTTL
		o.RolloutInterval = 20 * time.Millisecond
	})
}

// engineLeader polls GET /api/cluster on the running nodes (alive[i]) until
// exactly one says it runs the engine, every running node names that one
// as the leader, and it is not the node not. It returns its index and how
// long it took.
func engineLeader(t *testing.T, nodes []*brokertest.Server, alive []bool, not int, within time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	last := ""
	for time.Since(start) < within {
		leader, names, ok := -1, map[string]bool{}, true
		var seen []string
		for i, n := range nodes {
			if !alive[i] {
				continue
			}
			body := httpGet(t, n.HTTPURL()+"/api/cluster", 200)
			seen = append(seen, body)
			if gjson.Get(body, "engine.thisNode").Bool() {
				if leader >= 0 {
					t.Fatalf("two nodes run the engine: %d and %d: %v", leader, i, seen)
				}
				leader = i
			}
			names[gjson.Get(body, "engine.leader").String()] = true
		}
		if leader >= 0 && leader != not && len(names) == 1 && names[fmt.Sprintf("node-%d", leader)] && ok {
			return leader, time.Since(start)
		}
		last = strings.Join(seen, " | ")
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Fatalf("no single engine leader other than %d within %s: %s", not, within, last)
	return -1, 0
}

func leaderGauge(t *testing.T, srv *brokertest.Server) string {
	t.Helper()
	for _, l := range strings.Split(httpGet(t, srv.HTTPURL()+"/metrics", 200), "\n") {
		if strings.HasPrefix(l, `umbra_cluster_leader{role="engine"}`) {
			return strings.TrimSpace(strings.TrimPrefix(l, `umbra_cluster_leader{role="engine"}`))
		}
	}
	t.Fatalf("no umbra_cluster_leader metric")
	return ""
}

// One node of three runs the engine; the others send rollout API requests
// to it (a rollout created through one follower is read through the other,
// and the answer names the engine's node); when the leader is cut off from
// NATS, another takes over within the lease TTL plus a poll, and when that
// one shuts down, the last takes over at once (the lease is released).
func TestClusterEngineOneLeaderAndTakeover(t *testing.T) {
	// Replies come back in 100-byte pieces: every forwarded answer below
	// is reassembled from several NATS messages.
	t.Cleanup(broker.SetForwardChunk(100))
	nc := natstest.StartCluster(t, 3)
	nodes := startEngineNodes(t, nc)
	alive := []bool{true, true, true}
	leader, took := engineLeader(t, nodes, alive, -1, 15*time.Second)
	t.Logf("engine leader node-%d after %s", leader, took)
	for i, n := range nodes {
		want := "0"
		if i == leader {
			want = "1"
		}
		if got := leaderGauge(t, n); got != want {
			t.Fatalf("node-%d umbra_cluster_leader{role=engine} = %s, want %s", i, got, want)
		}
	}
	f1, f2 := (leader+1)%3, (leader+2)%3

	spec := `{"name":"nothing yet","target":"thingName:none-*","patch":{"target_version":"2"},"allowEmpty":true,"waves":[{"name":"all","percent":100}]}`
	req, _ := http.NewRequest("POST", nodes[f1].HTTPURL()+"/api/rollouts", strings.NewReader(spec))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("X-Umbra-Engine-Node") != fmt.Sprintf("node-%d", leader) {
		t.Fatalf("create through follower node-%d: %d %q %s", f1, resp.StatusCode, resp.Header.Get("X-Umbra-Engine-Node"), body)
	}
	id := gjson.GetBytes(body, "id").String()
	if got := httpGet(t, nodes[f2].HTTPURL()+"/api/rollouts/"+id, 200); gjson.Get(got, "state").String() != "created" {
		t.Fatalf("read through follower node-%d: %s", f2, got)
	}
	if got := httpGet(t, nodes[f2].HTTPURL()+"/api/rollouts", 200); !strings.Contains(got, id) {
		t.Fatalf("list through follower node-%d: %s", f2, got)
	}
	// Errors come back as they are: an unknown rollout is a 404 with its
	// message, a bad spec a 400 naming the field.
	if got := httpDo(t, "POST", nodes[f2].HTTPURL()+"/api/rollouts/ro-nope/pause", "", 404); !strings.Contains(got, "not found") {
		t.Fatalf("pause of an unknown rollout through a follower: %s", got)
	}
	httpDo(t, "POST", nodes[f1].HTTPURL()+"/api/rollouts", `{"name":"x"}`, 400)

	// The leader is cut off: another node takes over once the lease
	// expires; the cut-off node has stopped (its own view says so).
	broker.CutCluster(nodes[leader].Broker)
	alive[leader] = false
	// A request through a follower during the takeover waits for the new
	// engine node (no node answers for about a TTL) and finds the rollout
	// in the shared store.
	cut := time.Now()
	if got := httpGet(t, nodes[f2].HTTPURL()+"/api/rollouts/"+id, 200); gjson.Get(got, "state").String() != "created" {
		t.Fatalf("read through follower node-%d during the takeover: %s", f2, got)
	}
	t.Logf("a read during the takeover was answered after %s", time.Since(cut))
	second, _ := engineLeader(t, nodes, alive, leader, 4*clusterLeaseTTL)
	t.Logf("takeover after node-%d was cut off: node-%d runs the engine %s after the cut", leader, second, time.Since(cut))
	if got := httpGet(t, nodes[leader].HTTPURL()+"/api/cluster", 200); gjson.Get(got, "engine.thisNode").Bool() {
		t.Fatalf("cut-off node still runs the engine: %s", got)
	}
	// Fencing: the cut-off node's engine refuses to record a change.
	if _, err := nodes[leader].Rollouts().Cancel(context.Background(), id); err == nil || !strings.Contains(err.Error(), "no longer runs the rollout engine") {
		t.Fatalf("cancel on the cut-off node's engine: %v", err)
	}

	// A graceful shutdown releases the lease.
	if err := nodes[second].Close(); err != nil {
		t.Fatal(err)
	}
	alive[second] = false
	third, took := engineLeader(t, nodes, alive, second, 4*clusterLeaseTTL)
	t.Logf("takeover after node-%d shut down: node-%d after %s", second, third, took)
}
