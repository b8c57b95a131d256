package rollout

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"
	"strings"

	"github.com/umbra-iot/umbra/internal/awsjobs"
)

// Executions queues and reads AWS IoT Jobs executions (awsjobs.Service):
// how a job or rollout with a job document reaches its devices.
type Executions interface {
	PutJob(ctx context.Context, jobID string, doc json.RawMessage) error
	Queue(ctx context.Context, jobID, thing string) (bool, error)
	Cancel(ctx context.Context, jobID string, force bool) (int, error)
	Get(thing, jobID string) (awsjobs.Execution, bool)
	Executions(jobID string) ([]awsjobs.Execution, error)
}

// ExecutionChanged marks a thing whose job execution changed for
// re-evaluation at the next step (like ShadowChanged; never blocks).
func (e *Engine) ExecutionChanged(thing string) { e.ShadowChanged(thing) }

// detailsText renders statusDetails as "k=v, k=v" in key order.
func detailsText(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := ""
	for i, k := range keys {
		if i > 0 {
			out += ", "
		}
		out += k + "=" + m[k]
	}
	return out
}

// executionFailed reports whether thing's execution of a job-delivered
// rollout ended in failure: the device state it maps to (FAILED and
// REJECTED fail, TIMED_OUT times out) and "STATUS (statusDetails)".
func (e *Engine) executionFailed(r *Rollout, thing string) (DeviceState, string, bool) {
	if !r.parsed.jobMode || e.cfg.Executions == nil {
		return "", "", false
	}
	x, ok := e.cfg.Executions.Get(thing, r.ID)
	if !ok || !x.Status.Failure() {
		return "", "", false
	}
	v := string(x.Status)
	if d := detailsText(x.StatusDetails); d != "" {
		v += " (" + d + ")"
	}
	if x.Status == awsjobs.TimedOut {
		return DevTimedOut, v, true
	}
	return DevFailed, v, true
}

func (e *Engine) executionFailedNow(r *Rollout, thing string) bool {
	_, _, failed := e.executionFailed(r, thing)
	return failed
}

// observeExecution reads a job-delivered device's execution: its
// statusDetails are the device's update progress (status from its status,
// progress from statusDetails.progress, error from statusDetails.reason or
// .error on failure); it matches once SUCCEEDED (and the success condition,
// when the spec gives one).
func (e *Engine) observeExecution(r *Rollout, thing string, d *Device, doc []byte) bool {
	x, ok := e.cfg.Executions.Get(thing, r.ID)
	if !ok {
		return false
	}
	ota := &OTAProgress{Status: strings.ToLower(string(x.Status))}
	if p, err := strconv.ParseFloat(x.StatusDetails["progress"], 64); err == nil {
		ota.Progress = &p
	}
	if x.Status.Failure() {
		ota.Error = x.StatusDetails["reason"]
		if ota.Error == "" {
			ota.Error = x.StatusDetails["error"]
		}
	}
	if !ota.equal(d.OTA) {
		d.OTA = ota
		r.dirty[thing] = true
	}
	if x.Status != awsjobs.Succeeded {
		return false
	}
	return r.parsed.success == nil || e.cfg.Fleet.MatchThingShadow(r.parsed.success, thing, r.Spec.Shadow, doc)
}

// endDelivery cancels a job-delivered rollout's QUEUED executions (AWS's
// abort: IN_PROGRESS ones run on) when it halts, is cancelled or rolls back.
func (e *Engine) endDelivery(ctx context.Context, r *Rollout) {
	if !r.parsed.jobMode || e.cfg.Executions == nil {
		return
	}
	if _, err := e.cfg.Executions.Cancel(ctx, r.ID, false); err != nil {
		e.cfg.Logger.Error("cancel queued job executions", "rollout", r.ID, "error", err)
	}
}
