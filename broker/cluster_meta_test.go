package broker_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
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

// eventually polls fn until it returns "" or the deadline passes (the
// index of another node follows within milliseconds; the deadline is
// generous for a loaded machine).
func eventually(t *testing.T, what string, fn func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg := fn()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func httpGetStatus(t *testing.T, url string) (string, int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func search(t *testing.T, node *brokertest.Server, q string) string {
	t.Helper()
	return gjson.Get(httpGet(t, node.HTTPURL()+"/api/search?query="+url.QueryEscape(q), 200), "things").Raw
}

// The registry is one across the nodes: a thing created on node A is read
// and found by a fleet query on node C; a group created and joined on node
// B shows on node A; a shadow reported by a device connected to node A is
// matched by a fleet query on node C; a thing deleted on C is gone on A.
func TestClusterRegistrySharedAndIndexed(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]

	httpDo(t, "POST", a.HTTPURL()+"/api/things", `{"thingName":"pump-1","attributes":{"site":"north","ring":"canary"}}`, 201)
	// a read on another node sees the write at once (the shared store)
	if got := gjson.Get(httpGet(t, c.HTTPURL()+"/api/things/pump-1", 200), "attributes.site").String(); got != "north" {
		t.Fatalf("thing read on node C: site %q", got)
	}
	// the fleet index on node C follows (eventually)
	eventually(t, "node C's index finds the thing created on A", func() string {
		if got := search(t, c, "attributes.site:north"); got != `["pump-1"]` {
			return "search: " + got
		}
		return ""
	})

	httpDo(t, "POST", b.HTTPURL()+"/api/groups", `{"groupName":"plant"}`, 201)
	httpDo(t, "POST", a.HTTPURL()+"/api/groups", `{"groupName":"plant"}`, 409) // one registry
	httpDo(t, "PUT", b.HTTPURL()+"/api/groups/plant/things/pump-1", "", 204)
	if got := gjson.Get(httpGet(t, a.HTTPURL()+"/api/groups/plant/things", 200), "things").Raw; got != `["pump-1"]` {
		t.Fatalf("members of the group on node A: %s", got)
	}
	eventually(t, "node A's index has the membership added on B", func() string {
		if got := search(t, a, "thingGroupNames:plant"); got != `["pump-1"]` {
			return "search: " + got
		}
		return ""
	})
	// a dynamic group created on C answers on A
	httpDo(t, "POST", c.HTTPURL()+"/api/groups", `{"groupName":"canaries","queryString":"attributes.ring:canary"}`, 201)
	eventually(t, "dynamic group from node C on node A", func() string {
		body, code := httpGetStatus(t, a.HTTPURL()+"/api/groups/canaries/things")
		if code != 200 || gjson.Get(body, "things").Raw != `["pump-1"]` {
			return fmt.Sprintf("%d %s", code, body)
		}
		return ""
	})

	// a device on node A reports; a fleet query on node C matches it
	dev := mt.Connect(t, a.MQTTURL(), "pump-1")
	acc := dev.Subscribe("$aws/things/pump-1/shadow/update/accepted", 1)
	dev.Publish("$aws/things/pump-1/shadow/update", 1, false, `{"state":{"reported":{"firmware":"2.1.3","temp":71}}}`)
	mt.Next(t, acc)
	eventually(t, "node C's index has the shadow reported on node A", func() string {
		if got := search(t, c, "shadow.reported.firmware:2.1.3 AND shadow.reported.temp>70 AND thingGroupNames:plant"); got != `["pump-1"]` {
			return "search: " + got
		}
		return ""
	})
	// connectivity recorded by node A shows on node B's index
	eventually(t, "node B sees pump-1 connected", func() string {
		if got := search(t, b, "connectivity.connected:true"); got != `["pump-1"]` {
			return "search: " + got
		}
		return ""
	})

	// an attribute change on B, then a delete on C
	httpDo(t, "PATCH", b.HTTPURL()+"/api/things/pump-1", `{"attributes":{"site":"south"}}`, 200)
	eventually(t, "attribute change on B seen by A's index", func() string {
		if got := search(t, a, "attributes.site:south"); got != `["pump-1"]` {
			return "search south: " + got
		}
		if got := search(t, a, "attributes.site:north"); got != `[]` {
			return "search north: " + got
		}
		return ""
	})
	dev.Disconnect(50)
	httpDo(t, "DELETE", c.HTTPURL()+"/api/things/pump-1", "", 204)
	httpGet(t, a.HTTPURL()+"/api/things/pump-1", 404)
	eventually(t, "thing deleted on C gone from A's index", func() string {
		if got := search(t, a, "thingGroupNames:plant OR attributes.site:*"); got != `[]` {
			return "search: " + got
		}
		return ""
	})
}

// Concurrent registry transactions on three nodes lose no update: every
// node adds things to one group and patches one shared thing's attributes
// at the same time; every membership and every attribute is there.
func TestClusterConcurrentRegistryWrites(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	httpDo(t, "POST", nodes[0].HTTPURL()+"/api/groups", `{"groupName":"all"}`, 201)
	httpDo(t, "POST", nodes[0].HTTPURL()+"/api/things", `{"thingName":"shared"}`, 201)
	const perNode = 6
	var wg sync.WaitGroup
	for n, node := range nodes {
		wg.Go(func() {
			for i := range perNode {
				name := fmt.Sprintf("dev-%d-%d", n, i)
				httpDo(t, "POST", node.HTTPURL()+"/api/things", `{"thingName":"`+name+`"}`, 201)
				httpDo(t, "PUT", node.HTTPURL()+"/api/groups/all/things/"+name, "", 204)
				httpDo(t, "PATCH", node.HTTPURL()+"/api/things/shared", fmt.Sprintf(`{"attributes":{"k%d_%d":"v"}}`, n, i), 200)
			}
		})
	}
	wg.Wait()
	for i, node := range nodes {
		members := gjson.Get(httpGet(t, node.HTTPURL()+"/api/groups/all/things?pageSize=100", 200), "things").Array()
		if len(members) != 3*perNode {
			t.Errorf("node %d: %d members, want %d", i, len(members), 3*perNode)
		}
		th := httpGet(t, node.HTTPURL()+"/api/things/shared", 200)
		if n := len(gjson.Get(th, "attributes").Map()); n != 3*perNode {
			t.Errorf("node %d: shared thing has %d attributes, want %d: %s", i, n, 3*perNode, th)
		}
		if v := gjson.Get(th, "version").Int(); v != 1+3*perNode {
			t.Errorf("node %d: shared thing version %d, want %d", i, v, 1+3*perNode)
		}
	}
	for i, node := range nodes {
		eventually(t, fmt.Sprintf("node %d's index", i), func() string {
			got := gjson.Get(httpGet(t, node.HTTPURL()+"/api/search?pageSize=100&query="+url.QueryEscape("thingGroupNames:all"), 200), "things").Array()
			if len(got) != 3*perNode {
				return fmt.Sprintf("%d things in group all", len(got))
			}
			return ""
		})
	}
}

// A node started later builds its index from the shared stores: things,
// groups and shadows written through the other nodes.
func TestClusterLateNodeBuildsIndex(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 1)
	httpDo(t, "POST", nodes[0].HTTPURL()+"/api/things", `{"thingName":"valve-7","attributes":{"site":"east"}}`, 201)
	httpDo(t, "POST", nodes[0].HTTPURL()+"/api/groups", `{"groupName":"east"}`, 201)
	httpDo(t, "PUT", nodes[0].HTTPURL()+"/api/groups/east/things/valve-7", "", 204)
	httpDo(t, "POST", nodes[0].HTTPURL()+"/things/valve-7/shadow", `{"state":{"reported":{"open":true}}}`, 200)
	mt.Connect(t, nodes[0].MQTTURL(), "valve-7") // stays connected to node 0
	eventually(t, "connectivity stored", func() string {
		if !gjson.Get(httpGet(t, nodes[0].HTTPURL()+"/api/things/valve-7/connectivity", 200), "connectivity.connected").Bool() {
			return "not connected"
		}
		return ""
	})
	late := brokertest.Start(t, func(o *broker.Options) {
		o.Cluster = broker.ClusterOptions{URLs: []string{nc.URL(2)}, Name: "late"}
	})
	if got := search(t, late, "attributes.site:east AND thingGroupNames:east AND shadow.reported.open:true"); got != `["valve-7"]` {
		t.Fatalf("late node's index right after start: %s", got)
	}
	// the device is connected to node 0, not ended by the late node's start
	if got := search(t, late, "connectivity.connected:true"); got != `["valve-7"]` {
		t.Fatalf("late node's index: connected things %s", got)
	}
	if c := httpGet(t, late.HTTPURL()+"/api/things/valve-7/connectivity", 200); !gjson.Get(c, "connectivity.connected").Bool() {
		t.Fatalf("late node: connectivity %s", c)
	}
	if !strings.Contains(late.Registry().IndexSource(), "rebuilt") {
		t.Fatalf("index source %q", late.Registry().IndexSource())
	}
}

// Artifacts are one set across the nodes: an image uploaded through node
// A is listed by node C, and node C serves its content (operator and
// device downloads, with a URL minted on node B), fetched from the
// cluster's object store; the same type@version with another image is
// refused on any node; deleting on B removes it everywhere.
func TestClusterArtifactsShared(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	img := randomImage(t, 300_000)
	up := push(t, a, img, "3.0.0", nil)
	want(t, up, 201, "upload on A")
	id := up.json("id").String()
	if l := artifactReq(t, "GET", c.HTTPURL()+"/api/artifacts", nil, nil); l.json("artifacts.0.id").String() != id {
		t.Fatalf("list on C: %s", l.body)
	}
	got := artifactReq(t, "GET", c.HTTPURL()+"/api/artifacts/"+id+"/content", nil, nil)
	want(t, got, 200, "content on C")
	if string(got.body) != string(img) {
		t.Fatalf("content on C: %d bytes, not the image", len(got.body))
	}
	u := artifactReq(t, "POST", b.HTTPURL()+"/api/artifacts/"+id+"/url?thing=dev-1", nil, nil)
	want(t, u, 200, "device url on B")
	devURL := strings.Replace(u.json("url").String(), b.HTTPURL(), c.HTTPURL(), 1)
	r := artifactReq(t, "GET", devURL, nil, map[string]string{"Range": "bytes=100-199"})
	want(t, r, 206, "device range on C with B's token")
	if string(r.body) != string(img[100:200]) {
		t.Fatal("device range on C: wrong bytes")
	}
	want(t, push(t, c, randomImage(t, 1000), "3.0.0", nil), 409, "other image, same version, on C")
	want(t, artifactReq(t, "DELETE", b.HTTPURL()+"/api/artifacts/"+id, nil, nil), 204, "delete on B")
	want(t, artifactReq(t, "GET", a.HTTPURL()+"/api/artifacts/"+id, nil, nil), 404, "deleted, on A")
}

// Job executions are shared: a job document queued through node A is
// started by a device connected to node C, which receives the document,
// and node A (whose engine runs the job) reports the device's progress.
func TestClusterJobExecutionsShared(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	a, c := nodes[0], nodes[2]
	registerThings(t, a, "meter-1")
	doc := `{"operation":"reboot","delay":5}`
	job := createDocJob(t, a, "reboot-1", "thingName:meter-1", doc)

	dev := mt.Connect(t, c.MQTTURL(), "meter-1")
	p := "$aws/things/meter-1/jobs"
	acc := dev.Subscribe(p+"/start-next/accepted", 1)
	dev.Publish(p+"/start-next", 1, false, `{"clientToken":"t1"}`)
	m := mt.Next(t, acc)
	if gjson.GetBytes(m.Payload, "execution.jobId").String() != job || gjson.GetBytes(m.Payload, "execution.jobDocument").Raw != doc ||
		gjson.GetBytes(m.Payload, "execution.status").String() != "IN_PROGRESS" {
		t.Fatalf("start-next on node C: %s", m.Payload)
	}
	ex := httpGet(t, a.HTTPURL()+"/api/jobs/"+job+"/executions", 200)
	if !strings.Contains(ex, `"IN_PROGRESS"`) {
		t.Fatalf("executions on node A: %s", ex)
	}
}

// A node whose NATS server restarts catches up: what other nodes wrote
// meanwhile reaches its index after the restart, and it writes again.
func TestClusterRegistryAcrossNATSRestart(t *testing.T) {
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3)
	a, b := nodes[0], nodes[1]
	httpDo(t, "POST", a.HTTPURL()+"/api/things", `{"thingName":"before","attributes":{"phase":"one"}}`, 201)
	nc.Stop(0) // node A's only server
	// while the stream elects a new leader (if it was on the stopped
	// server) writes may fail; then they succeed
	eventually(t, "a write on node B while A's server is down", func() string {
		code, body := post(t, "POST", b.HTTPURL()+"/api/things", `{"thingName":"during","attributes":{"phase":"two"}}`, map[string]string{"Content-Type": "application/json"})
		if code != 201 && code != 409 {
			return fmt.Sprintf("%d %s", code, body)
		}
		return ""
	})
	nc.Restart(0)
	eventually(t, "node A's index after its server restarted", func() string {
		code, body := post(t, "GET", a.HTTPURL()+"/api/search?query="+url.QueryEscape("attributes.phase:*"), "", nil)
		if code != 200 || gjson.Get(body, "things").Raw != `["before","during"]` {
			return fmt.Sprintf("%d %s", code, body)
		}
		return ""
	})
	eventually(t, "a write on node A after the restart", func() string {
		code, body := post(t, "POST", a.HTTPURL()+"/api/things", `{"thingName":"after","attributes":{"phase":"three"}}`, map[string]string{"Content-Type": "application/json"})
		if code != 201 && code != 409 { // 409: an earlier attempt's outcome was unknown but it was stored
			return fmt.Sprintf("%d %s", code, body)
		}
		return ""
	})
	eventually(t, "node B's index has A's write", func() string {
		if got := search(t, b, "attributes.phase:three"); got != `["after"]` {
			return "search: " + got
		}
		return ""
	})
}
