package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/internal/awsjobs"
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
	Patch  json.RawMessage `json:"patch,omitempty"`
	// Document, instead of Patch, makes this an AWS IoT Jobs job: each
	// eligible thing gets a QUEUED execution of this job document (a JSON
	// object, at most 32 KB), which the device reads and reports through
	// the Jobs device MQTT API ($aws/things/{thing}/jobs/...).
	Document json.RawMessage `json:"document,omitempty"`
	// Artifact, as in a rollout Spec: each thing gets its own ota_url and
	// the image's target_version, ota_sha256, ota_size (ota_signature).
	// With Document, the document must refer to it with placeholders
	// (${umbra:artifact.url}, ...), replaced per device when it reads the
	// document (see awsjobs.RenderDocument).
	Artifact string `json:"artifact,omitempty"`
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

// JobProgress counts a job's things. For a job document, Applied counts
// queued executions, Converged SUCCEEDED ones, Pending those QUEUED or
// IN_PROGRESS and Failed those FAILED, REJECTED or TIMED_OUT (plus things
// that could not be queued).
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
	ID        string      `json:"id"`
	Spec      JobSpec     `json:"spec"`
	State     JobState    `json:"state"`
	CreatedAt int64       `json:"createdAt"`
	UpdatedAt int64       `json:"updatedAt"`
	Progress  JobProgress `json:"progress"`
	// Executions counts a job document's executions by AWS status.
	Executions map[awsjobs.Status]int `json:"executions,omitempty"`
	Ineligible []string               `json:"ineligibleThings,omitempty"`
	Errors     []string               `json:"errors,omitempty"`
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
	defer e.holdArtifacts(s.Artifact)() // until the job is in e.jobs
	var err error
	if s.Artifact, s.Patch, err = e.resolveArtifact("document", s.Document, s.Patch, s.Artifact); err != nil {
		return JobView{}, err
	}
	switch {
	case len(s.Document) > 0 && len(s.Patch) > 0:
		return JobView{}, &FieldError{"document", "give a patch (desired state) or a job document, not both"}
	case len(s.Document) > 0:
		if e.cfg.Executions == nil {
			return JobView{}, &FieldError{"document", "job documents are not available on this server"}
		}
		if err := awsjobs.CheckDocument(s.Document); err != nil {
			return JobView{}, &FieldError{"document", strings.TrimPrefix(err.Error(), awsjobs.ErrDocument.Error()+": ")}
		}
	case !gjson.ValidBytes(s.Patch) || !gjson.ParseBytes(s.Patch).IsObject() || len(gjson.ParseBytes(s.Patch).Map()) == 0:
		return JobView{}, &FieldError{"patch", "the patch must be a non-empty JSON object of desired values (or give an artifact or a job document)"}
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
	if len(s.Document) > 0 {
		if s.Artifact != "" {
			e.docArtifacts.Store(j.ID, s.Artifact)
		}
		if err := e.cfg.Executions.PutJob(ctx, j.ID, s.Document); err != nil {
			return JobView{}, err
		}
	}
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
	e.each(len(batch), func(i int) {
		th := batch[i]
		results[i].thing = th
		if j.condition != nil && !e.cfg.Fleet.MatchThing(j.condition, th) {
			return
		}
		results[i].eligible = true
		if len(j.Spec.Document) > 0 {
			if _, err := e.cfg.Executions.Queue(ctx, j.ID, th); err != nil {
				results[i].err = th + ": " + err.Error()
			}
			return
		}
		payload := fmt.Appendf(nil, `{"state":{"desired":%s}}`, e.devicePatch(j.Spec.Patch, j.Spec.Artifact, th))
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
	if len(j.Spec.Document) > 0 {
		return e.documentJobView(j, p)
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
	return e.AbortJob(ctx, id, false)
}

// AbortJob cancels a job: no further thing is written or queued. For a
// job document, as AWS's CancelJob: QUEUED executions become CANCELED, and
// with force IN_PROGRESS ones too (their devices' later updates are
// rejected with TerminalStateReached); a job document whose executions are
// all queued (completed) can still be cancelled, and a cancelled one
// cancelled again with force.
func (e *Engine) AbortJob(ctx context.Context, id string, force bool) (JobView, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	if !ok {
		return JobView{}, ErrNotFound
	}
	doc := len(j.Spec.Document) > 0
	if j.State != JobRunning && !(doc && (j.State == JobCompleted || j.State == JobCancelled && force)) {
		return JobView{}, fmt.Errorf("%w: job is %s", ErrState, j.State)
	}
	if !doc && force {
		return JobView{}, &FieldError{"force", "force applies to job documents only"}
	}
	if doc {
		n, err := e.cfg.Executions.Cancel(ctx, j.ID, force)
		if err != nil {
			return JobView{}, err
		}
		if e.cfg.OnEvent != nil {
			e.cfg.OnEvent(j.ID, Event{Time: e.cfg.Clock().UnixMilli(), Type: "job_cancelled", Message: fmt.Sprintf("%d executions canceled", n)})
		}
	}
	j.State = JobCancelled
	j.UpdatedAt = e.cfg.Clock().UnixMilli()
	return e.jobView(j), e.saveJob(ctx, j)
}

// documentJobView counts a job document's executions.
func (e *Engine) documentJobView(j *Job, p JobProgress) JobView {
	v := JobView{ID: j.ID, Spec: j.Spec, State: j.State, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, Errors: j.Errors, Ineligible: j.Ineligible}
	execs, err := e.cfg.Executions.Executions(j.ID)
	if err != nil {
		v.Errors = append(v.Errors, "reading executions: "+err.Error())
	}
	v.Executions = map[awsjobs.Status]int{}
	p.Applied, p.Converged, p.Pending = len(execs), 0, 0
	for _, x := range execs {
		v.Executions[x.Status]++
		switch {
		case x.Status == awsjobs.Succeeded:
			p.Converged++
		case !x.Status.Terminal():
			p.Pending++
		case x.Status.Failure():
			p.Failed++
		}
	}
	v.Progress = p
	return v
}

// JobExecutions lists the executions of a job document, or of a rollout
// delivered through one, by thing.
func (e *Engine) JobExecutions(id string) ([]awsjobs.Execution, error) {
	e.mu.Lock()
	j, ok := e.jobs[id]
	var r *Rollout
	if !ok {
		r, ok = e.rollouts[id]
	}
	e.mu.Unlock()
	if !ok {
		return nil, ErrNotFound
	}
	if j != nil && len(j.Spec.Document) == 0 || r != nil && !r.parsed.jobMode || e.cfg.Executions == nil {
		return []awsjobs.Execution{}, nil
	}
	out, err := e.cfg.Executions.Executions(id)
	if out == nil {
		out = []awsjobs.Execution{}
	}
	return out, err
}
