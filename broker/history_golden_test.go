package broker_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// historySummary fetches a shadow's history over HTTP and renders each entry
// as version+op[:count] (op u = update, x = delete; count is the reported
// count the request carried), newest first.
func historySummary(t *testing.T, srv *brokertest.Server, path, query string) string {
	t.Helper()
	name := ""
	if p, n, ok := strings.Cut(path, "|"); ok {
		path, name = p, n
	}
	path += "/history"
	if name != "" {
		if query == "" {
			query = "?"
		} else {
			query += "&"
		}
		query += "name=" + name
	}
	body := httpGet(t, srv.HTTPURL()+path+query, 200)
	var parts []string
	for _, e := range gjson.Get(body, "entries").Array() {
		op := map[string]string{"update": "u", "delete": "x"}[e.Get("op").String()]
		s := fmt.Sprintf("%d%s", e.Get("version").Int(), op)
		if c := e.Get("request.state.reported.count"); c.Exists() {
			s += ":" + c.String()
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// Golden: which history entries a user sees, in which order, under the
// retention limit, across a delete, a neighbouring thing, a named shadow,
// paging (limit, before) and a restart.
func TestHistoryGolden(t *testing.T) {
	srv := brokertest.Start(t, noRateLimit, func(o *broker.Options) { o.HistoryVersions = 8 })
	c := mt.Connect(t, srv.MQTTURL(), "golden")
	acc := c.Subscribe("$aws/things/+/shadow/#", 1)
	update := func(topic string, count int) {
		t.Helper()
		c.Publish(topic+"/update", 1, false, fmt.Sprintf(`{"state":{"reported":{"count":%d}}}`, count))
		mt.NextOn(t, acc, topic+"/update/accepted")
	}
	g, h, cfg := "$aws/things/g/shadow", "$aws/things/h/shadow", "$aws/things/g/shadow/name/cfg"
	for i := 1; i <= 20; i++ {
		update(g, i)
		if i%7 == 0 {
			update(h, 100+i)
		}
		if i == 10 || i == 11 {
			update(cfg, 200+i)
		}
	}
	c.Publish(g+"/delete", 1, false, `{}`)
	mt.NextOn(t, acc, g+"/delete/accepted")
	update(g, 21)

	want := []struct{ path, query, golden string }{
		{"/things/g/shadow", "", "21u:21 20x 20u:20 19u:19 18u:18 17u:17 16u:16 15u:15 14u:14"},
		{"/things/g/shadow", "?limit=2", "21u:21 20x"},
		{"/things/g/shadow", "?before=20&limit=3", "19u:19 18u:18 17u:17"},
		{"/things/g/shadow", "?before=15&limit=10", "14u:14"},
		{"/things/g/shadow", "?before=14", ""},
		{"/things/h/shadow", "", "2u:114 1u:107"},
		{"/things/g/shadow|cfg", "", "2u:211 1u:210"},
		{"/things/nobody/shadow", "", ""},
	}
	check := func(when string) {
		t.Helper()
		for _, w := range want {
			if got := historySummary(t, srv, w.path, w.query); got != w.golden {
				t.Errorf("%s: %s/history%s = %q, want %q", when, w.path, w.query, got, w.golden)
			}
		}
	}
	check("before restart")
	c.Disconnect(50)
	srv = srv.Restart(t)
	check("after restart")

	// Many more versions: still exactly the newest 8, newest first.
	c = mt.Connect(t, srv.MQTTURL(), "golden2")
	acc = c.Subscribe("$aws/things/+/shadow/#", 1)
	for i := 22; i <= 150; i++ {
		update(g, i)
	}
	if got, want := historySummary(t, srv, "/things/g/shadow", ""), "150u:150 149u:149 148u:148 147u:147 146u:146 145u:145 144u:144 143u:143"; got != want {
		t.Errorf("after 150 versions: %q, want %q", got, want)
	}
	if got := historySummary(t, srv, "/things/g/shadow", "?before="+url.QueryEscape("144")); got != "143u:143" {
		t.Errorf("after 150 versions, before 144: %q", got)
	}
}

// /update/documents is built only for subscribers: a wildcard or a shared
// subscription still receives it, including one made after earlier updates
// went unobserved.
func TestDocumentsReachWildcardAndSharedSubscribers(t *testing.T) {
	srv := brokertest.Start(t, noRateLimit)
	dev := mt.Connect(t, srv.MQTTURL(), "docdev")
	acc := dev.Subscribe("$aws/things/docdev/shadow/update/accepted", 1)
	dev.Publish("$aws/things/docdev/shadow/update", 1, false, `{"state":{"reported":{"n":1}}}`)
	mt.Next(t, acc)

	wild := mt.Connect(t, srv.MQTTURL(), "watch-wild").Subscribe("$aws/things/+/shadow/update/documents", 1)
	shared := mt.Connect(t, srv.MQTTURL(), "watch-shared").Subscribe("$share/g/$aws/things/docdev/shadow/#", 1)
	dev.Publish("$aws/things/docdev/shadow/update", 1, false, `{"state":{"reported":{"n":2}}}`)
	mt.Next(t, acc)
	for name, ch := range map[string]<-chan mt.Message{"wildcard": wild, "shared": shared} {
		m := mt.NextOn(t, ch, "$aws/things/docdev/shadow/update/documents")
		if gjson.GetBytes(m.Payload, "previous.state.reported.n").Int() != 1 || gjson.GetBytes(m.Payload, "current.state.reported.n").Int() != 2 {
			t.Errorf("%s subscriber: documents %s", name, m.Payload)
		}
	}
}
