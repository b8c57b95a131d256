package browsertest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/umbra-iot/umbra/brokertest"
)

// TestForeignPageCannotDriveTheBroker is issue 13 item 5 in a real browser:
// a page served from another local port tries what needs no CORS preflight
// (a no-cors text/plain POST to the API) and MQTT over WebSocket against a
// zero-config broker. Both are refused and the shadow is untouched; the
// dashboard, same origin, works (the other tests here).
func TestForeignPageCannotDriveTheBroker(t *testing.T) {
	b := newBrowser(t)
	srv := brokertest.Start(t)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><title>another page</title><p>hello</p>`)
	}))
	defer evil.Close()

	b.do("open a page of another origin", chromedp.Navigate(evil.URL+"/"))
	attack := fmt.Sprintf(`(() => {
		window.__result = null;
		const r = {};
		fetch(%s, {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'},
			body: JSON.stringify({state: {desired: {door: 'open'}}})})
			.then(() => { r.post = 'sent'; }, (e) => { r.post = 'error ' + e; })
			.then(() => new Promise((resolve) => {
				const ws = new WebSocket(%s, 'mqtt');
				ws.onopen = () => { ws.close(); resolve('open'); };
				ws.onerror = () => resolve('refused');
			}))
			.then((ws) => { r.ws = ws; window.__result = JSON.stringify(r); });
		return true;
	})()`, jsString(srv.HTTPURL()+"/things/victim/shadow"), jsString(srv.WSURL()))
	if !eval[bool](b, attack) {
		t.Fatal("attack script did not start")
	}
	b.waitJS("the attack to finish", `window.__result`)
	res := eval[string](b, `window.__result`)
	t.Logf("foreign page: %s", res)
	if !strings.Contains(res, `"ws":"refused"`) {
		t.Errorf("a foreign page opened MQTT over WebSocket: %s", res)
	}
	call(t, srv.HTTPURL(), "", "GET", "/things/victim/shadow", "", http.StatusNotFound)
	metrics := string(call(t, srv.HTTPURL(), "", "GET", "/metrics", "", http.StatusOK))
	for _, want := range []string{`umbra_http_refused_total{reason="cross_origin"} 1`, `umbra_http_refused_total{reason="ws_origin"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
