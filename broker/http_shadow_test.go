package broker_test

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
)

// Bad input on the HTTP data plane gets a 4xx with a message that names the
// problem, and never touches stored shadows.
func TestHTTPShadowBadInput(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	httpDo(t, "POST", base+"/things/keep/shadow", `{"state":{"reported":{"v":1}}}`, 200)

	cases := []struct {
		name, method, path, body string
		status                   int
		message                  string
	}{
		{"invalid thing name", "GET", "/things/bad%20name/shadow", "", 400, "Invalid thing name"},
		{"invalid shadow name", "GET", "/things/keep/shadow?name=a/b", "", 400, "Invalid shadow name"},
		{"empty shadow name", "POST", "/things/keep/shadow?name=", `{"state":{}}`, 400, "Invalid shadow name"},
		{"invalid JSON", "POST", "/things/keep/shadow", `{"state":`, 400, "Invalid JSON"},
		{"missing state", "POST", "/things/keep/shadow", `{"version":1}`, 400, "Missing required node: state"},
		{"delta in state", "POST", "/things/keep/shadow", `{"state":{"delta":{}}}`, 400, "State contains an invalid node: 'delta'"},
		{"version conflict", "POST", "/things/keep/shadow", `{"state":{"reported":{"v":2}},"version":7}`, 409, "Version conflict"},
		{"not UTF-8", "POST", "/things/keep/shadow", "{\"state\":{\"reported\":{\"v\":\"\xff\"}}}", 415, "Unsupported documented encoding"},
		{"payload too large", "POST", "/things/keep/shadow", `{"state":{"reported":{"v":"` + strings.Repeat("x", 200*1024) + `"}}}`, 413, "The payload exceeds the maximum size allowed"},
		{"absent shadow", "GET", "/things/nobody/shadow", "", 404, "No shadow exists with name: 'nobody'"},
		{"absent named shadow", "DELETE", "/things/keep/shadow?name=cfg", "", 404, "No shadow exists with name: 'cfg'"},
		{"bad page size", "GET", "/api/things/shadow/ListNamedShadowsForThing/keep?pageSize=0", "", 400, "Invalid pageSize"},
		{"bad history cursor", "GET", "/things/keep/shadow/history?before=soon", "", 400, "Invalid before"},
		{"bad history limit", "GET", "/things/keep/shadow/history?limit=-3", "", 400, "Invalid limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := httpDo(t, c.method, base+c.path, c.body, c.status)
			if msg := gjson.Get(body, "message").String(); !strings.Contains(msg, c.message) {
				t.Fatalf("message %q, want it to contain %q (body %s)", msg, c.message, body)
			}
		})
	}
	doc := httpGet(t, base+"/things/keep/shadow", 200)
	if gjson.Get(doc, "version").Int() != 1 || gjson.Get(doc, "state.reported.v").Int() != 1 {
		t.Fatalf("stored shadow changed by bad requests: %s", doc)
	}
	if body := httpGet(t, base+"/api/things/shadow/ListNamedShadowsForThing/nobody", 200); gjson.Get(body, "results").Raw != "[]" {
		t.Fatalf("unknown thing lists %s", body)
	}
}
