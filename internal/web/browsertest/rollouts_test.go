package browsertest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
)

// TestRollout plans a rollout in the form (with its preview), starts it,
// and watches the per-wave progress bars advance as simulated devices
// report the new firmware, through an approval gate, to a failing device
// that halts it (the reason shown), and a rollback.
func TestRollout(t *testing.T) {
	b := newBrowser(t)
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 100 * time.Millisecond })
	fl := seedFleet(t, srv, "")
	resp, err := http.Get(srv.HTTPURL() + "/api/rollouts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		t.Skip("this build has no rollout API")
	}

	b.do("open the form", chromedp.Navigate(srv.HTTPURL()+"/ui/#/rollouts/new"))
	b.waitJS("the form", `document.querySelectorAll('[data-testid=wave-row]').length === 4`)
	b.fill(`[data-testid=rollout-name]`, "fw-2.2.0")
	b.fill(`[data-testid=rollout-target]`, "connectivity.connected:true")
	b.fill(`.rollout-form input[name=failureCondition]`, "shadow.reported.ota_status:failed")

	// The preview shows each wave's devices: canary by query, then shares
	// of the remaining targets (rounded up).
	b.do("preview", chromedp.Click(`[data-testid=rollout-preview-btn]`))
	b.waitJS("the preview", `document.querySelectorAll('[data-testid=preview-wave]').length === 4`)
	online := len(fl.online)
	canary := 3
	early := (online - canary + 9) / 10
	broad := (online - canary - early + 1) / 2
	all := online - canary - early - broad
	got := eval[string](b, `[...document.querySelectorAll('[data-testid=preview-count]')].map(e => e.textContent).join(',')`)
	if want := fmt.Sprintf("%d devices,%d devices,%d devices,%d devices", canary, early, broad, all); got != want {
		t.Fatalf("preview counts = %s, want %s", got, want)
	}
	b.screenshot("rollout-new")
	seed := eval[string](b, `document.querySelector('[data-testid=preview-plan]')?.dataset.seed || ''`)
	if seed == "" {
		t.Fatal("the preview shows no plan token")
	}

	b.do("create", chromedp.Click(`[data-testid=rollout-create]`))
	b.waitJS("the rollout page", `document.querySelectorAll('[data-testid=wave]').length === 4`)
	// Created with the preview's plan: the same waves as previewed.
	rid := eval[string](b, `location.hash.split('/').pop()`)
	if got := string(call(t, srv.HTTPURL(), "", "GET", "/api/rollouts/"+rid, "", 200)); !strings.Contains(got, `"seed":"`+seed+`"`) {
		t.Fatalf("rollout not created with the previewed plan %s: %s", seed, got)
	}
	b.waitJS("the stream", `document.querySelector('[data-testid=stream-state]').dataset.state === 'live'`)
	seg := func(wave int, kind string) string {
		return fmt.Sprintf(`(document.querySelector('[data-testid=wave][data-wave="%d"] .seg.%s')?.dataset.count || '0')`, wave, kind)
	}
	want := func(what string, wave int, kind string, n int) {
		t.Helper()
		b.waitJS(what, fmt.Sprintf(`%s === '%d'`, seg(wave, kind), n))
	}
	state := func(s string) {
		t.Helper()
		b.waitJS("state "+s, `document.querySelector('[data-testid=rollout-state]')?.dataset.state === '`+s+`'`)
	}

	// Wave 1, the canaries: notified, then they update one by one.
	want("canaries notified", 0, "inProgress", canary)
	devs := notified(t, fl, canary)
	for i, d := range devs {
		d.update(t, "2.2.0")
		want("canary progress", 0, "succeeded", i+1)
	}
	// Wave 2 needs approval.
	state("waiting_approval")
	b.waitJS("the approval banner", `document.querySelector('[data-testid=approval-banner]')`)
	b.do("approve", chromedp.Click(`[data-testid=rollout-approve]`))
	want("early notified", 1, "inProgress", early)
	for _, d := range notified(t, fl, early) {
		d.update(t, "2.2.0")
	}
	want("early done", 1, "succeeded", early)

	// Wave 3: part of it reports; the screenshot shows a wave in flight.
	want("broad notified", 2, "inProgress", broad)
	devs = notified(t, fl, broad)
	for _, d := range devs[:broad/2+1] {
		d.update(t, "2.2.0")
	}
	want("broad progress", 2, "succeeded", broad/2+1)
	b.screenshot("rollout")
	for _, d := range devs[broad/2+1:] {
		d.update(t, "2.2.0")
	}
	want("broad done", 2, "succeeded", broad)

	// Wave 4: a device reports a failed update; the rollout halts.
	want("all notified", 3, "inProgress", all)
	devs = notified(t, fl, all)
	devs[0].report(t, map[string]any{"ota_status": "failed"})
	want("the failure", 3, "failed", 1)
	state("halted")
	b.waitJS("the halt reason", `document.querySelector('[data-testid=halt-reason]')`)
	// The device table names the failed device, the gate and its OTA state;
	// the wave's badge says it failed.
	b.waitJS("the failed device row", `[...document.querySelectorAll('[data-testid=device-row][data-state=failed]')].some(r =>
		r.querySelector('[data-testid=device-failure]').dataset.gate === 'failureCondition' && r.querySelector('[data-testid=device-ota]').dataset.ota === 'failed')`)
	b.waitJS("wave 4 badge", `document.querySelector('[data-testid=wave][data-wave="3"] [data-testid=wave-state]').dataset.state === 'failed'`)
	if got := eval[string](b, `document.querySelector('[data-testid=waves]').textContent`); !strings.Contains(got, "1 failed") && !strings.Contains(got, "failed") {
		t.Errorf("waves = %q", got)
	}
	b.screenshot("rollout-halted")

	// Roll back (asks for confirmation first).
	b.do("roll back", chromedp.Click(`[data-testid=rollout-rollback]`))
	b.waitJS("the confirmation", `document.querySelector('[data-testid=rollout-rollback]').textContent.startsWith('Confirm')`)
	b.do("confirm", chromedp.Click(`[data-testid=rollout-rollback]`))
	state("rolled_back")
	b.waitJS("the rollback notice", `/does not downgrade/.test(document.querySelector('[data-testid=rollout-notice]')?.textContent || '')`)
	b.waitJS("wave badges after rollback", `document.querySelector('[data-testid=wave][data-wave="0"] [data-testid=wave-state]').dataset.state === 'rolled_back'`)
	b.waitJS("rolled back devices", `document.querySelectorAll('[data-testid=device-row][data-state=rolled_back]').length > 0`)
	b.screenshot("rollout-rolled-back")

	// The list shows it.
	b.do("the list", chromedp.Click(`[data-testid=nav-rollouts]`))
	b.waitJS("the rollout row", `document.querySelector('[data-testid=rollout-row] [data-testid=rollout-state]')?.dataset.state === 'rolled_back'`)
}

// notified returns n devices that received the rollout's OTA delta.
func notified(t *testing.T, fl *fleet, n int) []*device {
	t.Helper()
	var out []*device
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		got := false
		for _, d := range fl.online {
			select {
			case delta := <-d.deltas:
				if _, ok := delta["target_version"]; ok {
					out = append(out, d)
				}
				got = true
			default:
			}
		}
		if !got {
			select {
			case <-deadline:
				t.Fatalf("%d of %d devices notified", len(out), n)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return out
}

// update is the device's OTA: it "downloads", reboots into the new version
// and reports it along with what it was asked for.
func (d *device) update(t *testing.T, version string) {
	t.Helper()
	d.report(t, map[string]any{
		"firmware_version": version, "target_version": version, "ota_status": "succeeded",
		"ota_url": "https://updates.example.com/esp32-s3/" + version + ".bin",
	})
}

// TestRolloutsUnavailable: against a server without the rollout API (here
// a proxy that answers 404 for it), every rollouts page says so.
func TestRolloutsUnavailable(t *testing.T) {
	b := newBrowser(t)
	srv := brokertest.Start(t)
	u, _ := url.Parse(srv.HTTPURL())
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.FlushInterval = -1
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/rollouts") {
			http.NotFound(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { front.CloseClientConnections(); front.Close() })
	for _, page := range []string{"#/rollouts", "#/rollouts/new", "#/rollouts/ro-1"} {
		b.do("open "+page, chromedp.Navigate(front.URL+"/ui/"+page))
		b.waitJS(page+" unavailable", `document.querySelector('[data-testid=rollouts-unavailable]')`)
	}
}
