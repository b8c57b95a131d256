package sim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
)

var errTimeout = errors.New("connect: no CONNACK in time")

// Fleet is a running simulated fleet.
type Fleet struct {
	cfg     Config
	devs    []*device
	dialers []*net.Dialer
	stats   counters
	state   *stateStore // nil: no state file

	restored int // devices whose state came from the state file
	flushed  chan struct{}

	stopped  atomic.Bool
	done     chan struct{}
	stopOnce sync.Once
	started  atomic.Bool
}

// New validates cfg and prepares the devices (nothing connects yet).
func New(cfg Config) (*Fleet, error) {
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	f := &Fleet{cfg: c, done: make(chan struct{}), flushed: make(chan struct{})}
	if c.StateFile != "" {
		st, err := openState(c.StateFile, c.ResetState)
		if err != nil {
			return nil, fmt.Errorf("sim: %w", err)
		}
		f.state = st
	}
	for _, ip := range c.SourceAddrs {
		f.dialers = append(f.dialers, &net.Dialer{
			LocalAddr: &net.TCPAddr{IP: ip},
			Timeout:   c.ConnectTimeout,
			KeepAlive: -1, // MQTT keepalive is enough
		})
	}
	if len(f.dialers) == 0 {
		f.dialers = []*net.Dialer{{Timeout: c.ConnectTimeout, KeepAlive: -1}}
	}
	hasSlow := false
	for _, ft := range c.Faults {
		hasSlow = hasSlow || ft.Kind == Slow
	}
	f.devs = make([]*device, c.Devices)
	for i := range f.devs {
		id := fmt.Sprintf(c.IDPattern, c.First+i)
		d := &device{f: f, idx: i, id: id, fw: c.Firmware, interval: c.TelemetryInterval,
			bootPending: true, resetReason: "poweron"}
		if c.TelemetryInterval < 0 {
			d.interval = 0
		}
		if hasSlow {
			d.slow = f.faultDelay(Slow, id, "")
		}
		if f.state != nil {
			if st, ok := f.state.get(id); ok {
				d.restore(st)
				f.restored++
			}
		}
		f.devs[i] = d
	}
	return f, nil
}

// StateFile is the state file's path ("" when there is none).
func (f *Fleet) StateFile() string { return f.cfg.StateFile }

// Restored is how many devices booted with state from the state file.
func (f *Fleet) Restored() int { return f.restored }

// FirmwareCounts is how many devices run each firmware version.
func (f *Fleet) FirmwareCounts() map[string]int {
	out := map[string]int{}
	for i := range f.devs {
		out[f.Firmware(i)]++
	}
	return out
}

// BootCount is how often device i booted (across runs with a state file).
func (f *Fleet) BootCount(i int) int {
	d := f.devs[i]
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bootCount
}

// flushLoop writes the state file every StateFlush while the fleet runs.
func (f *Fleet) flushLoop() {
	defer close(f.flushed)
	t := time.NewTicker(f.cfg.StateFlush)
	defer t.Stop()
	for {
		select {
		case <-f.done:
			return
		case <-t.C:
			if err := f.state.flush(); err != nil {
				f.cfg.Logger.Warn("writing the state file failed", "error", err)
			}
		}
	}
}

// ThingType is the registry thing type of the devices.
func (f *Fleet) ThingType() string { return f.cfg.ThingType }

// FirmwareDefault is the version devices without kept state boot with.
func (f *Fleet) FirmwareDefault() string { return f.cfg.Firmware }

// Devices is the number of devices.
func (f *Fleet) Devices() int { return len(f.devs) }

// ID is the thing name of device i.
func (f *Fleet) ID(i int) string { return f.devs[i].id }

// Firmware is the firmware version device i runs now.
func (f *Fleet) Firmware(i int) string {
	d := f.devs[i]
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fw
}

// dialer is the dialer of device i (its source address).
func (f *Fleet) dialer(i int) *net.Dialer { return f.dialers[i%len(f.dialers)] }

// attr is one registry attribute of a device (Config.Tags override).
func (f *Fleet) attr(id, key string) string {
	if v, ok := f.cfg.Tags[key]; ok {
		return v
	}
	switch key {
	case "deployment_ring":
		return RingOf(id, f.cfg.Rings)
	case "hardware_rev":
		return HardwareRev(id)
	case "location":
		return Location(id)
	case "customer_id":
		return CustomerID(id)
	}
	return ""
}

// attributes are a device's registry attributes (its ring among the
// configured rings, Config.Tags override).
func (f *Fleet) attributes(id string) map[string]string {
	return attributes(id, f.cfg.Rings, f.cfg.Tags)
}

// faultRule returns the first rule of kind that hits device id for an
// update to version.
func (f *Fleet) faultRule(kind FaultKind, id, version string) (Fault, bool) {
	var attrs map[string]string
	for i, ft := range f.cfg.Faults {
		if ft.Kind != kind {
			continue
		}
		if attrs == nil {
			attrs = f.attributes(id)
		}
		if ft.hits(i, f.cfg.Seed, id, attrs, version) {
			return ft, true
		}
	}
	return Fault{}, false
}

func (f *Fleet) faultHits(kind FaultKind, id, version string) bool {
	_, ok := f.faultRule(kind, id, version)
	return ok
}

func (f *Fleet) faultDelay(kind FaultKind, id, version string) time.Duration {
	ft, ok := f.faultRule(kind, id, version)
	if !ok {
		return 0
	}
	return ft.Delay
}

// crashDelay is the uptime before a crash-looping device crashes again.
func (f *Fleet) crashDelay(id, version string) time.Duration {
	if d := f.faultDelay(CrashLoop, id, version); d > 0 {
		return d
	}
	return 30 * time.Second
}

// Start registers (when configured), fetches credentials and connects every
// device, Concurrency at a time and at most ConnectRate per second, and
// returns when every device has made its first attempt (a failed device
// retries in the background) or ctx ends. In low-power mode devices are
// not connected here: their first wakes are spread over one period.
func (f *Fleet) Start(ctx context.Context) error {
	if !f.started.CompareAndSwap(false, true) {
		return errors.New("sim: fleet already started")
	}
	f.stats.startedAt.Store(time.Now().UnixNano())
	if f.state != nil {
		go f.flushLoop()
	} else {
		close(f.flushed)
	}
	var lim *rate.Limiter
	if f.cfg.ConnectRate > 0 {
		lim = rate.NewLimiter(rate.Limit(f.cfg.ConnectRate), max(1, int(f.cfg.ConnectRate/10)))
	}
	firstErr := f.each(ctx, false, func(ctx context.Context, d *device) error {
		if f.stopped.Load() || (lim != nil && lim.Wait(ctx) != nil) {
			return nil
		}
		return f.boot(ctx, d)
	})
	f.stats.connectDoneAt.Store(time.Now().UnixNano())
	if err := ctx.Err(); err != nil {
		return err
	}
	if n := f.stats.setupErrors.Load(); n > 0 {
		return fmt.Errorf("sim: %d devices could not be registered or given credentials; first: %w", n, firstErr)
	}
	return nil
}

// Register registers every device with Config.Registrar (thing type,
// ring and tags) without connecting any, Concurrency at a time: the
// provisioning step before devices are powered on. It returns the first
// error and stops at it.
func (f *Fleet) Register(ctx context.Context) error {
	if f.cfg.Registrar == nil {
		return errors.New("sim: no registrar configured")
	}
	firstErr := f.each(ctx, true, f.register)
	if firstErr != nil {
		return fmt.Errorf("sim: %w", firstErr)
	}
	return ctx.Err()
}

func (f *Fleet) register(ctx context.Context, d *device) error {
	r := f.cfg.Registrar
	if r == nil {
		return nil
	}
	err := r.Register(ctx, Thing{Name: d.id, Type: f.cfg.ThingType, Attributes: f.attributes(d.id)})
	if err != nil {
		f.stats.setupErrors.Add(1)
		return err
	}
	f.stats.registered.Add(1)
	return nil
}

// RingCounts is how many devices of the fleet are in each ring.
func (f *Fleet) RingCounts() map[string]int {
	out := map[string]int{}
	for _, d := range f.devs {
		out[f.attr(d.id, "deployment_ring")]++
	}
	return out
}

// boot prepares one device and powers it on.
func (f *Fleet) boot(ctx context.Context, d *device) error {
	if err := f.register(ctx, d); err != nil {
		return err
	}
	secret := ""
	if c := f.cfg.Credentials; c != nil {
		s, err := c.Secret(ctx, d.id)
		if err != nil {
			f.stats.setupErrors.Add(1)
			return err
		}
		secret = s
	}
	d.mu.Lock()
	d.secret = secret
	d.cl = paho.NewClient(d.clientOptions(secret))
	bricked := d.gone
	d.mu.Unlock()
	if bricked {
		f.stats.gone.Add(1) // it never came back from an update: stays silent
		return nil
	}
	if p := f.cfg.LowPower.Period; p > 0 {
		time.AfterFunc(time.Duration(unit("wake", d.id)*float64(p)), d.wakeCycle)
		return nil
	}
	if err := d.connect(); err != nil {
		f.stats.connectErrors.Add(1)
		f.cfg.Logger.Debug("connect failed", "device", d.id, "error", err)
		go func() {
			t := time.NewTimer(time.Second + time.Duration(unit("retry", d.id)*float64(time.Second)))
			defer t.Stop()
			select {
			case <-t.C:
				d.reconnect()
			case <-f.done:
			}
		}()
	}
	return nil
}

// Stop disconnects every device and stops every timer's work. It waits for
// the disconnections (bounded by ctx), then writes the state file.
func (f *Fleet) Stop(ctx context.Context) error {
	f.stopOnce.Do(func() {
		f.stopped.Store(true)
		close(f.done)
	})
	err := f.disconnectAll(ctx)
	if f.state != nil {
		if f.started.Load() {
			<-f.flushed
		}
		if ferr := f.state.flush(); ferr != nil {
			err = errors.Join(err, fmt.Errorf("sim: %w", ferr))
		}
	}
	return err
}

func (f *Fleet) disconnectAll(ctx context.Context) error {
	work := make(chan *device)
	var wg sync.WaitGroup
	for range min(64, len(f.devs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				d.mu.Lock()
				cl := d.cl
				d.goOffline()
				if d.crashTimer != nil {
					d.crashTimer.Stop()
				}
				d.mu.Unlock()
				if cl != nil && cl.IsConnectionOpen() {
					cl.Disconnect(0)
				}
			}
		}()
	}
	defer wg.Wait()
	defer close(work)
	for _, d := range f.devs {
		select {
		case work <- d:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Wait blocks until every device in want has firmware version or ctx ends.
// It is for tests and scripted rehearsals.
func (f *Fleet) WaitFirmware(ctx context.Context, version string, devices ...int) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		all := true
		for _, i := range devices {
			if f.Firmware(i) != version {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func defaultTLS() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }

// counters are the fleet's live counts.
type counters struct {
	startedAt, connectDoneAt atomic.Int64

	registered, setupErrors             atomic.Int64
	connected, connects, connectErrors  atomic.Int64
	lost, subscribeErrors, badMessages  atomic.Int64
	reports, deltas, gets, telemetry    atomic.Int64
	acted, ignored                      atomic.Int64
	otaStarted, otaSucceeded, otaFailed atomic.Int64
	// Real downloads (download.go).
	downloadRequests, downloadResumes, downloadBytes, downloadsVerified atomic.Int64
	reboots, crashes, gone                                              atomic.Int64
	wakes, wakeTimeouts                                                 atomic.Int64
}

// Stats is a snapshot of what the fleet has done.
type Stats struct {
	Devices         int   `json:"devices"`
	Registered      int64 `json:"registered"`
	SetupErrors     int64 `json:"setup_errors"`
	Connected       int64 `json:"connected"` // now
	Connects        int64 `json:"connects"`  // successful connections, reconnections included
	ConnectErrors   int64 `json:"connect_errors"`
	ConnectionsLost int64 `json:"connections_lost"`
	SubscribeErrors int64 `json:"subscribe_errors"`
	Reports         int64 `json:"reports"`
	Deltas          int64 `json:"deltas"`
	Gets            int64 `json:"gets"`
	Telemetry       int64 `json:"telemetry"`
	Acted           int64 `json:"acted_keys"`
	Ignored         int64 `json:"ignored_keys"`
	OTAStarted      int64 `json:"ota_started"`
	OTASucceeded    int64 `json:"ota_succeeded"`
	OTAFailed       int64 `json:"ota_failed"`
	Reboots         int64 `json:"reboots"`
	Crashes         int64 `json:"crashes"`
	Gone            int64 `json:"gone"`
	Wakes           int64 `json:"wakes"`
	WakeTimeouts    int64 `json:"wake_timeouts"`
	BadMessages     int64 `json:"bad_messages"`
	// Real downloads (Config.Download): HTTP requests made, of which
	// resumes after a dropped connection, bytes received, images whose
	// size, SHA-256 (and signature) verified.
	DownloadRequests  int64 `json:"download_requests,omitempty"`
	DownloadResumes   int64 `json:"download_resumes,omitempty"`
	DownloadBytes     int64 `json:"download_bytes,omitempty"`
	DownloadsVerified int64 `json:"downloads_verified,omitempty"`
	// ConnectPhase is how long Start took to make every first attempt (0
	// while it runs).
	ConnectPhase time.Duration `json:"connect_phase_ns"`
	Elapsed      time.Duration `json:"elapsed_ns"`
}

// Stats returns the current counts.
func (f *Fleet) Stats() Stats {
	s := &f.stats
	st := Stats{
		Devices: len(f.devs), Registered: s.registered.Load(), SetupErrors: s.setupErrors.Load(),
		Connected: s.connected.Load(), Connects: s.connects.Load(), ConnectErrors: s.connectErrors.Load(),
		ConnectionsLost: s.lost.Load(), SubscribeErrors: s.subscribeErrors.Load(),
		Reports: s.reports.Load(), Deltas: s.deltas.Load(), Gets: s.gets.Load(), Telemetry: s.telemetry.Load(),
		Acted: s.acted.Load(), Ignored: s.ignored.Load(),
		OTAStarted: s.otaStarted.Load(), OTASucceeded: s.otaSucceeded.Load(), OTAFailed: s.otaFailed.Load(),
		Reboots: s.reboots.Load(), Crashes: s.crashes.Load(), Gone: s.gone.Load(),
		Wakes: s.wakes.Load(), WakeTimeouts: s.wakeTimeouts.Load(), BadMessages: s.badMessages.Load(),
		DownloadRequests: s.downloadRequests.Load(), DownloadResumes: s.downloadResumes.Load(),
		DownloadBytes: s.downloadBytes.Load(), DownloadsVerified: s.downloadsVerified.Load(),
	}
	if t0 := s.startedAt.Load(); t0 != 0 {
		st.Elapsed = time.Since(time.Unix(0, t0))
		if t1 := s.connectDoneAt.Load(); t1 != 0 {
			st.ConnectPhase = time.Duration(t1 - t0)
		}
	}
	return st
}

// Progress writes one line every interval until ctx ends: devices
// connected, connections per second over the interval, errors, and the
// traffic counts. It returns when ctx ends.
func (f *Fleet) Progress(ctx context.Context, w io.Writer, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	prev := f.Stats()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := f.Stats()
		rate := float64(s.Connects-prev.Connects) / every.Seconds()
		fmt.Fprintf(w, "%7.1fs  connected %d/%d (%.0f/s)  errors %d  reports %d  deltas %d  telemetry %d  ota %d ok %d failed  wakes %d\n",
			s.Elapsed.Seconds(), s.Connected, s.Devices, rate, s.ConnectErrors+s.SetupErrors+s.SubscribeErrors,
			s.Reports, s.Deltas, s.Telemetry, s.OTASucceeded, s.OTAFailed, s.Wakes)
		prev = s
	}
}

// each runs work for every device, Concurrency at a time, until ctx ends;
// it returns the first error work returned. With failFast the first error
// also cancels the context of the work under way and starts no more.
func (f *Fleet) each(ctx context.Context, failFast bool, work func(context.Context, *device) error) error {
	g := &errgroup.Group{}
	if failFast {
		g, ctx = errgroup.WithContext(ctx)
	}
	g.SetLimit(max(1, min(f.cfg.Concurrency, len(f.devs))))
	var first error
	var once sync.Once
	for _, d := range f.devs {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if ctx.Err() != nil {
				return nil
			}
			err := work(ctx, d)
			if err != nil {
				once.Do(func() { first = err })
			}
			if failFast {
				return err
			}
			return nil
		})
	}
	_ = g.Wait()
	return first
}
