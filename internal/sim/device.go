package sim

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// device is one virtual ESP32 running the seed's firmware. Everything it
// does is driven by paho callbacks and timers (time.AfterFunc), so an idle
// device costs its paho client and this struct, no goroutine of its own.
// Fields after mu are guarded by it.
type device struct {
	f    *Fleet
	idx  int
	id   string
	slow time.Duration // Slow fault: delay before acting (0: not slow)

	mu          sync.Mutex
	cl          paho.Client
	secret      string // MQTT password, kept to rebuild the client per wake
	online      bool
	bootPending bool   // the next connection is a boot: report state
	resetReason string // reported at boot: poweron, software, panic
	bootCount   int
	crashCount  int
	fw          string
	updated     bool // fw was installed by an OTA update
	led         bool
	interval    time.Duration   // telemetry period
	intervalRaw json.RawMessage // as last set through desired (reported verbatim)
	extra       map[string]json.RawMessage
	lastVersion int64 // newest shadow version acted on
	bootedAt    time.Time
	telemetry   *time.Timer
	crashTimer  *time.Timer
	ota         otaState
	job         jobState // Jobs-API mode: the execution being downloaded
	crashLoop   bool
	gone        bool
	lastTok     paho.Token
	wake        *wake // low-power: the wake in progress
}

// wake is one low-power wake; done is closed when its work is finished.
type wake struct {
	done     chan struct{}
	closed   bool
	rebooted bool // a reboot ended it (and starts the next wake itself)
}

func (w *wake) finish() {
	if !w.closed {
		w.closed = true
		close(w.done)
	}
}

type otaState struct {
	gen      int // which download a progress timer belongs to
	active   bool
	target   string
	url      string
	progress int
	// The image desired state describes (real downloads check them).
	sha256    string
	size      int64
	sig       []byte
	failed    string // a version whose update failed: not retried
	succeeded bool   // report the success at the next boot
}

func (d *device) topic(suffix string) string { return "$aws/things/" + d.id + "/shadow/" + suffix }

// clientOptions builds the device's paho options.
func (d *device) clientOptions(secret string) *paho.ClientOptions {
	c := &d.f.cfg
	o := paho.NewClientOptions().AddBroker(c.Broker).SetClientID(d.id).
		SetProtocolVersion(4).
		SetCleanSession(!c.PersistentSession).
		SetKeepAlive(c.KeepAlive).
		SetPingTimeout(c.ConnectTimeout).
		SetConnectTimeout(c.ConnectTimeout).
		SetWriteTimeout(c.ConnectTimeout).
		SetOrderMatters(false).
		SetConnectRetry(false).
		SetAutoReconnect(c.LowPower.Period == 0).
		SetMaxReconnectInterval(30 * time.Second).
		SetDefaultPublishHandler(d.onMessage).
		SetOnConnectHandler(d.onConnect).
		SetConnectionLostHandler(d.onLost)
	if dl := d.f.dialer(d.idx); dl != nil {
		o.SetDialer(dl)
	}
	if secret != "" {
		o.SetUsername(d.id).SetPassword(secret)
	}
	if c.TLS != nil || d.f.cfg.ClientCert != nil {
		tc := c.TLS
		if c.ClientCert != nil {
			if tc == nil {
				tc = defaultTLS()
			} else {
				tc = tc.Clone()
			}
			// Loaded at each handshake, so a device does not keep its
			// certificate in memory between connections.
			id := d.id
			tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return c.ClientCert(id)
			}
		}
		o.SetTLSConfig(tc)
	}
	return o
}

// connect opens the connection; the boot or reconnect work runs in
// onConnect. It reports whether the connection was made.
func (d *device) connect() error {
	d.mu.Lock()
	cl := d.cl
	d.mu.Unlock()
	tok := cl.Connect()
	if !tok.WaitTimeout(d.f.cfg.ConnectTimeout + time.Second) {
		return errTimeout
	}
	return tok.Error()
}

// onConnect runs (in a paho goroutine) after every successful connection:
// subscribe to the delta and get replies, then report on boot, or ask for
// the shadow (/get) after a reconnect.
func (d *device) onConnect(c paho.Client) {
	if d.f.stopped.Load() {
		return
	}
	filters := map[string]byte{d.topic("update/delta"): 1, d.topic("get/+"): 1}
	if d.f.cfg.JobsAPI {
		filters[d.jobsTopic("notify-next")] = 1
		filters[d.jobsTopic("start-next/+")] = 1
	}
	tok := c.SubscribeMultiple(filters, nil)
	if !tok.WaitTimeout(d.f.cfg.ConnectTimeout) || tok.Error() != nil {
		d.f.stats.subscribeErrors.Add(1)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.online {
		d.online = true
		d.f.stats.connected.Add(1)
	}
	d.f.stats.connects.Add(1)
	lowPower := d.f.cfg.LowPower.Period > 0
	if d.bootPending {
		d.bootPending = false
		d.bootedAt = time.Now()
		d.bootCount++
		d.reportBoot()
		d.persistLocked()
		if d.crashLoop {
			d.scheduleCrash()
		}
	}
	if !lowPower {
		d.scheduleTelemetry(true)
	}
	// After the boot report or a reconnection, ask for the shadow: a desired
	// change made while the device was off is in the /get answer's delta.
	d.f.stats.gets.Add(1)
	d.lastTok = c.Publish(d.topic("get"), 1, false, []byte("{}"))
	if d.f.cfg.JobsAPI {
		// After a boot or a reconnection, pick up (or finish) pending work.
		d.lastTok = c.Publish(d.jobsTopic("start-next"), 1, false, []byte(`{"statusDetails":{"progress":"0"}}`))
	}
}

func (d *device) onLost(_ paho.Client, _ error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.f.stats.lost.Add(1)
	d.goOffline()
}

func (d *device) goOffline() {
	if d.online {
		d.online = false
		d.f.stats.connected.Add(-1)
	}
	if d.telemetry != nil {
		d.telemetry.Stop()
	}
}

// onMessage handles every message the device receives.
func (d *device) onMessage(_ paho.Client, m paho.Message) {
	if d.f.stopped.Load() {
		return
	}
	t := m.Topic()
	if d.f.cfg.JobsAPI && strings.HasPrefix(t, d.jobsTopic("")) {
		d.onJobsMessage(t, m.Payload())
		return
	}
	switch {
	case strings.HasSuffix(t, "/update/delta"):
		var msg struct {
			State   map[string]json.RawMessage `json:"state"`
			Version int64                      `json:"version"`
		}
		if json.Unmarshal(m.Payload(), &msg) != nil {
			d.f.stats.badMessages.Add(1)
			return
		}
		d.f.stats.deltas.Add(1)
		d.act(msg.State, msg.Version, false)
	case strings.HasSuffix(t, "/get/accepted"):
		var msg struct {
			State struct {
				Delta map[string]json.RawMessage `json:"delta"`
			} `json:"state"`
			Version int64 `json:"version"`
		}
		if json.Unmarshal(m.Payload(), &msg) != nil {
			d.f.stats.badMessages.Add(1)
			return
		}
		d.act(msg.State.Delta, msg.Version, true)
	case strings.HasSuffix(t, "/get/rejected"):
		d.wakeDone(false)
	}
}

// act applies a delta (or the delta of a /get), after the slow-device delay
// if this device is slow. endWake ends a low-power wake afterwards.
func (d *device) act(state map[string]json.RawMessage, version int64, endWake bool) {
	if d.slow > 0 {
		time.AfterFunc(d.slow, func() { d.apply(state, version, endWake) })
		return
	}
	d.apply(state, version, endWake)
}

func (d *device) apply(state map[string]json.RawMessage, version int64, endWake bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if endWake {
		defer d.wakeDone(true)
	}
	if version != 0 && version < d.lastVersion {
		return // an older delta delivered late
	}
	d.lastVersion = max(d.lastVersion, version)
	if len(state) == 0 {
		return
	}
	rep := map[string]any{}
	for k, v := range state {
		switch k {
		case "led_is_on":
			var on bool
			if json.Unmarshal(v, &on) != nil {
				d.f.stats.ignored.Add(1) // the seed checks cJSON_IsBool
				continue
			}
			d.led = on
			rep[k] = on
		case "telemetry_interval_s":
			var s float64
			if json.Unmarshal(v, &s) != nil || s <= 0 || s > 7*24*3600 {
				d.f.stats.ignored.Add(1)
				continue
			}
			d.interval = time.Duration(s * float64(time.Second))
			d.intervalRaw = v
			rep[k] = v
			if d.online && d.f.cfg.LowPower.Period == 0 {
				d.scheduleTelemetry(false)
			}
		case "ota_url", "target_version", "ota_sha256", "ota_size", "ota_signature":
			// handled below, together
		default:
			minV, known := d.f.cfg.Features[k]
			if !known || compareVersions(d.fw, minV) < 0 {
				d.f.stats.ignored.Add(1) // old firmware: the delta stays
				continue
			}
			if d.extra == nil {
				d.extra = map[string]json.RawMessage{}
			}
			d.extra[k] = v
			rep[k] = v
		}
	}
	d.f.stats.acted.Add(int64(len(rep)))
	d.imageOf(state)
	target, hasTarget := jsonString(state["target_version"])
	url, hasURL := jsonString(state["ota_url"])
	switch {
	case hasTarget && target == d.fw:
		// Already running it: report it so the request converges.
		rep["target_version"] = target
		d.reportImage(rep)
		if hasURL {
			rep["ota_url"] = url
			d.ota.url = url
		}
	case hasTarget && (d.ota.active && d.ota.target == target || d.ota.failed == target):
		// Downloading it already, or it failed here: do not start again.
	case hasTarget:
		if hasURL {
			d.ota.url = url
		}
		if d.ota.url == "" {
			d.f.stats.ignored.Add(1) // nowhere to download from
			break
		}
		d.startOTA(target, rep)
	case hasURL:
		d.ota.url = url
		rep["ota_url"] = url
	}
	if len(rep) > 0 {
		d.report(rep)
		d.persistLocked()
	}
}

func jsonString(v json.RawMessage) (string, bool) {
	if v == nil {
		return "", false
	}
	var s string
	if json.Unmarshal(v, &s) != nil || s == "" {
		return "", false
	}
	return s, true
}

// report publishes {"state":{"reported":rep}} at QoS 1.
func (d *device) report(rep map[string]any) {
	payload, err := json.Marshal(map[string]any{"state": map[string]any{"reported": rep}})
	if err != nil || d.cl == nil {
		return
	}
	d.f.stats.reports.Add(1)
	d.lastTok = d.cl.Publish(d.topic("update"), 1, false, payload)
}

// reportBoot is the seed's report_current_state at boot, plus the
// exercises' telemetry interval and self-reported tags.
func (d *device) reportBoot() {
	interval := any(d.interval.Seconds())
	if d.intervalRaw != nil {
		interval = d.intervalRaw
	}
	rep := map[string]any{
		"led_is_on":            d.led,
		"firmware_version":     d.fw,
		"telemetry_interval_s": interval,
		"location":             d.f.attr(d.id, "location"),
		"hardware_rev":         d.f.attr(d.id, "hardware_rev"),
		"reset_reason":         d.resetReason,
		"boot_count":           d.bootCount,
		"crash_count":          d.crashCount,
	}
	for k, v := range d.extra {
		if minV := d.f.cfg.Features[k]; compareVersions(d.fw, minV) >= 0 {
			rep[k] = v
		}
	}
	if d.ota.succeeded {
		d.ota.succeeded = false
		rep["target_version"] = d.fw
		rep["ota_url"] = d.ota.url
		rep["ota_status"] = "succeeded"
		rep["ota_progress"] = 100
		d.reportImage(rep)
		d.f.stats.otaSucceeded.Add(1)
	}
	d.report(rep)
}

// startOTA begins a download (the seed's exercise 2): a real one from an
// http(s) ota_url when Config.Download is set, a simulated one otherwise.
func (d *device) startOTA(target string, rep map[string]any) {
	d.ota.gen++
	gen := d.ota.gen
	d.ota.active, d.ota.target, d.ota.progress = true, target, 0
	d.f.stats.otaStarted.Add(1)
	rep["ota_status"] = "downloading"
	rep["ota_progress"] = 0
	if d.f.cfg.Download && isHTTP(d.ota.url) {
		d.startDownload(gen, target)
		return
	}
	step := d.f.cfg.OTADuration / 4
	if d.slow > 0 {
		step *= 4
	}
	var next func()
	next = func() {
		if d.f.stopped.Load() {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.ota.active || d.ota.gen != gen {
			return // aborted by a reboot, or superseded
		}
		d.ota.progress += 25
		if d.ota.progress >= 50 && d.f.faultHits(FailUpdate, d.id, target) {
			d.otaFailedLocked(target, "image verification failed")
			return
		}
		if d.ota.progress < 100 {
			d.report(map[string]any{"ota_status": "downloading", "ota_progress": d.ota.progress})
			time.AfterFunc(step, next)
			return
		}
		d.installLocked(target)
	}
	time.AfterFunc(step, next)
}

// otaFailedLocked ends an update that failed: reported, not retried.
func (d *device) otaFailedLocked(target, msg string) {
	d.ota.active = false
	d.ota.failed = target
	d.persistLocked()
	d.f.stats.otaFailed.Add(1)
	d.report(map[string]any{"ota_status": "failed", "ota_progress": d.ota.progress,
		"ota_error": msg, "ota_failed_version": target})
	d.wakeDone(true)
}

// installLocked installs a downloaded image (switches the boot partition)
// and reboots into it; the seed's keys report each step.
func (d *device) installLocked(target string) {
	d.report(map[string]any{"ota_status": "installing", "ota_progress": 100})
	d.report(map[string]any{"ota_status": "rebooting", "ota_progress": 100})
	d.ota.active = false
	d.ota.succeeded = true
	d.fw = target
	d.updated = true
	d.crashLoop = d.f.faultHits(CrashLoop, d.id, target)
	if d.f.faultHits(NeverReturn, d.id, target) {
		d.gone = true
	}
	d.persistLocked()
	d.rebootLocked("software")
}

// rebootLocked disconnects and, unless the device never returns, boots
// again after the reboot delay.
func (d *device) rebootLocked(reason string) {
	d.f.stats.reboots.Add(1)
	d.goOffline()
	if d.crashTimer != nil {
		d.crashTimer.Stop()
	}
	d.resetReason = reason
	d.bootPending = true
	d.job.active = false // a reboot aborts a Jobs-API download too
	if d.ota.active {
		// A crash (or any reboot) during a download aborts it; the device
		// starts it again when the delta asks after the boot.
		d.ota.active = false
	}
	cl, tok := d.cl, d.lastTok
	gone := d.gone
	if gone {
		d.f.stats.gone.Add(1)
	}
	lowPower := d.f.cfg.LowPower.Period > 0
	// In low-power mode the reboot starts the next wake only when it ends
	// one; otherwise that wake was over and the device already sleeps.
	rewake := !lowPower || d.wake != nil
	if w := d.wake; w != nil {
		w.rebooted = true // the wake ends here
		w.finish()
		d.wake = nil
	}
	go func() {
		if tok != nil {
			tok.WaitTimeout(time.Second) // let the last report out
		}
		cl.Disconnect(0)
		if gone || !rewake || d.f.stopped.Load() {
			return
		}
		time.AfterFunc(d.f.cfg.RebootDelay, func() {
			if lowPower {
				d.wakeCycle()
				return
			}
			d.reconnect()
		})
	}()
}

// reconnect connects again after a reboot, retrying with backoff.
func (d *device) reconnect() {
	backoff := time.Second
	for !d.f.stopped.Load() {
		if err := d.connect(); err == nil {
			return
		}
		d.f.stats.connectErrors.Add(1)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-d.f.done:
			t.Stop()
			return
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func (d *device) scheduleCrash() {
	delay := d.f.crashDelay(d.id, d.fw)
	d.crashTimer = time.AfterFunc(delay, func() {
		if d.f.stopped.Load() {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.crashLoop || d.gone {
			return
		}
		d.f.stats.crashes.Add(1)
		d.crashCount++
		d.persistLocked()
		d.rebootLocked("panic")
	})
}

// scheduleTelemetry (re)arms the telemetry timer; the first period after a
// connection is spread over the interval so a fleet does not publish in step.
func (d *device) scheduleTelemetry(first bool) {
	if d.interval <= 0 {
		return
	}
	delay := d.interval
	if first {
		delay = time.Duration(unit("telemetry", d.id) * float64(d.interval))
	}
	if d.telemetry == nil {
		d.telemetry = time.AfterFunc(delay, d.tick)
		return
	}
	d.telemetry.Reset(delay)
}

func (d *device) tick() {
	if d.f.stopped.Load() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.online {
		return
	}
	d.publishTelemetry()
	if d.interval > 0 {
		d.telemetry.Reset(d.interval)
	}
}

// publishTelemetry sends one reading on things/{id}/telemetry (QoS 0).
func (d *device) publishTelemetry() {
	now := time.Now()
	u := unit("temp", d.id)
	var b bytes.Buffer
	b.Grow(128)
	b.WriteString(`{"ts":`)
	b.WriteString(strconv.FormatInt(now.Unix(), 10))
	b.WriteString(`,"temp_c":`)
	b.WriteString(strconv.FormatFloat(math.Round((18+8*u+math.Sin(float64(now.Unix())/600+u*6))*10)/10, 'f', 1, 64))
	b.WriteString(`,"rssi":`)
	b.WriteString(strconv.Itoa(-40 - int(u*50)))
	b.WriteString(`,"heap_free":`)
	b.WriteString(strconv.Itoa(180000 - int(u*40000)))
	b.WriteString(`,"uptime_s":`)
	b.WriteString(strconv.FormatInt(int64(now.Sub(d.bootedAt).Seconds()), 10))
	b.WriteString(`,"fw":`)
	b.WriteString(strconv.Quote(d.fw))
	b.WriteString(`,"led_is_on":`)
	b.WriteString(strconv.FormatBool(d.led))
	b.WriteByte('}')
	d.f.stats.telemetry.Add(1)
	d.cl.Publish("things/"+d.id+"/telemetry", 0, false, b.Bytes())
}

// wakeDone ends the work of a low-power wake (after the /get answer was
// acted on), unless an update is downloading (the device stays awake for
// it; the reboot or failure ends the wake). locked says d.mu is held.
func (d *device) wakeDone(locked bool) {
	if !locked {
		d.mu.Lock()
		defer d.mu.Unlock()
	}
	if d.wake == nil || d.ota.active {
		return
	}
	d.wake.finish()
}

// wakeCycle is one low-power wake: connect, (report at boot), /get, act,
// report, one telemetry reading, disconnect, sleep. It runs in its own
// goroutine only while the device is awake.
func (d *device) wakeCycle() {
	if d.f.stopped.Load() {
		return
	}
	w := &wake{done: make(chan struct{})}
	d.mu.Lock()
	if d.gone {
		d.mu.Unlock()
		return
	}
	d.wake = w
	// A fresh client per wake, as a real device after deep sleep: paho
	// resuming the previous connection's in-flight messages on the same
	// client races with its own writer (a data race inside paho).
	d.cl = paho.NewClient(d.clientOptions(d.secret))
	d.mu.Unlock()
	d.f.stats.wakes.Add(1)
	if err := d.connect(); err != nil {
		d.f.stats.connectErrors.Add(1)
		d.mu.Lock()
		d.wake = nil
		d.mu.Unlock()
		d.sleep()
		return
	}
	t := time.NewTimer(d.f.cfg.LowPower.Awake)
	select {
	case <-w.done:
	case <-t.C:
		d.f.stats.wakeTimeouts.Add(1)
	case <-d.f.done:
	}
	t.Stop()
	d.mu.Lock()
	if w.rebooted {
		// A reboot took over this wake (it disconnects and wakes again).
		d.mu.Unlock()
		return
	}
	w.finish()
	d.wake = nil
	if d.online {
		d.publishTelemetry()
	}
	tok := d.lastTok
	d.goOffline()
	cl := d.cl
	d.mu.Unlock()
	if tok != nil {
		tok.WaitTimeout(d.f.cfg.ConnectTimeout)
	}
	cl.Disconnect(100)
	d.sleep()
}

func (d *device) sleep() {
	if d.f.stopped.Load() {
		return
	}
	time.AfterFunc(d.f.cfg.LowPower.Period, d.wakeCycle)
}

// persistLocked records the device's kept state in the fleet's state file
// (when there is one). d.mu is held.
func (d *device) persistLocked() {
	if d.f.state == nil {
		return
	}
	st := DeviceState{
		Firmware: d.fw, OTAInstalled: d.updated, BootCount: d.bootCount, CrashCount: d.crashCount, LED: d.led,
		TelemetryInterval: d.intervalRaw, OTAURL: d.ota.url, OTAFailed: d.ota.failed,
		OTAUnreported: d.ota.succeeded, Bricked: d.gone,
	}
	if len(d.extra) > 0 {
		st.Settings = make(map[string]json.RawMessage, len(d.extra))
		for k, v := range d.extra {
			st.Settings[k] = v
		}
	}
	d.f.state.put(d.id, st)
}

// restore boots the device with kept state st.
func (d *device) restore(st DeviceState) {
	if st.Firmware != "" {
		d.fw = st.Firmware
	}
	d.updated = st.OTAInstalled
	d.bootCount, d.crashCount, d.led = st.BootCount, st.CrashCount, st.LED
	if st.TelemetryInterval != nil {
		var sec float64
		if json.Unmarshal(st.TelemetryInterval, &sec) == nil && sec > 0 {
			d.interval = time.Duration(sec * float64(time.Second))
			d.intervalRaw = st.TelemetryInterval
		}
	}
	if len(st.Settings) > 0 {
		d.extra = make(map[string]json.RawMessage, len(st.Settings))
		for k, v := range st.Settings {
			d.extra[k] = v
		}
	}
	d.ota.url, d.ota.failed, d.ota.succeeded = st.OTAURL, st.OTAFailed, st.OTAUnreported
	d.gone = st.Bricked
	// A crash-looping firmware crashes after every boot, also after a power
	// cycle: the rule that hit it at its update still does.
	d.crashLoop = d.updated && d.f.faultHits(CrashLoop, d.id, d.fw)
}
