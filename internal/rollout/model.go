package rollout

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/umbra-iot/umbra/registry/query"
)

// Duration is a time.Duration written as "10m" in JSON.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"10m\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// Spec describes a rollout.
type Spec struct {
	Name   string          `json:"name"`
	Target string          `json:"target"`           // fleet query selecting the devices
	Shadow string          `json:"shadow,omitempty"` // named shadow; "" is the classic one
	Patch  json.RawMessage `json:"patch,omitempty"`  // desired patch, an object
	// JobDocument, instead of Patch, delivers the rollout through the AWS
	// IoT Jobs device API: each notified device gets a QUEUED execution of
	// this job document (job id = the rollout id). A device succeeds when its
	// execution is SUCCEEDED (and matches successCondition, when given); an
	// execution FAILED or REJECTED fails it, TIMED_OUT times it out (gate
	// "jobExecution", with the statusDetails as the value); the health gates
	// apply as with desired state. Halting, cancelling or rolling back
	// cancels the executions still QUEUED.
	JobDocument json.RawMessage `json:"jobDocument,omitempty"`
	// Artifact references a stored firmware image (id, id prefix or
	// type@version) instead of a raw URL: each device's desired state gets
	// its own download URL (ota_url) and the image's target_version,
	// ota_sha256, ota_size (and ota_signature). Stored as the id. With
	// JobDocument, the document refers to the image with placeholders
	// (${umbra:artifact.url}, .sha256, .size, .version, .signature) that
	// each device reads replaced by its own values, the URL minted when it
	// reads the document (see awsjobs.RenderDocument).
	Artifact string `json:"artifact,omitempty"`
	// Success is a query a device must match to count as updated; default
	// shadow.reported.firmware_version:<patch.target_version>.
	Success string `json:"successCondition,omitempty"`
	// Failure is a query that marks a device failed, e.g.
	// shadow.reported.ota_status:failed.
	Failure string     `json:"failureCondition,omitempty"`
	Health  Health     `json:"health,omitempty"`
	Waves   []WaveSpec `json:"waves"`
	// OnFailure is "halt" (default) or "rollback".
	OnFailure string `json:"onFailure,omitempty"`
	Rate      Rate   `json:"rate,omitempty"`
	// RollbackPatch, when set, is written as desired on every touched
	// device at rollback, over the restored values: e.g. the previous
	// firmware's target_version and ota_url, so devices that installed the
	// new firmware are actually downgraded. Without it rollback restores
	// desired values only and installed firmware stays installed.
	RollbackPatch json.RawMessage `json:"rollbackPatch,omitempty"`
	// AllowEmpty lets a rollout be created or started when its target or a
	// wave selects no device (refused otherwise).
	AllowEmpty bool `json:"allowEmpty,omitempty"`
	// Plan, when set (from a preview), freezes the waves with the
	// preview's seed and makes create/start refuse if the plan differs from
	// what the preview showed.
	Plan *PlanToken `json:"plan,omitempty"`
}

// PlanToken ties a rollout to a preview: Seed orders the targets (instead
// of the rollout id), Fingerprint is a hash of the previewed wave
// membership and Counts its wave sizes.
type PlanToken struct {
	Seed        string `json:"seed"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Counts      []int  `json:"counts,omitempty"`
}

// Health are device health signals watched besides the failure condition.
type Health struct {
	// OfflineWindow: a notified device that has been offline longer than
	// this (and did not succeed) fails. Zero disables.
	OfflineWindow Duration `json:"offlineWindow,omitempty"`
	// ErrorCondition: a query a healthy device does not match, e.g.
	// shadow.reported.error_state:panic.
	ErrorCondition string `json:"errorCondition,omitempty"`
	// IncreaseOf: reported fields (e.g. "crash_count") that must not grow
	// after the device was notified.
	IncreaseOf []string `json:"increaseOf,omitempty"`
}

// WaveSpec is one phase.
type WaveSpec struct {
	Name string `json:"name"`
	// Query selects the wave's devices among the remaining targets, or
	// Percent takes that share (rounded up) of the remaining targets.
	Query   string  `json:"query,omitempty"`
	Percent float64 `json:"percent,omitempty"`
	// DeviceTimeout: a device not finished this long after notification
	// times out (counts as failed). Zero: 1 hour.
	DeviceTimeout Duration `json:"deviceTimeout,omitempty"`
	// MinFinished devices must have finished before the wave is judged.
	MinFinished int `json:"minFinished,omitempty"`
	// SuccessThreshold: % of the wave that must succeed (default 100).
	SuccessThreshold *float64 `json:"successThreshold,omitempty"`
	// FailureThreshold: % of finished devices failed that halts (default 0:
	// any failure).
	FailureThreshold float64  `json:"failureThreshold,omitempty"`
	BakeTime         Duration `json:"bakeTime,omitempty"`
	RequireApproval  bool     `json:"requireApproval,omitempty"`
}

// Rate limits notifications (AWS Jobs' rollout rate semantics).
type Rate struct {
	MaxPerMinute int `json:"maxPerMinute,omitempty"` // 0: unlimited
	// Exponential ramp-up: start at BasePerMinute, multiply by
	// IncrementFactor each time IncreaseEvery more devices were notified
	// (or succeeded, per Criteria), capped by MaxPerMinute when set.
	BasePerMinute   int     `json:"baseRatePerMinute,omitempty"`
	IncrementFactor float64 `json:"incrementFactor,omitempty"`
	IncreaseEvery   int     `json:"increaseEvery,omitempty"`
	Criteria        string  `json:"criteria,omitempty"` // "notified" (default) or "succeeded"
}

// State of a rollout.
type State string

const (
	StateCreated    State = "created"
	StateRunning    State = "running"
	StatePaused     State = "paused"
	StateWaiting    State = "waiting_approval"
	StateBaking     State = "baking"
	StateHalted     State = "halted"
	StateCompleted  State = "completed"
	StateCancelled  State = "cancelled"
	StateRolledBack State = "rolled_back"
)

// DeviceState of one device in a rollout.
type DeviceState string

const (
	DevPending    DeviceState = "pending"
	DevNotified   DeviceState = "notified"
	DevInProgress DeviceState = "in_progress"
	DevSucceeded  DeviceState = "succeeded"
	DevFailed     DeviceState = "failed"
	DevTimedOut   DeviceState = "timed_out"
	// DevRegressed: succeeded, then broke a health gate or the failure
	// condition while the rollout ran; counts as failed for its wave.
	DevRegressed  DeviceState = "regressed"
	DevRolledBack DeviceState = "rolled_back"
	DevSkipped    DeviceState = "skipped"
)

func (s DeviceState) finished() bool {
	return s == DevSucceeded || s.failed()
}

func (s DeviceState) failed() bool {
	return s == DevFailed || s == DevTimedOut || s == DevRegressed
}

// Failure is which gate a device broke, with what value, and when.
type Failure struct {
	Gate  string `json:"gate"`            // successCondition, failureCondition, health.errorCondition, health.increaseOf, health.offlineWindow, deviceTimeout, notify
	Value string `json:"value,omitempty"` // the reported value(s) that broke it
	Time  int64  `json:"time"`            // Unix ms (engine clock) when the engine saw it
}

// OTAProgress is a device's own report of its update, read from
// reported.ota_status (downloading, installing, rebooting, succeeded,
// failed), reported.ota_progress (0-100) and reported.ota_error.
type OTAProgress struct {
	Status   string   `json:"status,omitempty"`
	Progress *float64 `json:"progress,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// Device is one device's progress.
type Device struct {
	Thing      string      `json:"thing"`
	Wave       int         `json:"wave"`
	State      DeviceState `json:"state"`
	Reason     string      `json:"reason,omitempty"`
	NotifiedAt int64       `json:"notifiedAt,omitempty"` // Unix ms
	// URLAt is when the device's artifact download URL (ota_url) was last
	// written again (Unix ms; 0: only at NotifiedAt): see refreshURL.
	URLAt      int64 `json:"urlAt,omitempty"`
	FinishedAt int64 `json:"finishedAt,omitempty"`
	// Previous holds, per patched key, the desired value before the
	// rollout (JSON null when absent): what rollback restores.
	Previous map[string]json.RawMessage `json:"previous,omitempty"`
	// Baseline holds the watched counters at notification.
	Baseline map[string]float64 `json:"baseline,omitempty"`
	// RolledBack is set once rollback restored this device; State is then
	// rolled_back and Before the state it had.
	RolledBack bool        `json:"rolledBack,omitempty"`
	Before     DeviceState `json:"before,omitempty"`
	// Failure details why it failed or regressed.
	Failure *Failure `json:"failure,omitempty"`
	// SucceededAt is when it first matched the success condition.
	SucceededAt int64 `json:"succeededAt,omitempty"`
	// Installed: the device matched the success condition when last seen
	// (it runs the new firmware), whatever its rollout state.
	Installed bool `json:"installed,omitempty"`
	// OTA is the device's last reported update progress.
	OTA *OTAProgress `json:"ota,omitempty"`
}

// Event is a rollout transition.
type Event struct {
	Time    int64  `json:"time"` // Unix ms
	Type    string `json:"type"` // started, wave_started, device_succeeded, halted, ...
	Wave    int    `json:"wave"`
	Thing   string `json:"thing,omitempty"`
	Message string `json:"message,omitempty"`
}

// Rollout is a rollout and its progress.
type Rollout struct {
	ID        string `json:"id"`
	Spec      Spec   `json:"spec"`
	State     State  `json:"state"`
	Reason    string `json:"reason,omitempty"` // why it halted
	Wave      int    `json:"currentWave"`
	CreatedAt int64  `json:"createdAt"`
	UpdatedAt int64  `json:"updatedAt"`
	// WaveStarted, BakeUntil: Unix ms of the current wave's start and the
	// end of its bake time.
	WaveStarted int64 `json:"waveStartedAt,omitempty"`
	BakeUntil   int64 `json:"bakeUntil,omitempty"`
	Approved    []int `json:"approvedWaves,omitempty"`
	// Notified counts notifications (for exponential rate), RateWindow
	// holds the notification times of the last minute.
	Notified   int     `json:"notified"`
	RateWindow []int64 `json:"rateWindow,omitempty"`
	Events     []Event `json:"events"`

	// PausedFrom is the state Resume returns to.
	PausedFrom State `json:"pausedFrom,omitempty"`

	// fresh makes the next step re-evaluate every notified device (after
	// loading, when changes may have happened while the engine was down).
	fresh bool

	devices     map[string]*Device // by thing
	unannounced []Event            // events not yet published
	order       [][]string         // per wave, thing names in notification order
	parsed      parsedSpec
	dirty       map[string]bool // devices changed since the last save
}

// parsedSpec holds the compiled queries of a spec.
type parsedSpec struct {
	target, success, failure, healthErr *query.Query
	waves                               []*query.Query
	successText                         string
	// jobMode: delivered through a job document (Spec.JobDocument).
	jobMode bool
}

func (r *Rollout) successCondition() string { return r.parsed.successText }

// WaveProgress counts one wave's devices by state. State is the wave's
// badge: pending, running, baking, waiting_approval, paused, passed,
// failed (its failures broke the threshold), halted, cancelled,
// rolled_back or not_reached (the rollout ended before it started).
type WaveProgress struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Size       int    `json:"size"`
	Pending    int    `json:"pending"`
	Notified   int    `json:"notified"`
	InProgress int    `json:"inProgress"` // notified or in progress
	Succeeded  int    `json:"succeeded"`
	Failed     int    `json:"failed"` // failed, timed out or regressed
	Regressed  int    `json:"regressed"`
	RolledBack int    `json:"rolledBack"`
	Skipped    int    `json:"skipped"`
	// Installed counts devices that run the new version (matched the
	// success condition when last seen), rolled back or not.
	Installed int `json:"installed"`
}

func (r *Rollout) progress() []WaveProgress {
	out := make([]WaveProgress, len(r.Spec.Waves))
	for i, w := range r.Spec.Waves {
		out[i].Name = w.Name
		if i < len(r.order) {
			out[i].Size = len(r.order[i])
			for _, th := range r.order[i] {
				d := r.devices[th]
				st := d.State
				if st == DevRolledBack {
					out[i].RolledBack++
					st = d.Before
				}
				switch st {
				case DevPending:
					out[i].Pending++
				case DevNotified:
					out[i].Notified++
					out[i].InProgress++
				case DevInProgress:
					out[i].InProgress++
				case DevSucceeded:
					out[i].Succeeded++
				case DevFailed, DevTimedOut:
					out[i].Failed++
				case DevRegressed:
					out[i].Failed++
					out[i].Regressed++
				case DevSkipped:
					out[i].Skipped++
				}
				if d.Installed {
					out[i].Installed++
				}
			}
		}
		out[i].State = r.waveState(i)
	}
	return out
}

// waveState is wave i's badge.
func (r *Rollout) waveState(i int) string {
	started := i < len(r.order) && (i < r.Wave || i == r.Wave && r.WaveStarted > 0 && r.State != StateWaiting && r.State != StateCreated)
	if started && r.waveBreach(i) != "" {
		return "failed"
	}
	if r.State == StateRolledBack && started {
		return "rolled_back"
	}
	switch {
	case i < r.Wave:
		return "passed"
	case i > r.Wave:
		if r.terminal() {
			return "not_reached"
		}
		return "pending"
	}
	switch r.State {
	case StateCreated:
		return "pending"
	case StateRunning:
		return "running"
	case StatePaused:
		if r.PausedFrom == StateBaking {
			return "baking"
		}
		return "paused"
	case StateCompleted:
		return "passed"
	}
	if !started && r.terminal() {
		return "not_reached"
	}
	return string(r.State)
}
