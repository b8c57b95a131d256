package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"golang.org/x/sync/errgroup"

	"github.com/umbra-iot/umbra/shadow"
)

// Step advances every active rollout and job to now.
func (e *Engine) Step(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Clock()
	e.changedMu.Lock()
	changed := e.changed
	e.changed = map[string]bool{}
	e.changedMu.Unlock()
	for _, r := range e.rollouts {
		if r.State == StateCreated {
			continue
		}
		if r.terminal() {
			if len(changed) > 0 && r.State != StateCompleted {
				e.settle(ctx, r, now, changed)
				if len(r.dirty) > 0 || len(r.unannounced) > 0 {
					if err := e.persist(ctx, r); err != nil {
						e.cfg.Logger.Error("save rollout", "rollout", r.ID, "error", err)
					}
				}
			}
			continue
		}
		e.stepRollout(ctx, r, now, changed)
		if err := e.persist(ctx, r); err != nil {
			e.cfg.Logger.Error("save rollout", "rollout", r.ID, "error", err)
		}
	}
	e.stepJobs(ctx, now, changed)
}

func (e *Engine) stepRollout(ctx context.Context, r *Rollout, now time.Time, changed map[string]bool) {
	e.evaluate(ctx, r, now, changed)
	if reason := r.breach(); reason != "" {
		r.Reason = reason
		if r.Spec.OnFailure == "rollback" {
			e.rollback(ctx, r, now, reason)
			return
		}
		r.skipPending()
		e.endDelivery(ctx, r)
		r.State = StateHalted
		r.event(now.UnixMilli(), "halted", r.Wave, "", reason)
		return
	}
	switch r.State {
	case StateRunning:
		e.notify(ctx, r, now)
		if done, ok, why := r.waveResult(r.Wave); done {
			if !ok {
				r.Reason = why
				r.skipPending()
				e.endDelivery(ctx, r)
				r.State = StateHalted
				r.event(now.UnixMilli(), "halted", r.Wave, "", why)
				return
			}
			r.event(now.UnixMilli(), "wave_succeeded", r.Wave, "", "")
			if bake := time.Duration(r.Spec.Waves[r.Wave].BakeTime); bake > 0 {
				r.State, r.BakeUntil = StateBaking, now.Add(bake).UnixMilli()
				r.event(now.UnixMilli(), "baking", r.Wave, "", "until "+now.Add(bake).UTC().Format(time.RFC3339))
				return
			}
			e.enterWave(r, r.Wave+1, now)
		}
	case StateBaking:
		if now.UnixMilli() >= r.BakeUntil {
			e.enterWave(r, r.Wave+1, now)
		}
	}
}

// evaluate watches every device the rollout touched, in every started
// wave, until the rollout ends (see the package doc for the rules).
func (e *Engine) evaluate(ctx context.Context, r *Rollout, now time.Time, changed map[string]bool) {
	for th, d := range r.devices {
		switch d.State {
		case DevNotified, DevInProgress, DevSucceeded:
		default:
			continue
		}
		w := r.Spec.Waves[d.Wave]
		fail := func(s DeviceState, gate, value, reason string) {
			d.State, d.Reason, d.FinishedAt = s, reason, now.UnixMilli()
			d.Failure = &Failure{Gate: gate, Value: value, Time: now.UnixMilli()}
			r.dirty[th] = true
			r.event(now.UnixMilli(), "device_"+string(s), d.Wave, th, reason)
		}
		succeeded := d.State == DevSucceeded
		bad := DevFailed
		if succeeded {
			bad = DevRegressed
		}
		if changed[th] || r.fresh {
			doc, reported, matches := e.observe(ctx, r, th, d)
			if !succeeded && matches {
				d.State, d.Reason, d.FinishedAt, d.SucceededAt = DevSucceeded, "", now.UnixMilli(), now.UnixMilli()
				// The update's own reboot raises counters such as
				// boot_count: the values at success are the new baseline.
				d.Baseline = counters(r.Spec.Health.IncreaseOf, reported)
				r.dirty[th] = true
				r.event(now.UnixMilli(), "device_succeeded", d.Wave, th, "")
				continue
			}
			if st, v, failed := e.executionFailed(r, th); failed && !succeeded {
				fail(st, "jobExecution", v, "job execution "+v)
				continue
			}
			if r.parsed.failure != nil && e.cfg.Fleet.MatchThingShadow(r.parsed.failure, th, r.Spec.Shadow, doc) {
				v := conditionValues(r.Spec.Failure, reported)
				fail(bad, "failureCondition", v, "failure condition: "+v)
				continue
			}
			if r.parsed.healthErr != nil && e.cfg.Fleet.MatchThingShadow(r.parsed.healthErr, th, r.Spec.Shadow, doc) {
				v := conditionValues(r.Spec.Health.ErrorCondition, reported)
				fail(bad, "health.errorCondition", v, "health: error condition: "+v)
				continue
			}
			rose := false
			for _, f := range r.Spec.Health.IncreaseOf {
				if v := reported.Get(f); v.Exists() && v.Float() > d.Baseline[f] {
					fail(bad, "health.increaseOf", fmt.Sprintf("%s=%v", f, v.Float()),
						fmt.Sprintf("health: %s rose from %v to %v", f, d.Baseline[f], v.Float()))
					rose = true
					break
				}
			}
			if rose {
				continue
			}
			if succeeded && !matches {
				v := conditionValues(r.successCondition(), reported)
				fail(DevRegressed, "successCondition", v, "no longer matches the success condition: "+v)
				continue
			}
			if d.State == DevNotified {
				d.State = DevInProgress // the device answered but is not done
				r.dirty[th] = true
			}
		}
		if win := time.Duration(r.Spec.Health.OfflineWindow); win > 0 {
			since := max(d.NotifiedAt, d.SucceededAt)
			if c, ok := e.cfg.Fleet.Connectivity(th); ok && !c.Connected && c.LastDisconnect > 0 &&
				now.UnixMilli()-max(c.LastDisconnect, since) > win.Milliseconds() {
				fail(bad, "health.offlineWindow", time.UnixMilli(c.LastDisconnect).UTC().Format(time.RFC3339),
					fmt.Sprintf("health: offline for more than %s", win))
				continue
			}
		}
		if succeeded {
			continue
		}
		e.refreshURL(ctx, r, th, d, now)
		timeout := time.Duration(w.DeviceTimeout)
		if timeout == 0 {
			timeout = time.Hour
		}
		if now.UnixMilli()-d.NotifiedAt > timeout.Milliseconds() {
			fail(DevTimedOut, "deviceTimeout", timeout.String(), fmt.Sprintf("no success within %s", timeout))
		}
	}
	r.fresh = false
}

// observe reads a device's shadow once, records its OTA progress and
// whether it matches the success condition (installed), and returns the
// document, its reported state and the match. Every decision on the device
// reads this one document: the conditions are matched against it
// (Fleet.MatchThingShadow), not against the fleet index, which applies a
// committed change a moment after the commit. Otherwise a step between the
// two would see the update's reboot (boot_count up, read here) without its
// new firmware_version (not yet indexed) and fail a healthy device on
// health.increaseOf, or, the other way round, take the baseline from an
// older document than the success.
func (e *Engine) observe(ctx context.Context, r *Rollout, th string, d *Device) (doc []byte, reported gjson.Result, matches bool) {
	doc = e.get(ctx, shadow.Ref{Thing: th, Name: r.Spec.Shadow})
	reported = gjson.GetBytes(doc, "state.reported")
	if ota := readOTA(reported); !ota.equal(d.OTA) {
		d.OTA = ota
		r.dirty[th] = true
	}
	if r.parsed.jobMode {
		matches = e.observeExecution(r, th, d, doc)
	} else {
		matches = e.cfg.Fleet.MatchThingShadow(r.parsed.success, th, r.Spec.Shadow, doc)
	}
	if matches != d.Installed {
		d.Installed = matches
		r.dirty[th] = true
	}
	return doc, reported, matches
}

// settle follows, after a rollout ended, the devices whose update was
// still under way (or that were rolled back): their outcome and OTA
// progress keep the status truthful. It never halts nor writes shadows.
func (e *Engine) settle(ctx context.Context, r *Rollout, now time.Time, changed map[string]bool) {
	for th := range changed {
		d, ok := r.devices[th]
		if !ok || d.NotifiedAt == 0 {
			continue
		}
		doc, reported, matches := e.observe(ctx, r, th, d)
		st := &d.State
		if d.State == DevRolledBack {
			st = &d.Before
		}
		switch {
		case (*st == DevNotified || *st == DevInProgress) && matches:
			*st, d.FinishedAt, d.SucceededAt = DevSucceeded, now.UnixMilli(), now.UnixMilli()
			r.dirty[th] = true
			r.event(now.UnixMilli(), "device_succeeded", d.Wave, th, "after the rollout ended")
		case (*st == DevNotified || *st == DevInProgress) && r.parsed.jobMode && e.executionFailedNow(r, th):
			status, v, _ := e.executionFailed(r, th)
			*st, d.Reason, d.FinishedAt = status, "job execution "+v, now.UnixMilli()
			d.Failure = &Failure{Gate: "jobExecution", Value: v, Time: now.UnixMilli()}
			r.dirty[th] = true
			r.event(now.UnixMilli(), "device_"+string(status), d.Wave, th, d.Reason+" (after the rollout ended)")
		case (*st == DevNotified || *st == DevInProgress) && r.parsed.failure != nil && e.cfg.Fleet.MatchThingShadow(r.parsed.failure, th, r.Spec.Shadow, doc):
			v := conditionValues(r.Spec.Failure, reported)
			*st, d.Reason, d.FinishedAt = DevFailed, "failure condition: "+v, now.UnixMilli()
			d.Failure = &Failure{Gate: "failureCondition", Value: v, Time: now.UnixMilli()}
			r.dirty[th] = true
			r.event(now.UnixMilli(), "device_failed", d.Wave, th, d.Reason+" (after the rollout ended)")
		case *st == DevNotified:
			*st = DevInProgress
			r.dirty[th] = true
		}
	}
}

func counters(fields []string, reported gjson.Result) map[string]float64 {
	if len(fields) == 0 {
		return nil
	}
	m := map[string]float64{}
	for _, f := range fields {
		m[f] = reported.Get(f).Float()
	}
	return m
}

func readOTA(reported gjson.Result) *OTAProgress {
	st, pr, er := reported.Get("ota_status"), reported.Get("ota_progress"), reported.Get("ota_error")
	if !st.Exists() && !pr.Exists() {
		return nil
	}
	o := &OTAProgress{Status: st.String()}
	if pr.Exists() {
		v := pr.Float()
		o.Progress = &v
	}
	if er.Exists() && o.Status == "failed" {
		o.Error = er.String()
	}
	return o
}

func (o *OTAProgress) equal(p *OTAProgress) bool {
	if o == nil || p == nil {
		return o == p
	}
	return o.Status == p.Status && o.Error == p.Error &&
		(o.Progress == nil) == (p.Progress == nil) && (o.Progress == nil || *o.Progress == *p.Progress)
}

var reportedField = regexp.MustCompile(`shadow\.(?:name\.[A-Za-z0-9:_-]+\.)?reported\.([A-Za-z0-9_.\-]+)`)

// conditionValues names the reported values a condition looks at
// ("reset_reason=panic"), or the condition itself when it names none.
func conditionValues(cond string, reported gjson.Result) string {
	var parts []string
	seen := map[string]bool{}
	for _, m := range reportedField.FindAllStringSubmatch(cond, -1) {
		f := m[1]
		if seen[f] {
			continue
		}
		seen[f] = true
		v := reported.Get(f)
		if !v.Exists() {
			parts = append(parts, f+" absent")
			continue
		}
		parts = append(parts, f+"="+v.String())
	}
	if len(parts) == 0 {
		return cond
	}
	return strings.Join(parts, ", ")
}

// breach returns why the rollout must halt: a wave (current or earlier)
// whose failures exceed its threshold once enough devices finished.
func (r *Rollout) breach() string {
	for w := 0; w <= r.Wave && w < len(r.order); w++ {
		if why := r.waveBreach(w); why != "" {
			return why
		}
	}
	return ""
}

func (r *Rollout) waveBreach(w int) string {
	spec := r.Spec.Waves[w]
	var failed, finished int
	var first *Device
	for _, th := range r.order[w] {
		d := r.devices[th]
		st := d.State
		if st == DevRolledBack {
			st = d.Before
		}
		switch {
		case st.failed():
			failed++
			finished++
			if first == nil || d.FinishedAt < first.FinishedAt {
				first = d
			}
		case st == DevSucceeded:
			finished++
		}
	}
	if failed == 0 || finished < max(spec.MinFinished, 1) {
		return ""
	}
	if pct := 100 * float64(failed) / float64(finished); pct > spec.FailureThreshold {
		why := fmt.Sprintf("wave %s: %d of %d finished devices failed (%.1f%% > %.1f%%)", spec.Name, failed, finished, pct, spec.FailureThreshold)
		if first != nil {
			why += fmt.Sprintf("; first: %s %s (%s)", first.Thing, first.State, first.Reason)
		}
		return why
	}
	return ""
}

// waveResult reports whether wave w is done and whether it passed.
func (r *Rollout) waveResult(w int) (done, ok bool, why string) {
	spec := r.Spec.Waves[w]
	var succeeded int
	for _, th := range r.order[w] {
		d := r.devices[th]
		if !d.State.finished() && d.State != DevSkipped {
			return false, false, ""
		}
		if d.State == DevSucceeded {
			succeeded++
		}
	}
	need := 100.0
	if spec.SuccessThreshold != nil {
		need = *spec.SuccessThreshold
	}
	if n := len(r.order[w]); n > 0 && 100*float64(succeeded)/float64(n) < need {
		return true, false, fmt.Sprintf("wave %s: %d of %d devices succeeded, below the %.1f%% success threshold", spec.Name, succeeded, n, need)
	}
	return true, true, ""
}

// allowance is how many devices may be notified now under the rate limit.
func (r *Rollout) allowance(now time.Time) int {
	rate := r.Spec.Rate
	perMinute := rate.MaxPerMinute
	if rate.BasePerMinute > 0 {
		count := r.Notified
		if rate.Criteria == "succeeded" {
			count = 0
			for _, d := range r.devices {
				if d.State == DevSucceeded {
					count++
				}
			}
		}
		exp := float64(rate.BasePerMinute) * math.Pow(rate.IncrementFactor, float64(count/rate.IncreaseEvery))
		if perMinute == 0 || exp < float64(perMinute) {
			perMinute = int(exp)
		}
	}
	if perMinute <= 0 {
		return math.MaxInt
	}
	cutoff := now.Add(-time.Minute).UnixMilli()
	kept := r.RateWindow[:0]
	for _, t := range r.RateWindow {
		if t > cutoff {
			kept = append(kept, t)
		}
	}
	r.RateWindow = kept
	return max(perMinute-len(kept), 0)
}

// notify writes the patch to the next pending devices of the current wave.
func (e *Engine) notify(ctx context.Context, r *Rollout, now time.Time) {
	budget := r.allowance(now)
	var batch []*Device
	for _, th := range r.order[r.Wave] {
		if len(batch) >= budget {
			break
		}
		if d := r.devices[th]; d.State == DevPending {
			batch = append(batch, d)
		}
	}
	if len(batch) == 0 {
		return
	}
	e.each(len(batch), func(i int) { e.notifyDevice(ctx, r, batch[i], now) })
	for _, d := range batch {
		r.dirty[d.Thing] = true
		if d.State == DevNotified {
			r.Notified++
			r.RateWindow = append(r.RateWindow, now.UnixMilli())
		} else {
			r.event(now.UnixMilli(), "device_"+string(d.State), d.Wave, d.Thing, d.Reason)
		}
	}
	r.event(now.UnixMilli(), "notified", r.Wave, "", fmt.Sprintf("%d devices", len(batch)))
}

// notifyDevice records what rollback would restore, then writes the patch.
func (e *Engine) notifyDevice(ctx context.Context, r *Rollout, d *Device, now time.Time) {
	ref := shadow.Ref{Thing: d.Thing, Name: r.Spec.Shadow}
	doc := e.get(ctx, ref)
	if r.parsed.jobMode {
		d.Baseline = counters(r.Spec.Health.IncreaseOf, gjson.GetBytes(doc, "state.reported"))
		if _, err := e.cfg.Executions.Queue(ctx, r.ID, d.Thing); err != nil {
			d.State, d.Reason, d.FinishedAt = DevFailed, "notify: "+err.Error(), now.UnixMilli()
			d.Failure = &Failure{Gate: "notify", Value: err.Error(), Time: now.UnixMilli()}
			return
		}
		d.State, d.NotifiedAt = DevNotified, now.UnixMilli()
		return
	}
	d.Previous = map[string]json.RawMessage{}
	patch := e.devicePatch(r.Spec.Patch, r.Spec.Artifact, d.Thing)
	gjson.ParseBytes(patch).ForEach(func(k, _ gjson.Result) bool {
		// Exactly what desired held: a key absent from desired is recorded
		// as null, which rollback writes to remove it again. A reported
		// value is never a desired one (it may be a version that failed).
		prev := gjson.GetBytes(doc, "state.desired."+gjson.Escape(k.String()))
		if prev.Exists() {
			d.Previous[k.String()] = json.RawMessage(prev.Raw)
		} else {
			d.Previous[k.String()] = json.RawMessage("null")
		}
		return true
	})
	d.Baseline = counters(r.Spec.Health.IncreaseOf, gjson.GetBytes(doc, "state.reported"))
	payload := fmt.Appendf(nil, `{"state":{"desired":%s}}`, patch)
	resp := e.cfg.Shadows.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpUpdate, Payload: payload, Origin: shadow.OriginInternal, Principal: "rollout:" + r.ID})
	if resp.Err != nil {
		d.State, d.Reason, d.FinishedAt = DevFailed, "notify: "+resp.Err.Message, now.UnixMilli()
		d.Failure = &Failure{Gate: "notify", Value: resp.Err.Message, Time: now.UnixMilli()}
		return
	}
	d.State, d.NotifiedAt = DevNotified, now.UnixMilli()
}

func (e *Engine) get(ctx context.Context, ref shadow.Ref) []byte {
	resp := e.cfg.Shadows.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpGet, Origin: shadow.OriginInternal})
	if resp.Err != nil {
		return nil
	}
	return resp.Payload
}

// rollback restores the previous desired values (and applies
// RollbackPatch over them) on every touched device.
func (e *Engine) rollback(ctx context.Context, r *Rollout, now time.Time, why string) {
	r.skipPending()
	e.endDelivery(ctx, r)
	restored, failed, installed := 0, 0, 0
	for th, d := range r.devices {
		if d.NotifiedAt == 0 || d.RolledBack {
			continue
		}
		desired := map[string]json.RawMessage{}
		for k, v := range d.Previous {
			desired[k] = v
		}
		if len(r.Spec.RollbackPatch) > 0 {
			_ = json.Unmarshal(r.Spec.RollbackPatch, &desired)
		}
		if len(desired) == 0 {
			continue
		}
		patch, _ := json.Marshal(desired)
		resp := e.cfg.Shadows.Handle(ctx, shadow.Request{Ref: shadow.Ref{Thing: th, Name: r.Spec.Shadow}, Op: shadow.OpUpdate,
			Payload: fmt.Appendf(nil, `{"state":{"desired":%s}}`, patch), Origin: shadow.OriginInternal, Principal: "rollout:" + r.ID + ":rollback"})
		if resp.Err != nil {
			failed++
			r.event(now.UnixMilli(), "rollback_failed", d.Wave, th, resp.Err.Message)
			continue
		}
		d.RolledBack, d.Before, d.State = true, d.State, DevRolledBack
		if d.Installed {
			installed++
		}
		r.dirty[th] = true
		restored++
	}
	r.State = StateRolledBack
	msg := fmt.Sprintf("%s; restored %d devices, %d failed", why, restored, failed)
	if len(r.Spec.RollbackPatch) > 0 {
		msg += "; rollbackPatch written"
	} else if installed > 0 {
		msg += fmt.Sprintf("; %d devices had installed the new version and keep it (no rollbackPatch)", installed)
	}
	r.event(now.UnixMilli(), "rolled_back", r.Wave, "", msg)
}

// each runs f(i) for i in [0, n), at most cfg.Workers at a time, and
// returns when all have: the engine's one worker pool.
func (e *Engine) each(n int, f func(i int)) {
	var g errgroup.Group
	g.SetLimit(e.cfg.Workers)
	for i := range n {
		g.Go(func() error {
			f(i)
			return nil
		})
	}
	_ = g.Wait()
}
