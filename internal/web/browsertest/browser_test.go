// Package browsertest drives the dashboard in headless Chromium (Debian's
// /usr/bin/chromium; never a downloaded browser) against an in-process
// Umbra. Without Chromium the tests skip.
//
// Screenshots for the README are taken along the way and written to
// docs/screenshots/ only on request:
//
//	go test ./web/browsertest -run . -update-screenshots
package browsertest

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/umbra-iot/umbra/brokertest"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the dashboard screenshots to docs/screenshots/")

// chromiumPath is Debian's Chromium; UMBRA_CHROMIUM overrides it.
func chromiumPath() string {
	if p := os.Getenv("UMBRA_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// browser is one headless Chromium tab.
type browser struct {
	t   *testing.T
	ctx context.Context
	mu  sync.Mutex
	js  []string // uncaught exceptions and console errors of the page
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no Chromium at %s (apt-get install -y chromium, or set UMBRA_CHROMIUM): browser tests skipped", path)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("font-render-hinting", "none"),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.WindowSize(1440, 900),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	b := &browser{t: t, ctx: bctx}
	if err := chromedp.Listen(bctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			b.mu.Lock()
			d := e.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			b.js = append(b.js, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, msg))
			b.mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				b.mu.Lock()
				b.js = append(b.js, "console.error: "+strings.Join(parts, " "))
				b.mu.Unlock()
			}
		}
	}); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1440, 900)); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.js {
			t.Errorf("page JavaScript error: %s", e)
		}
	})
	return b
}

func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\npage text:\n%s", what, err, b.text())
	}
}

// text is the page's visible text, for failure messages.
func (b *browser) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ''`))
	return s
}

// eval returns the value of a JavaScript expression.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("eval %s: %v", expr, err)
	}
	return v
}

// fill sets a form field's value as typing would, firing input events.
func (b *browser) fill(sel, value string) {
	b.t.Helper()
	js := fmt.Sprintf(`(() => { const el = document.querySelector(%s); if (!el) return false; el.focus(); el.value = %s;
		el.dispatchEvent(new Event('input', {bubbles: true})); return true })()`, jsString(sel), jsString(value))
	if !eval[bool](b, js) {
		b.t.Fatalf("fill %s: no such element\npage text:\n%s", sel, b.text())
	}
}

func jsString(s string) string {
	out, _ := json.Marshal(s)
	return string(out)
}

// waitJS waits until the expression is truthy.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`!!(`+expr+`)`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		b.t.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, b.text())
	}
}

// screenshot captures the viewport; with -update-screenshots it is written
// to docs/screenshots/<name>.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	if *updateScreenshots {
		// Let transitions and the row highlight finish.
		time.Sleep(1700 * time.Millisecond)
	}
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) < 1000 {
		b.t.Fatalf("screenshot %s: only %d bytes", name, len(png))
	}
	if !*updateScreenshots {
		return
	}
	dir := filepath.Join("..", "..", "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("wrote docs/screenshots/%s.png", name)
}

// --- the server side ---------------------------------------------------------

// call sends an API request and checks the status.
func call(t *testing.T, base, key, method, path, body string, want int) []byte {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, out)
	}
	return out
}

// device is a simulated ESP32 on MQTT.
type device struct {
	name   string
	client mqtt.Client
	deltas chan map[string]any
}

func connectDevice(t *testing.T, srv *brokertest.Server, name string, opts ...func(*mqtt.ClientOptions)) *device {
	t.Helper()
	d := &device{name: name, deltas: make(chan map[string]any, 16)}
	o := mqtt.NewClientOptions().AddBroker(srv.MQTTURL()).SetClientID(name).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	for _, f := range opts {
		f(o)
	}
	d.client = mqtt.NewClient(o)
	if tok := d.client.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("device %s: connect: %v", name, tok.Error())
	}
	topic := "$aws/things/" + name + "/shadow/update/delta"
	if tok := d.client.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		var msg struct {
			State map[string]any `json:"state"`
		}
		if json.Unmarshal(m.Payload(), &msg) == nil {
			select {
			case d.deltas <- msg.State:
			default:
			}
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("device %s: subscribe: %v", name, tok.Error())
	}
	t.Cleanup(func() { d.client.Disconnect(0) })
	return d
}

// report publishes reported state, as the device's firmware does.
func (d *device) report(t *testing.T, reported map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"state": map[string]any{"reported": reported}})
	tok := d.client.Publish("$aws/things/"+d.name+"/shadow/update", 1, false, b)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("device %s: publish: %v", d.name, tok.Error())
	}
}

func (d *device) disconnect() { d.client.Disconnect(50) }

// fleetThing is one seeded thing.
type fleetThing struct {
	name, location, ring, hw, fw string
	online                       bool
}

// fleet is what seedFleet made.
type fleet struct {
	things []fleetThing
	online map[string]*device // devices still connected, by name
	byFW   map[string]int     // things per reported firmware version
}

func (f *fleet) count(match func(fleetThing) bool) int {
	n := 0
	for _, th := range f.things {
		if match(th) {
			n++
		}
	}
	return n
}

// seedFleet registers things with tags, connects devices that report their
// state over MQTT, and leaves some of them offline.
func seedFleet(t *testing.T, srv *brokertest.Server, key string, opts ...func(*mqtt.ClientOptions)) *fleet {
	t.Helper()
	firmware := []string{"2.1.3", "2.1.3", "2.1.3", "2.0.9", "2.1.3", "2.0.9", "1.9.4", "2.1.3", "2.2.0-rc1", "2.0.9", "2.1.3", "2.1.3"}
	var things []fleetThing
	for i := 1; i <= 24; i++ {
		loc := []string{"factory-A", "factory-B", "warehouse-3"}[i%3]
		ring := "broad"
		switch {
		case i <= 3:
			ring = "canary"
		case i <= 8:
			ring = "early"
		}
		things = append(things, fleetThing{
			name: fmt.Sprintf("esp32-%03d", i), location: loc, ring: ring,
			hw: []string{"rev-c", "rev-d"}[i%2], fw: firmware[i%len(firmware)], online: i%5 != 0 && i != 7,
		})
	}
	base := srv.HTTPURL()
	call(t, base, key, "POST", "/api/thing-types", `{"thingTypeName":"esp32-s3","description":"ESP32-S3 sensor node"}`, http.StatusCreated)
	call(t, base, key, "POST", "/api/groups", `{"groupName":"line-1"}`, http.StatusCreated)
	online := map[string]*device{}
	byFW := map[string]int{}
	for i, th := range things {
		body := fmt.Sprintf(`{"thingName":%q,"thingTypeName":"esp32-s3","attributes":{"location":%q,"deployment_ring":%q,"hardware_rev":%q}}`, th.name, th.location, th.ring, th.hw)
		call(t, base, key, "POST", "/api/things", body, http.StatusCreated)
		if i%4 == 0 {
			call(t, base, key, "PUT", "/api/groups/line-1/things/"+th.name, "", http.StatusNoContent)
		}
		byFW[th.fw]++
		d := connectDevice(t, srv, th.name, opts...)
		d.report(t, map[string]any{
			"firmware_version": th.fw, "led_is_on": false, "telemetry_interval_s": 60,
			"temp_c": 20 + float64(i%7)/2, "wifi_rssi": -48 - i%20, "uptime_s": 3600 * (i + 1),
		})
		if th.online {
			online[th.name] = d
		} else {
			d.disconnect()
		}
	}
	// A few things have a desired change the device has not applied yet.
	for _, n := range []string{"esp32-005", "esp32-010", "esp32-014"} {
		call(t, base, key, "POST", "/things/"+n+"/shadow", `{"state":{"desired":{"telemetry_interval_s":300}}}`, http.StatusOK)
	}
	waitCount(t, base, key, "shadow.reported.firmware_version:*", 24)
	waitCount(t, base, key, "connectivity.connected:true", len(online))
	return &fleet{things: things, online: online, byFW: byFW}
}

// waitCount waits until the fleet index counts want things matching q.
func waitCount(t *testing.T, base, key, q string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var out struct{ Count int }
		_ = json.Unmarshal(call(t, base, key, "GET", "/api/aggregations/count?query="+url.QueryEscape(q), "", http.StatusOK), &out)
		if out.Count == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("count(%s) = %d, want %d", q, out.Count, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
