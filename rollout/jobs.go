package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/registry/query"
	"github.com/umbra-iot/umbra/shadow"
)

// JobSpec is a bulk configuration change: a desired patch written to every
// thing matching a query (or in a group), optionally only to things meeting
// a condition: the version gate that keeps old firmware from receiving a
// delta it can never clear.
type JobSpec struct {
	Name   string          `json:"name"`
	Target string          `json:"target,omitempty"` // fleet query
	Group  string          `json:"group,omitempty"`  // or a group
	Shadow string          `json:"shadow,omitempty"`
	Patch  json.RawMessage `json:"patch"`
	// Condition a thing must meet to receive the patch, e.g.
	// shadow.reported.firmware_version>=2.0.0. Others are ineligible.
	Condition string `json:"condition,omitempty"`
	// RatePerSecond caps things written per second; 0 is unlimited.
	RatePerSecond int `json:"ratePerSecond,omitempty"`
}

// JobState of a job.
type JobState string

const (
	JobRunning   JobState = "running"
	JobCompleted JobState = "completed" // every eligible thing written
	JobCancelled JobState = "cancelled"
)

// Job is a bulk configuration job.
type Job struct {
	ID        string   `json:"id"`
	Spec      JobSpec  `json:"spec"`
	State     JobState `json:"state"`
	CreatedAt int64    `json:"createdAt"`
	UpdatedAt int64    `json:"updatedAt"`
	// Targets in write order; Next is how many have been handled.
	Targets    []string `json:"targets"`
	Next       int      `json:"next"`
	Applied    []string `json:"applied"`
	Ineligible []string `json:"ineligible"`
	Errors     []string `json:"errors,omitempty"`

	condition *query.Query
}

func (j *Job) compile() error {
	if j.Spec.Condition == "" {
		return nil
	}
	q, err := query.Parse(j.Spec.Condition)
	if err != nil {
		return &FieldError{"condition", err.Error()}
	}
	j.condition = q
	return nil
}

// JobProgress counts a job's things.
type JobProgress struct {
	Targeted   int `json:"targeted"`
	Applied    int `json:"applied"`    // desired written
	Converged  int `json:"converged"`  // the device reported the values
	Pending    int `json:"pending"`    // applied, not converged, device offline
	Ineligible int `json:"ineligible"` // did not meet the condition
	Remaining  int `json:"remaining"`  // not handled yet
	Failed     int `json:"failed"`
}

// JobView is a job as the API shows it.
type JobView struct {
	ID         string      `json:"id"`
	Spec       JobSpec     `json:"spec"`
	State      JobState    `json:"state"`
	CreatedAt  int64       `json:"createdAt"`
	UpdatedAt  int64       `json:"updatedAt"`
	Progress   JobProgress `json:"progress"`
	Ineligible []string    `json:"ineligibleThings,omitempty"`
	Errors     []string    `json:"errors,omitempty"`
}

// CreateJob resolves the job's targets and starts writing at once (the
// first batch within this call).
func (e *Engine) CreateJob(ctx context.Context, s JobSpec) (JobView, error) {
	if strings.TrimSpace(s.Name) == "" {
		return JobView{}, &FieldError{"name", "a name is required"}
	}
	if (s.Target == "") == (s.Group == "") {
		return JobView{}, &FieldError{"target", "give a target query or a group (one of them)"}
	}
	if !gjson.ValidBytes(s.Patch) || !gjson.ParseBytes(s.Patch).IsObject() || len(gjson.ParseBytes(s.Patch).Map()) == 0 {
		return JobView{}, &FieldError{"patch", "the patch must be a non-empty JSON object of desired values"}
	}
	if s.Shadow != "" && !shadow.ValidShadowName(s.Shadow) {
		return JobView{}, &FieldError{"shadow", fmt.Sprintf("invalid shadow name %q", s.Shadow)}
	}
	if s.RatePerSecond < 0 {
		return JobView{}, &FieldError{"ratePerSecond", "must not be negative"}
	}
	target := s.Target
	if s.Group != "" {
		target = "thingGroupNames:" + quote(s.Group)
	}
	tq, err := query.Parse(target)
	if err != nil {
		return JobView{}, &FieldError{"target", err.Error()}
	}
	now := e.cfg.Clock().UnixMilli()
	j := &Job{ID: newID("job-"), Spec: s, State: JobRunning, CreatedAt: now, UpdatedAt: now}
	if err := j.compile(); err != nil {
		return JobView{}, err
	}
	j.Targets = e.cfg.Fleet.Search(tq, "", 1<<31-1).Things
	e.mu.Lock()
	defer e.mu.Unlock()
	e.jobs[j.ID] = j
	e.runJob(ctx, j, e.cfg.Clock())
	return e.jobView(j), e.saveJob(ctx, j)
}

// runJob writes the next batch of a running job.
func (e *Engine) runJob(ctx context.Context, j *Job, now time.Time) {
	if j.State != JobRunning {
		return
	}
	end := len(j.Targets)
	if j.Spec.RatePerSecond > 0 {
		end = min(end, j.Next+j.Spec.RatePerSecond)
	}
	batch := j.Targets[j.Next:end]
	type result struct {
		thing    string
		eligible bool
		err      string
	}
	results := make([]result, len(batch))
	payload := fmt.Appendf(nil, `{"state":{"desired":%s}}`, j.Spec.Patch)
	e.each(len(batch), func(i int) {
		th := batch[i]
		results[i].thing = th
		if j.condition != nil && !e.cfg.Fleet.MatchThing(j.condition, th) {
			return
		}
		results[i].eligible = true
		resp := e.cfg.Shadows.Handle(ctx, shadow.Request{Ref: shadow.Ref{Thing: th, Name: j.Spec.Shadow}, Op: shadow.OpUpdate,
			Payload: payload, Origin: shadow.OriginInternal, Principal: "job:" + j.ID})
		if resp.Err != nil {
			results[i].err = th + ": " + resp.Err.Message
		}
	})
	for _, res := range results {
		switch {
		case !res.eligible:
			j.Ineligible = append(j.Ineligible, res.thing)
		case res.err != "":
			j.Errors = append(j.Errors, res.err)
		default:
			j.Applied = append(j.Applied, res.thing)
		}
	}
	j.Next = end
	j.UpdatedAt = now.UnixMilli()
	if j.Next >= len(j.Targets) {
		j.State = JobCompleted
	}
	if e.cfg.OnEvent != nil {
		e.cfg.OnEvent(j.ID, Event{Time: now.UnixMilli(), Type: "job_progress", Message: fmt.Sprintf("%d of %d handled", j.Next, len(j.Targets))})
	}
}

func (e *Engine) stepJobs(ctx context.Context, now time.Time, _ map[string]bool) {
	for _, j := range e.jobs {
		if j.State == JobRunning {
			e.runJob(ctx, j, now)
			if err := e.saveJob(ctx, j); err != nil {
				e.cfg.Logger.Error("save job", "job", j.ID, "error", err)
			}
		}
	}
}

func (e *Engine) saveJob(ctx context.Context, j *Job) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return e.cfg.Store.SaveJob(ctx, j.ID, b)
}

// jobView computes progress: convergence is read from the fleet index
// (has the device's delta cleared for the patched keys?).
func (e *Engine) jobView(j *Job) JobView {
	p := JobProgress{Targeted: len(j.Targets), Applied: len(j.Applied), Ineligible: len(j.Ineligible),
		Remaining: len(j.Targets) - j.Next, Failed: len(j.Errors)}
	var conds []string
	gjson.ParseBytes(j.Spec.Patch).ForEach(func(k, _ gjson.Result) bool {
		conds = append(conds, shadowField(j.Spec.Shadow)+"delta."+k.String()+":*")
		return true
	})
	pending, _ := query.Parse(strings.Join(conds, " OR "))
	for _, th := range j.Applied {
		if pending != nil && e.cfg.Fleet.MatchThing(pending, th) {
			if c, ok := e.cfg.Fleet.Connectivity(th); !ok || !c.Connected {
				p.Pending++
			}
			continue
		}
		p.Converged++
	}
	v := JobView{ID: j.ID, Spec: j.Spec, State: j.State, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, Progress: p, Errors: j.Errors}
	v.Ineligible = j.Ineligible
	return v
}

// Job returns a job with its progress.
func (e *Engine) Job(id string) (JobView, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	if !ok {
		return JobView{}, ErrNotFound
	}
	return e.jobView(j), nil
}

// Jobs lists jobs, newest first.
func (e *Engine) Jobs() []JobView {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]JobView, 0, len(e.jobs))
	for _, j := range e.jobs {
		v := e.jobView(j)
		v.Ineligible = nil
		out = append(out, v)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].CreatedAt > out[k].CreatedAt })
	return out
}

// CancelJob stops a running job; things already written keep the patch.
func (e *Engine) CancelJob(ctx context.Context, id string) (JobView, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	if !ok {
		return JobView{}, ErrNotFound
	}
	if j.State != JobRunning {
		return JobView{}, fmt.Errorf("%w: job is %s", ErrState, j.State)
	}
	j.State = JobCancelled
	j.UpdatedAt = e.cfg.Clock().UnixMilli()
	return e.jobView(j), e.saveJob(ctx, j)
}
