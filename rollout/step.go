package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/tidwall/gjson"

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
		if r.terminal() || r.State == StateCreated {
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

// evaluate updates the state of notified devices: success, failure, health
// and timeouts.
func (e *Engine) evaluate(ctx context.Context, r *Rollout, now time.Time, changed map[string]bool) {
	for th, d := range r.devices {
		if d.State != DevNotified && d.State != DevInProgress {
			continue
		}
		w := r.Spec.Waves[d.Wave]
		set := func(s DeviceState, reason string) {
			d.State, d.Reason, d.FinishedAt = s, reason, now.UnixMilli()
			r.dirty[th] = true
			r.event(now.UnixMilli(), "device_"+string(s), d.Wave, th, reason)
		}
		if changed[th] || r.fresh {
			if e.cfg.Fleet.MatchThing(r.parsed.success, th) {
				set(DevSucceeded, "")
				continue
			}
			if r.parsed.failure != nil && e.cfg.Fleet.MatchThing(r.parsed.failure, th) {
				set(DevFailed, "failure condition")
				continue
			}
			if r.parsed.healthErr != nil && e.cfg.Fleet.MatchThing(r.parsed.healthErr, th) {
				set(DevFailed, "health: error condition")
				continue
			}
			if len(r.Spec.Health.IncreaseOf) > 0 {
				reported := e.reported(ctx, r, th)
				for _, f := range r.Spec.Health.IncreaseOf {
					if v := gjson.Get(reported, f); v.Exists() && v.Float() > d.Baseline[f] {
						set(DevFailed, fmt.Sprintf("health: %s rose from %v to %v", f, d.Baseline[f], v.Float()))
						break
					}
				}
				if d.State.finished() {
					continue
				}
			}
			if d.State == DevNotified {
				d.State = DevInProgress // the device answered but is not done
				r.dirty[th] = true
			}
		}
		if win := time.Duration(r.Spec.Health.OfflineWindow); win > 0 {
			if c, ok := e.cfg.Fleet.Connectivity(th); ok && !c.Connected && c.LastDisconnect > 0 &&
				now.UnixMilli()-max(c.LastDisconnect, d.NotifiedAt) > win.Milliseconds() {
				set(DevFailed, fmt.Sprintf("health: offline for more than %s", win))
				continue
			}
		}
		timeout := time.Duration(w.DeviceTimeout)
		if timeout == 0 {
			timeout = time.Hour
		}
		if now.UnixMilli()-d.NotifiedAt > timeout.Milliseconds() {
			set(DevTimedOut, fmt.Sprintf("no success within %s", timeout))
		}
	}
	r.fresh = false
}

// breach returns why the rollout must halt: a wave (current or earlier)
// whose failures exceed its threshold once enough devices finished.
func (r *Rollout) breach() string {
	for w := 0; w <= r.Wave && w < len(r.order); w++ {
		spec := r.Spec.Waves[w]
		var failed, finished int
		for _, th := range r.order[w] {
			switch r.devices[th].State {
			case DevFailed, DevTimedOut:
				failed++
				finished++
			case DevSucceeded:
				finished++
			}
		}
		if failed == 0 || finished < max(spec.MinFinished, 1) {
			continue
		}
		if pct := 100 * float64(failed) / float64(finished); pct > spec.FailureThreshold {
			return fmt.Sprintf("wave %s: %d of %d finished devices failed (%.1f%% > %.1f%%)", spec.Name, failed, finished, pct, spec.FailureThreshold)
		}
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
	var wg sync.WaitGroup
	work := make(chan *Device)
	for range min(e.cfg.Workers, len(batch)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				e.notifyDevice(ctx, r, d, now)
			}
		}()
	}
	for _, d := range batch {
		work <- d
	}
	close(work)
	wg.Wait()
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
	d.Previous = map[string]json.RawMessage{}
	gjson.ParseBytes(r.Spec.Patch).ForEach(func(k, _ gjson.Result) bool {
		key := gjson.Escape(k.String())
		// Under convergence pruning a key absent from desired is where the
		// device reported it, so that is the value to return to.
		prev := gjson.GetBytes(doc, "state.desired."+key)
		if !prev.Exists() {
			prev = gjson.GetBytes(doc, "state.reported."+key)
		}
		if prev.Exists() {
			d.Previous[k.String()] = json.RawMessage(prev.Raw)
		} else {
			d.Previous[k.String()] = json.RawMessage("null")
		}
		return true
	})
	if len(r.Spec.Health.IncreaseOf) > 0 {
		d.Baseline = map[string]float64{}
		for _, f := range r.Spec.Health.IncreaseOf {
			d.Baseline[f] = gjson.GetBytes(doc, "state.reported."+f).Float()
		}
	}
	payload := fmt.Appendf(nil, `{"state":{"desired":%s}}`, r.Spec.Patch)
	resp := e.cfg.Shadows.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpUpdate, Payload: payload, Origin: shadow.OriginInternal, Principal: "rollout:" + r.ID})
	if resp.Err != nil {
		d.State, d.Reason, d.FinishedAt = DevFailed, "notify: "+resp.Err.Message, now.UnixMilli()
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

func (e *Engine) reported(ctx context.Context, r *Rollout, thing string) string {
	return gjson.GetBytes(e.get(ctx, shadow.Ref{Thing: thing, Name: r.Spec.Shadow}), "state.reported").Raw
}

// rollback restores the previous desired values on every touched device.
func (e *Engine) rollback(ctx context.Context, r *Rollout, now time.Time, why string) {
	r.skipPending()
	restored, failed := 0, 0
	for th, d := range r.devices {
		if d.NotifiedAt == 0 || d.RolledBack || len(d.Previous) == 0 {
			continue
		}
		patch, _ := json.Marshal(d.Previous)
		resp := e.cfg.Shadows.Handle(ctx, shadow.Request{Ref: shadow.Ref{Thing: th, Name: r.Spec.Shadow}, Op: shadow.OpUpdate,
			Payload: fmt.Appendf(nil, `{"state":{"desired":%s}}`, patch), Origin: shadow.OriginInternal, Principal: "rollout:" + r.ID + ":rollback"})
		if resp.Err != nil {
			failed++
			r.event(now.UnixMilli(), "rollback_failed", d.Wave, th, resp.Err.Message)
			continue
		}
		d.RolledBack = true
		r.dirty[th] = true
		restored++
	}
	r.State = StateRolledBack
	r.event(now.UnixMilli(), "rolled_back", r.Wave, "", fmt.Sprintf("%s; restored %d devices, %d failed", why, restored, failed))
}
