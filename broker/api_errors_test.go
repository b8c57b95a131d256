package broker_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
)

// apiErrorDoc is the one error document every API error is written as.
type apiErrorDoc struct {
	Code      int    `json:"code"`
	Message   string `json:"message"`
	Field     string `json:"field"`
	Timestamp int64  `json:"timestamp"`
}

// checkJSONError sends the request and checks that the answer is status
// with the JSON error document: code = status, a message, a timestamp,
// Content-Type application/json and the AWS error type header.
func checkJSONError(t *testing.T, client *http.Client, req *http.Request, status int, message, field string) *http.Response {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", req.Method, req.URL.Path, resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json; body %q", req.Method, req.URL.Path, ct, body)
	}
	if resp.Header.Get("X-Amzn-ErrorType") == "" {
		t.Errorf("%s %s: no X-Amzn-ErrorType header", req.Method, req.URL.Path)
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	var doc apiErrorDoc
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("%s %s: body is not the error document (%v): %s", req.Method, req.URL.Path, err, body)
	}
	if doc.Code != status || doc.Timestamp == 0 || !strings.Contains(doc.Message, message) || doc.Field != field {
		t.Fatalf("%s %s: error document %+v, want code %d, message containing %q, field %q, a timestamp", req.Method, req.URL.Path, doc, status, message, field)
	}
	return resp
}

func newReq(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// Every error the HTTP listener answers, from the API handlers, the browser
// protection, the router itself (unknown route, wrong method) and the
// dashboard's file server, is one JSON document of one shape.
func TestEveryAPIErrorIsJSON(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	httpDo(t, "POST", base+"/api/things", `{"thingName":"t1"}`, 201)

	cases := []struct {
		name, method, path, body string
		status                   int
		message, field           string
		allow                    string // the Allow header a 405 must keep
	}{
		{name: "unknown API route", method: "GET", path: "/api/nothing-here", status: 404, message: "no route"},
		{name: "unknown top-level route", method: "GET", path: "/nothing-here", status: 404, message: "no route"},
		{name: "wrong method on a collection", method: "PUT", path: "/api/things", status: 405, message: "PUT", allow: "GET"},
		{name: "wrong method on openapi", method: "DELETE", path: "/openapi.json", status: 405, message: "DELETE", allow: "GET"},
		{name: "wrong method on health", method: "POST", path: "/healthz", status: 405, message: "POST", allow: "GET"},
		{name: "registry not found", method: "GET", path: "/api/things/absent", status: 404, message: `thing "absent"`},
		{name: "registry field error", method: "POST", path: "/api/things", body: `{"thingName":"bad name"}`, status: 400, field: "thingName"},
		{name: "registry conflict", method: "POST", path: "/api/things", body: `{"thingName":"t1"}`, status: 409},
		{name: "unknown JSON field", method: "POST", path: "/api/things", body: `{"thingName":"t2","colour":1}`, status: 400, message: "unknown field", field: "colour"},
		{name: "bad page size", method: "GET", path: "/api/things?pageSize=0", status: 400, message: "pageSize", field: "pageSize"},
		{name: "bad query", method: "GET", path: "/api/search?query=a%3A", status: 400, field: "query"},
		{name: "bad expand", method: "GET", path: "/api/search?expand=nope", status: 400, field: "expand"},
		{name: "rollout not found", method: "GET", path: "/api/rollouts/r-none", status: 404, message: "r-none"},
		{name: "job not found", method: "GET", path: "/api/jobs/j-none", status: 404, message: "j-none"},
		{name: "event stream bad type", method: "GET", path: "/api/events?types=weather", status: 400, field: "types"},
		{name: "shadow bad thing", method: "GET", path: "/things/bad%20name/shadow", status: 400, message: "Invalid thing name"},
		{name: "shadow absent", method: "GET", path: "/things/nobody/shadow", status: 404, message: "No shadow exists"},
		{name: "shadow bad JSON", method: "POST", path: "/things/t1/shadow", body: `{"state":`, status: 400, message: "Invalid JSON"},
		{name: "credentials of a bad thing", method: "DELETE", path: "/api/things/bad%20name/credentials", status: 400, message: "Invalid thing name"},
		{name: "dashboard wrong method", method: "POST", path: "/ui/", body: `{}`, status: 405, message: "POST", allow: "GET, HEAD"},
		{name: "dashboard missing file", method: "GET", path: "/ui/no-such-file.js", status: 404, message: "/ui/no-such-file.js"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := checkJSONError(t, nil, newReq(t, c.method, base+c.path, c.body), c.status, c.message, c.field)
			if c.allow != "" && !strings.Contains(resp.Header.Get("Allow"), c.allow) {
				t.Fatalf("Allow %q, want it to contain %q", resp.Header.Get("Allow"), c.allow)
			}
		})
	}

	t.Run("wrong content type", func(t *testing.T) {
		req := newReq(t, "POST", base+"/api/things", `{"thingName":"t3"}`)
		req.Header.Set("Content-Type", "text/plain")
		checkJSONError(t, nil, req, 415, "Unsupported Media Type", "")
	})
	t.Run("cross-origin write", func(t *testing.T) {
		req := newReq(t, "POST", base+"/api/things", `{"thingName":"t3"}`)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		checkJSONError(t, nil, req, 403, "cross-origin", "")
	})
}

// With authentication on, refusals are the same document; a WebSocket
// client over its per-address cap is refused with it too.
func TestAuthAndEdgeErrorsAreJSON(t *testing.T) {
	s := startSecured(t, func(o *broker.Options) { o.Limits.MaxConnsPerIP = 1 })
	req := newReq(t, "GET", s.HTTPURL()+"/api/things", "")
	checkJSONError(t, s.http, req, 401, "Unauthorized", "")
	req = newReq(t, "POST", s.HTTPURL()+"/api/things", `{"thingName":"x"}`)
	req.Header.Set("Authorization", "Bearer "+s.viewer)
	checkJSONError(t, s.http, req, 403, "Forbidden", "")
	req = newReq(t, "GET", s.HTTPURL()+"/api/nothing-here", "")
	checkJSONError(t, s.http, req, 404, "no route", "")
}

// A WebSocket client over the per-address connection cap is refused with
// the same JSON error document, as is a request that is no upgrade at all.
func TestWebSocketRefusalsAreJSON(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Limits.MaxConnsPerIP = 1 })
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 10 * time.Second}
	first, _, err := d.Dial("ws://"+srv.WSAddr()+"/mqtt", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, resp, err := d.Dial("ws://"+srv.WSAddr()+"/mqtt", nil)
	if err == nil || resp == nil {
		t.Fatalf("second WebSocket from one address: err %v, want a refusal", err)
	}
	checkJSONError(t, nil, newReq(t, "GET", "http://"+srv.WSAddr()+"/mqtt", ""), 429, "too many connections", "")

	plain := brokertest.Start(t)
	checkJSONError(t, nil, newReq(t, "GET", "http://"+plain.WSAddr()+"/mqtt", ""), 400, "websocket", "")
}
