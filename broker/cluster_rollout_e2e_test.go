package broker_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/natstest"
)

// otaDevices are devices with the seed's OTA firmware, as real MQTT
// clients: on boot they ask for their shadow (/get) and act on a pending
// target_version in it, and they act on every delta that carries one; to
// act is to install (report the new firmware_version) unless that version
// is already installed. installs counts installations per device.
type otaDevices struct {
	mu       sync.Mutex
	firmware map[string]string
	installs map[string]int
}

func (d *otaDevices) boot(t *testing.T, srv *brokertest.Server, id string) {
	t.Helper()
	var c paho.Client = mt.Connect(t, srv.MQTTURL(), id).Client
	prefix := "$aws/things/" + id + "/shadow"
	act := func(tv gjson.Result) {
		if !tv.Exists() {
			return
		}
		d.mu.Lock()
		if d.firmware[id] == tv.String() {
			d.mu.Unlock()
			return
		}
		d.firmware[id] = tv.String()
		d.installs[id]++
		d.mu.Unlock()
		c.Publish(prefix+"/update", 1, false, fmt.Sprintf(`{"state":{"reported":{"firmware_version":%q,"target_version":%q,"ota_status":"succeeded"}}}`, tv.String(), tv.String()))
	}
	c.Subscribe(prefix+"/update/delta", 1, func(_ paho.Client, m paho.Message) {
		act(gjson.GetBytes(m.Payload(), "state.target_version"))
	}).Wait()
	c.Subscribe(prefix+"/get/accepted", 1, func(_ paho.Client, m paho.Message) {
		act(gjson.GetBytes(m.Payload(), "state.delta.target_version"))
	}).Wait()
	c.Publish(prefix+"/get", 1, false, "").Wait()
}

// Issue 19's done-when: killing the node that runs the rollout engine
// moves the engine to another node and the rollout completes. Three Umbra
// nodes on a 3-node JetStream cluster; a two-wave rollout (3 canaries,
// baking 3 s, then 9 devices) is created through a node that does not run
// the engine; while the canary wave bakes, the engine's node is cut off
// from NATS (as a crash looks to the cluster) and shut down. Another node
// takes the lease, resumes the bake timer from the shared store and runs
// the second wave: every device ends on the new version, each wave started
// once, each device notified and installed once.
//
// The devices are spread over the three nodes; deltas written by the
// engine's node reach devices on the other nodes through the cluster
// bridge (cross-node delivery). The devices of the killed node boot again
// on another node, as real devices with several broker addresses do, and
// ask for their shadow.
func TestClusterRolloutSurvivesEngineNodeKill(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startEngineNodes(t, nc)
	alive := []bool{true, true, true}
	first, _ := engineLeader(t, nodes, alive, -1, 15*time.Second)
	other := (first + 1) % 3

	devs := &otaDevices{firmware: map[string]string{}, installs: map[string]int{}}
	var canaries, rest []string
	for i := range 12 {
		id := fmt.Sprintf("lamp-%02d", i)
		ring := "general"
		if i < 3 {
			ring = "canary"
			canaries = append(canaries, id)
		} else {
			rest = append(rest, id)
		}
		httpDo(t, "POST", nodes[i%3].HTTPURL()+"/api/things", fmt.Sprintf(`{"thingName":%q,"attributes":{"ring":%q}}`, id, ring), 201)
		httpDo(t, "POST", nodes[i%3].HTTPURL()+"/things/"+id+"/shadow", `{"state":{"reported":{"firmware_version":"1.0","target_version":"1.0"}}}`, 200)
		devs.firmware[id] = "1.0"
	}
	on := map[string]int{} // device → node it is connected to
	for i, id := range append(append([]string{}, canaries...), rest...) {
		on[id] = i % 3
		devs.boot(t, nodes[i%3], id)
	}

	spec := `{"name":"fw 1.1","target":"thingName:lamp-*","start":true,
	  "patch":{"ota_url":"https://fw.example/1.1.bin","target_version":"1.1"},
	  "failureCondition":"shadow.reported.ota_status:failed",
	  "waves":[{"name":"canary","query":"attributes.ring:canary","bakeTime":"3s"},{"name":"all","percent":100}]}`
	created := httpDo(t, "POST", nodes[other].HTTPURL()+"/api/rollouts", spec, 201)
	id := gjson.Get(created, "id").String()

	// Mid-way: the canaries installed, the wave bakes.
	view := waitClusterRollout(t, nodes[other], id, "baking", 20*time.Second)
	if w := gjson.Get(view, "waves.0"); w.Get("succeeded").Int() != 3 || gjson.Get(view, "waves.1.notified").Int() != 0 {
		t.Fatalf("at the kill: %s", view)
	}
	broker.CutCluster(nodes[first].Broker)
	if err := nodes[first].Close(); err != nil {
		t.Fatal(err)
	}
	alive[first] = false
	second, took := engineLeader(t, nodes, alive, first, 4*clusterLeaseTTL)
	t.Logf("engine moved from node-%d to node-%d in %s", first, second, took)
	// They boot on the node that does not run the engine: its deltas
	// reach them across nodes.
	survivor := 3 - first - second
	rebooted := 0
	for id, n := range on {
		if n == first {
			devs.boot(t, nodes[survivor], id)
			rebooted++
		}
	}
	t.Logf("%d devices of the killed node booted again on node-%d", rebooted, survivor)
	view = waitClusterRollout(t, nodes[survivor], id, "completed", 30*time.Second)

	started := map[int64]int{}
	succeeded := map[string]int{}
	for _, ev := range gjson.Get(view, "events").Array() {
		switch ev.Get("type").String() {
		case "wave_started":
			started[ev.Get("wave").Int()]++
		case "device_succeeded":
			succeeded[ev.Get("thing").String()]++
		}
	}
	if started[0] != 1 || started[1] != 1 || len(started) != 2 {
		t.Fatalf("wave_started per wave: %v\n%s", started, view)
	}
	for _, w := range gjson.Get(view, "waves").Array() {
		if w.Get("succeeded").Int() != w.Get("size").Int() {
			t.Fatalf("wave not all succeeded: %s", w.Raw)
		}
	}
	devs.mu.Lock()
	defer devs.mu.Unlock()
	for _, th := range append(canaries, rest...) {
		doc := httpGet(t, nodes[survivor].HTTPURL()+"/things/"+th+"/shadow", 200)
		if v := gjson.Get(doc, "state.reported.firmware_version").String(); v != "1.1" {
			t.Fatalf("%s reports firmware %q: %s", th, v, doc)
		}
		if succeeded[th] != 1 || devs.installs[th] != 1 {
			t.Fatalf("%s: %d device_succeeded events, %d installs", th, succeeded[th], devs.installs[th])
		}
	}
	if !strings.Contains(httpGet(t, nodes[survivor].HTTPURL()+"/api/cluster", 200), fmt.Sprintf(`"leader":"node-%d"`, second)) {
		t.Fatalf("/api/cluster does not name node-%d", second)
	}
}

// waitClusterRollout polls a rollout (through srv) until it is in state.
func waitClusterRollout(t *testing.T, srv *brokertest.Server, id, state string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var v string
	for time.Now().Before(deadline) {
		v = httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200)
		switch s := gjson.Get(v, "state").String(); {
		case s == state:
			return v
		case s == "halted" || s == "cancelled" || s == "rolled_back" || s == "completed":
			t.Fatalf("rollout ended %s while waiting for %s: %s", s, state, v)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Fatalf("rollout not %s within %s: %s", state, within, v)
	return ""
}
