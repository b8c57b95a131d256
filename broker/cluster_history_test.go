package broker_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/natstest"
)

// listNamed pages through ListNamedShadowsForThing one name at a time and
// returns the pages, so that paging itself is compared.
func listNamed(t *testing.T, srv *brokertest.Server, thing string) string {
	t.Helper()
	var pages []string
	next := ""
	for range 20 {
		url := srv.HTTPURL() + "/api/things/shadow/ListNamedShadowsForThing/" + thing + "?pageSize=2"
		if next != "" {
			url += "&nextToken=" + next
		}
		body := httpGet(t, url, 200)
		var names []string
		for _, r := range gjson.Get(body, "results").Array() {
			names = append(names, r.String())
		}
		pages = append(pages, strings.Join(names, ","))
		if next = gjson.Get(body, "nextToken").String(); next == "" {
			break
		}
	}
	return strings.Join(pages, " | ")
}

// In cluster mode, shadow history and the named-shadow listing come from
// JetStream: node C answers for changes made on nodes A (MQTT) and B
// (HTTP), with exactly what a single node on bbolt answers for the same
// changes (the golden queries of TestHistoryGolden: retention, delete,
// paging with limit and before, named shadows; listing pages of 2 after a
// named shadow was deleted).
func TestClusterHistoryAndListing(t *testing.T) {
	keep8 := func(o *broker.Options) { o.HistoryVersions = 8 }
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3, func(_ int, o *broker.Options) { noRateLimit(o); keep8(o) })
	single := brokertest.Start(t, noRateLimit, keep8)

	a := mt.Connect(t, nodes[0].MQTTURL(), "hist-a")
	accA := a.Subscribe("$aws/things/+/shadow/#", 1)
	s := mt.Connect(t, single.MQTTURL(), "hist-single")
	accS := s.Subscribe("$aws/things/+/shadow/#", 1)
	step := 0
	// change runs one change on the single node and on the cluster,
	// alternately through node A (MQTT) and node B (HTTP).
	change := func(thing, name, op string, count int) {
		t.Helper()
		step++
		topic := "$aws/things/" + thing + "/shadow"
		path := "/things/" + thing + "/shadow"
		if name != "" {
			topic += "/name/" + name
			path += "?name=" + name
		}
		body := fmt.Sprintf(`{"state":{"reported":{"count":%d}}}`, count)
		method := "POST"
		if op == "delete" {
			body, method = `{}`, "DELETE"
		}
		s.Publish(topic+"/"+op, 1, false, body)
		mt.NextOn(t, accS, topic+"/"+op+"/accepted")
		if step%2 == 0 {
			a.Publish(topic+"/"+op, 1, false, body)
			mt.NextOn(t, accA, topic+"/"+op+"/accepted")
		} else {
			httpDo(t, method, nodes[1].HTTPURL()+path, strings.TrimPrefix(body, "{}"), 200)
		}
	}
	for i := 1; i <= 20; i++ {
		change("g", "", "update", i)
		if i%7 == 0 {
			change("h", "", "update", 100+i)
		}
		if i == 10 || i == 11 {
			change("g", "cfg", "update", 200+i)
		}
	}
	for _, n := range []string{"b", "a:1", "z", "m"} {
		change("g", n, "update", 300)
	}
	change("g", "", "delete", 0)
	change("g", "", "update", 21)
	change("g", "z", "delete", 0)

	queries := []struct{ path, query string }{
		{"/things/g/shadow", ""},
		{"/things/g/shadow", "?limit=2"},
		{"/things/g/shadow", "?before=20&limit=3"},
		{"/things/g/shadow", "?before=15&limit=10"},
		{"/things/g/shadow", "?before=14"},
		{"/things/h/shadow", ""},
		{"/things/g/shadow|cfg", ""},
		{"/things/g/shadow|z", ""},
		{"/things/nobody/shadow", ""},
	}
	for _, q := range queries {
		want := historySummary(t, single, q.path, q.query)
		if got := historySummary(t, nodes[2], q.path, q.query); got != want {
			t.Errorf("node C: %s/history%s = %q, single node on bbolt: %q", q.path, q.query, got, want)
		}
	}
	if got := historySummary(t, nodes[2], "/things/g/shadow", ""); got != "21u:21 20x 20u:20 19u:19 18u:18 17u:17 16u:16 15u:15 14u:14" {
		t.Errorf("node C: history of g = %q", got)
	}
	for _, thing := range []string{"g", "h", "nobody"} {
		want := listNamed(t, single, thing)
		if got := listNamed(t, nodes[2], thing); got != want {
			t.Errorf("node C: named shadows of %s = %q, single node on bbolt: %q", thing, got, want)
		}
	}
	if got := listNamed(t, nodes[2], "g"); got != "a:1,b | cfg,m" {
		t.Errorf("node C: named shadows of g = %q", got)
	}
}
