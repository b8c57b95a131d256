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

// post sends a request with the given headers to the real server and
// returns its status and body.
func post(t *testing.T, method, url, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// wsConnect opens MQTT over WebSocket with origin ("" sends none) and
// completes CONNECT; it returns the handshake's HTTP status on refusal.
func wsConnect(t *testing.T, srv *brokertest.Server, origin, id string) (int, error) {
	t.Helper()
	return wsConnectAddr(t, srv.WSAddr(), origin, id)
}

func wsConnectAddr(t *testing.T, addr, origin, id string) (int, error) {
	t.Helper()
	hdr := http.Header{}
	if origin != "" {
		hdr.Set("Origin", origin)
	}
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial("ws://"+addr+"/mqtt", hdr)
	if err != nil {
		if resp != nil {
			return resp.StatusCode, err
		}
		return 0, err
	}
	defer c.Close()
	if err := c.WriteMessage(websocket.BinaryMessage, connectPacket(id)); err != nil {
		return 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, ack, err := c.ReadMessage()
	if err != nil {
		return 0, err
	}
	if len(ack) != 4 || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x", ack)
	}
	return http.StatusSwitchingProtocols, nil
}

// TestBrowserCannotDriveZeroConfigBroker is the attack of issue 13 item 5:
// a page served from another local port POSTs text/plain (no CORS
// preflight) to the API and opens MQTT over WebSocket. Both are refused;
// the dashboard's own (same-origin, JSON) requests and non-browser clients
// (no Origin) still work.
func TestBrowserCannotDriveZeroConfigBroker(t *testing.T) {
	srv := brokertest.Start(t)
	shadowURL := srv.HTTPURL() + "/things/dev-a/shadow"
	const doc = `{"state":{"desired":{"door":"open"}}}`
	evil := "http://127.0.0.1:9" // another local port

	// The cross-site simple request a page can send without a preflight.
	code, body := post(t, "POST", shadowURL, doc, map[string]string{"Content-Type": "text/plain;charset=UTF-8", "Origin": evil, "Sec-Fetch-Site": "same-site"})
	if code != http.StatusForbidden || !strings.Contains(body, "cross-origin") {
		t.Errorf("cross-site text/plain POST: %d %s, want 403 naming the cross-origin request", code, body)
	}
	// Older browsers send Origin without Sec-Fetch-Site.
	code, body = post(t, "POST", shadowURL, doc, map[string]string{"Content-Type": "text/plain", "Origin": evil})
	if code != http.StatusForbidden {
		t.Errorf("cross-origin POST (Origin only): %d %s, want 403", code, body)
	}
	// Sec-Fetch-Site alone (a request whose Origin the browser hid).
	code, body = post(t, "DELETE", shadowURL, "", map[string]string{"Sec-Fetch-Site": "cross-site"})
	if code != http.StatusForbidden {
		t.Errorf("cross-site DELETE: %d %s, want 403", code, body)
	}
	var e struct {
		Code    int
		Message string
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != 403 {
		t.Errorf("refusal is not a JSON error document: %s", body)
	}
	// A form post from the same origin still needs a JSON body.
	code, body = post(t, "POST", shadowURL, doc, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": srv.HTTPURL(), "Sec-Fetch-Site": "same-origin"})
	if code != http.StatusUnsupportedMediaType || !strings.Contains(body, "Content-Type") {
		t.Errorf("same-origin form POST: %d %s, want 415 naming Content-Type", code, body)
	}
	code, body = post(t, "POST", srv.HTTPURL()+"/api/things", `{"thingName":"x"}`, nil)
	if code != http.StatusUnsupportedMediaType {
		t.Errorf("POST without Content-Type: %d %s, want 415", code, body)
	}
	if code, body = post(t, "GET", shadowURL, "", nil); code != http.StatusNotFound {
		t.Fatalf("a refused write changed the shadow: GET %d %s", code, body)
	}

	// The dashboard: same origin, JSON.
	code, body = post(t, "POST", shadowURL, doc, map[string]string{"Content-Type": "application/json", "Origin": srv.HTTPURL(), "Sec-Fetch-Site": "same-origin"})
	if code != http.StatusOK {
		t.Errorf("same-origin JSON POST: %d %s", code, body)
	}
	// The CLI and scripts: no Origin, JSON.
	code, body = post(t, "POST", shadowURL, `{"state":{"desired":{"door":"shut"}}}`, map[string]string{"Content-Type": "application/json"})
	if code != http.StatusOK {
		t.Errorf("non-browser JSON POST: %d %s", code, body)
	}
	// Bodiless writes need no Content-Type.
	if code, body = post(t, "DELETE", shadowURL, "", nil); code != http.StatusOK {
		t.Errorf("DELETE without body: %d %s", code, body)
	}

	// MQTT over WebSocket.
	if code, err := wsConnect(t, srv, evil, "ws-evil"); err == nil || code != http.StatusForbidden {
		t.Errorf("WebSocket with a foreign Origin: status %d err %v, want a refused handshake (403)", code, err)
	}
	if code, err := wsConnect(t, srv, "null", "ws-null"); err == nil || code != http.StatusForbidden {
		t.Errorf("WebSocket with Origin null: status %d err %v, want 403", code, err)
	}
	if _, err := wsConnect(t, srv, "http://"+srv.WSAddr(), "ws-same"); err != nil {
		t.Errorf("same-origin WebSocket: %v", err)
	}
	if _, err := wsConnect(t, srv, srv.HTTPURL(), "ws-dashboard"); err != nil {
		t.Errorf("WebSocket from Umbra's own HTTP origin (the dashboard): %v", err)
	}
	if _, err := wsConnect(t, srv, "", "ws-tool"); err != nil {
		t.Errorf("WebSocket without Origin (a device, a tool): %v", err)
	}
}

// TestAllowedOriginsOpenTheBrokerToNamedPages: an origin on the allow-list
// may use the WebSocket listener and write through the API; others still
// may not.
func TestAllowedOriginsOpenTheBrokerToNamedPages(t *testing.T) {
	const app = "http://dash.example.test:3000"
	srv := brokertest.Start(t, func(o *broker.Options) { o.AllowedOrigins = []string{app} })
	if _, err := wsConnect(t, srv, app, "ws-app"); err != nil {
		t.Errorf("WebSocket from an allowed origin: %v", err)
	}
	if code, err := wsConnect(t, srv, "http://other.example.test:3000", "ws-other"); err == nil || code != http.StatusForbidden {
		t.Errorf("WebSocket from another origin: %d %v, want 403", code, err)
	}
	code, body := post(t, "POST", srv.HTTPURL()+"/things/dev-b/shadow", `{"state":{"desired":{"a":1}}}`,
		map[string]string{"Content-Type": "application/json", "Origin": app, "Sec-Fetch-Site": "cross-site"})
	if code != http.StatusOK {
		t.Errorf("JSON POST from an allowed origin: %d %s", code, body)
	}
	code, body = post(t, "POST", srv.HTTPURL()+"/things/dev-b/shadow", `{"state":{"desired":{"a":2}}}`,
		map[string]string{"Content-Type": "application/json", "Origin": "http://other.example.test:3000", "Sec-Fetch-Site": "cross-site"})
	if code != http.StatusForbidden {
		t.Errorf("JSON POST from another origin: %d %s, want 403", code, body)
	}
}

// TestAllowedOriginsAreValidated: a malformed origin is a start-up error
// naming it, not a silently useless entry.
func TestAllowedOriginsAreValidated(t *testing.T) {
	for _, bad := range []string{"app.example.com", "https://app.example.com/path", "http://"} {
		_, err := broker.New(broker.Options{DataDir: t.TempDir(), AllowedOrigins: []string{bad}})
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("AllowedOrigins %q: err %v, want one naming it", bad, err)
		}
	}
	if _, err := broker.New(broker.Options{DataDir: t.TempDir(), AllowedOrigins: []string{"*", "https://a.example:8443"}}); err != nil {
		t.Errorf("valid origins refused: %v", err)
	}
}

// TestExtraWebSocketListenerChecksOrigin: a WebSocket listener added with
// Options.Listeners refuses foreign pages like the main one does.
func TestExtraWebSocketListenerChecksOrigin(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Listeners = []broker.ListenerOptions{{Name: "ws-extra", Addr: "127.0.0.1:0", WebSocket: true}}
	})
	addr := srv.Broker.ListenerAddr("ws-extra")
	if addr == "" {
		t.Fatal("the extra listener has no address")
	}
	if code, err := wsConnectAddr(t, addr, "http://evil.example.test:9999", "page-1"); code != http.StatusForbidden {
		t.Errorf("extra WebSocket listener, foreign Origin: status %d err %v, want 403", code, err)
	}
	if code, err := wsConnectAddr(t, addr, "", "tool-1"); code != http.StatusSwitchingProtocols {
		t.Errorf("extra WebSocket listener without Origin: status %d err %v", code, err)
	}
}
