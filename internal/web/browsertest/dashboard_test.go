package browsertest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/umbra-iot/umbra/brokertest"
)

// TestDashboard walks an operator's path: the fleet view, a query (and a
// bad one), a thing, a change of desired state that reaches the device and
// comes back as a live update, and the history of that change.
func TestDashboard(t *testing.T) {
	b := newBrowser(t)
	srv := brokertest.Start(t)
	fl := seedFleet(t, srv, "")
	devices := fl.online
	base := srv.HTTPURL()

	// / redirects to the dashboard.
	b.do("open /", chromedp.Navigate(base+"/"))
	b.waitJS("the fleet table", `document.querySelectorAll('tr[data-testid=thing-row]').length === 24`)
	if u := eval[string](b, `location.pathname`); u != "/ui/" {
		t.Fatalf("/ landed on %s, want /ui/", u)
	}
	// The table is one expanded search, not requests per row.
	if n := eval[float64](b, `performance.getEntriesByType('resource').filter((e) => /\/api\/things\/[^/?]+$|\/things\/[^/]+\/shadow/.test(new URL(e.name).pathname)).length`); n != 0 {
		t.Errorf("the fleet table made %v per-thing requests, want none beside the search", n)
	}
	if n := eval[float64](b, `performance.getEntriesByType('resource').filter((e) => new URL(e.name).searchParams.get('expand') === 'thing,shadow').length`); n != 1 {
		t.Errorf("expanded searches = %v, want 1", n)
	}
	b.waitJS("the live stream", `document.querySelector('[data-testid=stream-state]').dataset.state === 'live'`)

	// Summary counts, connectivity, firmware and tags are shown.
	b.waitJS("summary counts", `document.querySelector('[data-testid=stat-total]').textContent === '24'`)
	if got, want := eval[string](b, `document.querySelector('[data-testid=stat-connected]').textContent`), fmt.Sprint(len(devices)); got != want {
		t.Errorf("connected stat = %q, want %s", got, want)
	}
	row := `document.querySelector('tr[data-thing="esp32-003"]')`
	if got := eval[string](b, row+`.querySelector('[data-testid=firmware]').textContent`); got != "2.0.9" {
		t.Errorf("esp32-003 firmware cell = %q, want 2.0.9", got)
	}
	if got := eval[string](b, row+`.querySelector('[data-testid=connectivity]').textContent`); !strings.HasPrefix(got, "Connected") {
		t.Errorf("esp32-003 connectivity cell = %q, want Connected", got)
	}
	if got := eval[string](b, `document.querySelector('tr[data-thing="esp32-005"] [data-testid=connectivity]').textContent`); !strings.HasPrefix(got, "Offline") {
		t.Errorf("esp32-005 connectivity cell = %q, want Offline", got)
	}
	if got := eval[string](b, row+`.textContent`); !strings.Contains(got, "deployment_ring") || !strings.Contains(got, "canary") {
		t.Errorf("esp32-003 row lacks its tags: %q", got)
	}
	// The firmware chart has a bar per version, plus "not reported" for none.
	b.waitJS("the firmware chart", `document.querySelectorAll('[data-testid=firmware-chart] g.bar').length === `+fmt.Sprint(len(fl.byFW)))
	for fw, n := range fl.byFW {
		if got := eval[string](b, `document.querySelector('[data-testid=firmware-chart] g.bar[data-label="`+fw+`"]')?.dataset.value`); got != fmt.Sprint(n) {
			t.Errorf("chart bar %s = %s, want %d", fw, got, n)
		}
	}
	b.screenshot("fleet")

	// A query narrows the table, the counts and the chart.
	b.fill("#query-input", "attributes.location:factory-A AND connectivity.connected:true")
	b.do("run a query", chromedp.Click(`[data-testid=query-run]`))
	nA := fl.count(func(th fleetThing) bool { return th.location == "factory-A" && th.online })
	b.waitJS("the filtered table", fmt.Sprintf(`document.querySelectorAll('tr[data-testid=thing-row]').length === %d && document.querySelector('[data-testid=stat-total]').textContent === '%d'`, nA, nA))
	if got := eval[string](b, `location.hash`); !strings.Contains(got, "factory-A") {
		t.Errorf("the query is not in the URL: %s", got)
	}

	// Clicking a bar of the chart adds its version to the query.
	b.do("click a chart bar", chromedp.Click(`[data-testid=firmware-chart] g.bar[data-label="2.0.9"] .bar-hit`))
	nA209 := fl.count(func(th fleetThing) bool { return th.location == "factory-A" && th.online && th.fw == "2.0.9" })
	b.waitJS("the bar's filter", fmt.Sprintf(`document.querySelector('#query-input').value.includes('shadow.reported.firmware_version:2.0.9') && document.querySelectorAll('tr[data-testid=thing-row]').length === %d`, nA209))

	// A bad query shows the parser's message, with the position marked.
	b.fill("#query-input", "attributes.location:(( AND")
	b.do("run a bad query", chromedp.Click(`[data-testid=query-run]`))
	b.waitJS("the query error", `!document.querySelector('[data-testid=query-error]').hidden`)
	if got := eval[string](b, `document.querySelector('[data-testid=query-error]').textContent`); !strings.Contains(got, "Query error") || !strings.Contains(got, "position") {
		t.Errorf("query error = %q", got)
	}

	// Back to everything; open a thing.
	b.fill("#query-input", "")
	b.do("clear the query", chromedp.Click(`[data-testid=query-run]`))
	b.waitJS("the full table", `document.querySelectorAll('tr[data-testid=thing-row]').length === 24 && document.querySelector('[data-testid=query-error]').hidden`)
	b.do("open esp32-003", chromedp.Click(`tr[data-thing="esp32-003"] a.thing-link`))
	b.waitJS("the thing view", `document.querySelector('[data-testid=thing-name]')?.textContent === 'esp32-003'`)
	b.waitJS("the reported state", `document.querySelector('[data-testid=reported]').textContent.includes('"firmware_version": "2.0.9"')`)
	b.waitJS("the connectivity", `document.querySelector('[data-testid=thing-connectivity]').textContent.startsWith('Connected')`)
	b.waitJS("in sync", `document.querySelector('[data-testid=delta]').textContent.includes('In sync')`)
	b.waitJS("the history", `document.querySelectorAll('[data-testid=history-entry]').length === 1`)

	// Change a desired value in the editor: the delta appears.
	b.do("edit desired", chromedp.Click(`[data-testid=edit-desired]`))
	b.waitJS("the editor", `document.querySelector('[data-testid=desired-editor]')`)
	b.fill(`[data-testid=desired-editor]`, `{"led_is_on": true, "telemetry_interval_s": 30}`)
	b.do("save desired", chromedp.Click(`[data-testid=save-desired]`))
	b.waitJS("the delta", `document.querySelector('[data-testid=delta]').textContent.includes('"led_is_on": true')`)
	b.waitJS("the new version in the history", `document.querySelectorAll('[data-testid=history-entry]').length === 2`)
	if got := eval[string](b, `document.querySelector('[data-testid=history-entry]').textContent`); !strings.Contains(got, "desired.led_is_on") || !strings.Contains(got, "desired.telemetry_interval_s") {
		t.Errorf("newest history entry does not show the change: %q", got)
	}

	// The device receives the delta over MQTT ...
	dev := devices["esp32-003"]
	select {
	case delta := <-dev.deltas:
		if delta["led_is_on"] != true {
			t.Fatalf("device got delta %v", delta)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the device got no delta")
	}
	b.screenshot("thing")

	// ... acts, and reports: the page updates live from the event stream.
	dev.report(t, map[string]any{"led_is_on": true, "telemetry_interval_s": 30})
	b.waitJS("the reported value, live", `document.querySelector('[data-testid=reported]').textContent.includes('"led_is_on": true')`)
	b.waitJS("the delta cleared, live", `document.querySelector('[data-testid=delta]').textContent.includes('In sync')`)
	b.waitJS("the device's report in the history", `document.querySelectorAll('[data-testid=history-entry]').length === 3`)
	if got := eval[string](b, `document.querySelector('[data-testid=history-entry]').textContent`); !strings.Contains(got, "reported.led_is_on") || !strings.Contains(got, "esp32-003") {
		t.Errorf("newest history entry = %q, want the device's report", got)
	}

	// Connectivity changes arrive live too.
	dev.disconnect()
	b.waitJS("offline, live", `document.querySelector('[data-testid=thing-connectivity]').textContent.startsWith('Offline')`)
	b.waitJS("the timeline entry", `[...document.querySelectorAll('[data-testid=conn-event]')].some(e => e.textContent.startsWith('Disconnected'))`)
	connectDevice(t, srv, "esp32-003")
	b.waitJS("connected again, live", `document.querySelector('[data-testid=thing-connectivity]').textContent.startsWith('Connected')`)
	// The timeline is stored, not only what this page saw: after a reload it
	// still shows both sessions and the disconnect between them.
	b.do("reload the thing", chromedp.Reload())
	b.waitJS("the stored timeline", `(() => { const ev = [...document.querySelectorAll('[data-testid=conn-event]')].map((e) => e.textContent);
		return ev.length >= 3 && ev[0].startsWith('Connected') && ev[1].startsWith('Disconnected') && ev[2].startsWith('Connected'); })()`)

	// Back in the fleet view, a device's report updates its row live.
	b.do("back to the fleet", chromedp.Click(`[data-testid=nav-fleet]`))
	b.waitJS("the fleet table", `document.querySelectorAll('tr[data-testid=thing-row]').length === 24`)
	b.waitJS("the live stream", `document.querySelector('[data-testid=stream-state]').dataset.state === 'live'`)
	devices["esp32-001"].report(t, map[string]any{"firmware_version": "2.2.0"})
	b.waitJS("the firmware cell, live", `document.querySelector('tr[data-thing="esp32-001"] [data-testid=firmware]').textContent === '2.2.0'`)
	b.waitJS("the chart, live", `document.querySelector('[data-testid=firmware-chart] g.bar[data-label="2.2.0"]')`)

	// The rollouts page opens (rollouts_test.go drives it).
	b.do("open rollouts", chromedp.Click(`[data-testid=nav-rollouts]`))
	b.waitJS("the rollouts page", `document.querySelector('[data-testid=new-rollout], [data-testid=rollouts-unavailable]')`)
}
