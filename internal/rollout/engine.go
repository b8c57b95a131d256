package rollout

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/registry/query"
	"github.com/umbra-iot/umbra/shadow"
)

// Fleet is what the engine reads of the registry.
type Fleet interface {
	Search(q *query.Query, after string, limit int) registry.SearchResult
	MatchThing(q *query.Query, thing string) bool
	// MatchThingShadow is MatchThing with one shadow's fields read from
	// doc (registry.Registry.MatchThingShadow).
	MatchThingShadow(q *query.Query, thing, shadowName string, doc []byte) bool
	Connectivity(thing string) (registry.Connectivity, bool)
}

// Publisher publishes rollout events on MQTT.
type Publisher interface {
	Publish(topic string, payload []byte) error
}

// Config assembles an Engine.
type Config struct {
	Fleet     Fleet
	Shadows   shadow.Handler
	Store     Store
	Publisher Publisher
	Clock     func() time.Time
	Logger    *slog.Logger
	// OnEvent, when set, sees every rollout event (the live stream).
	OnEvent func(rolloutID string, ev Event)
	// Executions, when set, delivers jobs and rollouts that carry a job
	// document through the AWS IoT Jobs device API (awsjobs.Service).
	Executions Executions
	// Workers bounds concurrent shadow writes when notifying devices or
	// running a job (default 512): each write waits for its group commit,
	// so throughput comes from many writes sharing each fsync.
	Workers int
	// Artifacts, when set, lets rollouts and jobs reference stored
	// firmware artifacts.
	Artifacts Artifacts
}

// Errors.
var (
	ErrNotFound = errors.New("not found")
	ErrState    = errors.New("not allowed in this state")
	// ErrPlanChanged: the plan create or start would freeze differs from
	// the preview the spec's plan token came from.
	ErrPlanChanged = errors.New("the fleet changed since the preview")
)

// Engine runs rollouts and jobs.
type Engine struct {
	cfg      Config
	mu       sync.Mutex
	rollouts map[string]*Rollout
	jobs     map[string]*Job

	// changedMu guards changed apart from mu: shadow events arrive while a
	// step (holding mu) writes shadows.
	changedMu sync.Mutex
	changed   map[string]bool // things whose shadow changed since the last step

	// docArtifacts maps a job document's job id (a job's, or a
	// job-delivered rollout's) to the artifact id its placeholders refer
	// to; read without mu (ArtifactValues runs while mu queues executions).
	docArtifacts sync.Map
}

// Open loads persisted rollouts and jobs.
func Open(cfg Config) (*Engine, error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Workers == 0 {
		cfg.Workers = 512
	}
	e := &Engine{cfg: cfg, rollouts: map[string]*Rollout{}, jobs: map[string]*Job{}, changed: map[string]bool{}}
	if err := e.load(); err != nil {
		return nil, err
	}
	return e, nil
}

func newID(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// prepare resolves a spec's artifact and validates it: what Create records
// and what Preview plans are the same spec.
func (e *Engine) prepare(s Spec) (Spec, parsedSpec, error) {
	var err error
	if s.Artifact, s.Patch, err = e.resolveArtifact("jobDocument", s.JobDocument, s.Patch, s.Artifact); err != nil {
		return s, parsedSpec{}, err
	}
	p, err := validate(s)
	return s, p, err
}

// Create records a rollout without starting it.
func (e *Engine) Create(ctx context.Context, s Spec) (View, error) {
	// Released after the rollout is in e.rollouts (defers run in reverse).
	defer e.holdArtifacts(s.Artifact)()
	s, p, err := e.prepare(s)
	if err != nil {
		return View{}, err
	}
	now := e.cfg.Clock().UnixMilli()
	r := &Rollout{ID: newID("ro-"), Spec: s, State: StateCreated, CreatedAt: now, UpdatedAt: now,
		devices: map[string]*Device{}, parsed: p, dirty: map[string]bool{}}
	if _, err := e.checkPlan(r); err != nil {
		return View{}, err
	}
	r.event(now, "created", 0, "", "")
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.save(ctx, r); err != nil {
		return View{}, err
	}
	e.rollouts[r.ID] = r
	if len(s.JobDocument) > 0 && s.Artifact != "" {
		e.docArtifacts.Store(r.ID, s.Artifact)
	}
	e.announce(r, r.Events[len(r.Events)-1])
	r.unannounced = nil
	return r.view(), nil
}

// WavePreview is one planned wave.
type WavePreview struct {
	Name   string   `json:"name"`
	Count  int      `json:"count"`
	Things []string `json:"things"`
}

// PreviewResult is a planned rollout: its waves and the token that makes
// create freeze exactly these waves (or refuse, saying what changed).
type PreviewResult struct {
	Waves []WavePreview `json:"waves"`
	Plan  PlanToken     `json:"plan"`
	// Empty names the waves (or the target) that select no device.
	Empty []string `json:"empty,omitempty"`
}

// seed orders a rollout's targets: the preview's seed, or its id.
func (r *Rollout) seed() string {
	if r.Spec.Plan != nil && r.Spec.Plan.Seed != "" {
		return r.Spec.Plan.Seed
	}
	return r.ID
}

// Preview plans a spec's waves against the fleet as it is now. The plan
// seed is the spec's (plan.seed) or a new one; creating the rollout with
// the returned plan token freezes the same waves.
func (e *Engine) Preview(s Spec) (PreviewResult, error) {
	s, p, err := e.prepare(s)
	if err != nil {
		return PreviewResult{}, err
	}
	seed := newID("plan-")
	if s.Plan != nil && s.Plan.Seed != "" {
		seed = s.Plan.Seed
	}
	waves := e.plan(seed, s, p)
	return previewOf(s, seed, waves), nil
}

func previewOf(s Spec, seed string, waves [][]string) PreviewResult {
	out := PreviewResult{Waves: make([]WavePreview, len(waves)), Plan: PlanToken{Seed: seed}}
	h := sha256.New()
	total := 0
	for i, w := range waves {
		things := slices.Clone(w)
		sort.Strings(things)
		out.Waves[i] = WavePreview{Name: s.Waves[i].Name, Count: len(w), Things: things}
		out.Plan.Counts = append(out.Plan.Counts, len(w))
		fmt.Fprintf(h, "wave %d\n", i)
		for _, th := range things {
			fmt.Fprintf(h, "%s\n", th)
		}
		if len(w) == 0 {
			out.Empty = append(out.Empty, fmt.Sprintf("waves[%d]", i))
		}
		total += len(w)
	}
	if total == 0 {
		out.Empty = append([]string{"target"}, out.Empty...)
	}
	out.Plan.Fingerprint = hex.EncodeToString(h.Sum(nil))[:16]
	return out
}

// checkPlan plans r as it would be frozen now and refuses an empty target
// or wave (unless AllowEmpty) and a plan that differs from the preview
// its plan token came from.
func (e *Engine) checkPlan(r *Rollout) ([][]string, error) {
	waves := e.plan(r.seed(), r.Spec, r.parsed)
	pv := previewOf(r.Spec, r.seed(), waves)
	if tok := r.Spec.Plan; tok != nil && tok.Fingerprint != "" && tok.Fingerprint != pv.Plan.Fingerprint {
		var diff []string
		for i, w := range pv.Waves {
			was := "?"
			if i < len(tok.Counts) {
				was = fmt.Sprint(tok.Counts[i])
			}
			diff = append(diff, fmt.Sprintf("%s %s→%d", w.Name, was, w.Count))
		}
		return nil, fmt.Errorf("%w: the plan now differs from the previewed one (fingerprint %s, previewed %s; devices per wave: %s); preview again, or drop plan.fingerprint to accept the new plan",
			ErrPlanChanged, pv.Plan.Fingerprint, tok.Fingerprint, strings.Join(diff, ", "))
	}
	if !r.Spec.AllowEmpty && len(pv.Empty) > 0 {
		if pv.Empty[0] == "target" {
			return nil, &FieldError{"target", fmt.Sprintf("%q matches no device; register devices first, or set allowEmpty to create it anyway", r.Spec.Target)}
		}
		var names []string
		for _, f := range pv.Empty {
			var i int
			fmt.Sscanf(f, "waves[%d]", &i)
			names = append(names, fmt.Sprintf("%s (%s)", r.Spec.Waves[i].Name, f))
		}
		return nil, &FieldError{pv.Empty[0], fmt.Sprintf("wave %s selects no device among the %q targets; fix the wave's query or percent, or set allowEmpty", strings.Join(names, ", "), r.Spec.Target)}
	}
	return waves, nil
}

// PreviewID previews an existing rollout (its frozen plan once started).
func (e *Engine) PreviewID(id string) ([]WavePreview, error) {
	e.mu.Lock()
	r, ok := e.rollouts[id]
	if !ok {
		e.mu.Unlock()
		return nil, ErrNotFound
	}
	if r.order != nil {
		pv := previewOf(r.Spec, r.seed(), r.order)
		e.mu.Unlock()
		return pv.Waves, nil
	}
	spec, seed, parsed := r.Spec, r.seed(), r.parsed
	e.mu.Unlock()
	return previewOf(spec, seed, e.plan(seed, spec, parsed)).Waves, nil
}

func (e *Engine) plan(seed string, s Spec, p parsedSpec) [][]string {
	targets := e.cfg.Fleet.Search(p.target, "", 1<<31-1).Things
	return plan(seed, targets, s.Waves, p.waves, e.cfg.Fleet.MatchThing)
}

// Start freezes the plan and starts the first wave.
func (e *Engine) Start(ctx context.Context, id string) (View, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.rollouts[id]
	if !ok {
		return View{}, ErrNotFound
	}
	if r.State != StateCreated {
		return View{}, fmt.Errorf("%w: rollout is %s", ErrState, r.State)
	}
	order, err := e.checkPlan(r)
	if err != nil {
		return View{}, err
	}
	if r.parsed.jobMode {
		if e.cfg.Executions == nil {
			return View{}, &FieldError{"jobDocument", "job documents are not available on this server"}
		}
		if err := e.cfg.Executions.PutJob(ctx, r.ID, r.Spec.JobDocument); err != nil {
			return View{}, err
		}
	}
	r.order = order
	for w, things := range r.order {
		for _, th := range things {
			r.devices[th] = &Device{Thing: th, Wave: w, State: DevPending}
			r.dirty[th] = true
		}
	}
	now := e.cfg.Clock()
	total := len(r.devices)
	r.event(now.UnixMilli(), "started", 0, "", fmt.Sprintf("%d devices in %d waves", total, len(r.order)))
	e.enterWave(r, 0, now)
	return r.view(), e.persist(ctx, r)
}

// enterWave makes wave w current (or completes the rollout).
func (e *Engine) enterWave(r *Rollout, w int, now time.Time) {
	r.Wave, r.BakeUntil = w, 0
	if w >= len(r.Spec.Waves) {
		r.State = StateCompleted
		r.event(now.UnixMilli(), "completed", w, "", "")
		return
	}
	if r.Spec.Waves[w].RequireApproval && !slices.Contains(r.Approved, w) {
		r.State = StateWaiting
		r.event(now.UnixMilli(), "waiting_approval", w, "", "wave "+r.Spec.Waves[w].Name+" needs approval")
		return
	}
	r.State, r.WaveStarted = StateRunning, now.UnixMilli()
	r.event(now.UnixMilli(), "wave_started", w, "", fmt.Sprintf("%s: %d devices", r.Spec.Waves[w].Name, len(r.order[w])))
}

// action applies a manual action.
func (e *Engine) action(ctx context.Context, id string, fn func(r *Rollout, now time.Time) error) (View, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.rollouts[id]
	if !ok {
		return View{}, ErrNotFound
	}
	if err := fn(r, e.cfg.Clock()); err != nil {
		return View{}, err
	}
	return r.view(), e.persist(ctx, r)
}

// Pause stops notifying new devices; devices already notified are still
// watched (a failure still halts).
func (e *Engine) Pause(ctx context.Context, id string) (View, error) {
	return e.action(ctx, id, func(r *Rollout, now time.Time) error {
		if r.State != StateRunning && r.State != StateBaking && r.State != StateWaiting {
			return fmt.Errorf("%w: cannot pause a rollout that is %s", ErrState, r.State)
		}
		r.PausedFrom, r.State = r.State, StatePaused
		r.event(now.UnixMilli(), "paused", r.Wave, "", "")
		return nil
	})
}

// Resume continues a paused rollout.
func (e *Engine) Resume(ctx context.Context, id string) (View, error) {
	return e.action(ctx, id, func(r *Rollout, now time.Time) error {
		if r.State != StatePaused {
			return fmt.Errorf("%w: rollout is %s, not paused", ErrState, r.State)
		}
		r.State = r.PausedFrom
		if r.State == "" {
			r.State = StateRunning
		}
		r.event(now.UnixMilli(), "resumed", r.Wave, "", "")
		return nil
	})
}

// Approve lets wave (default: the one waiting) start.
func (e *Engine) Approve(ctx context.Context, id string, wave int) (View, error) {
	return e.action(ctx, id, func(r *Rollout, now time.Time) error {
		if wave < 0 {
			wave = r.Wave
		}
		if wave >= len(r.Spec.Waves) {
			return fmt.Errorf("%w: no wave %d", ErrState, wave)
		}
		if !slices.Contains(r.Approved, wave) {
			r.Approved = append(r.Approved, wave)
		}
		r.event(now.UnixMilli(), "approved", wave, "", "")
		if r.State == StateWaiting && r.Wave == wave {
			e.enterWave(r, wave, now)
		}
		return nil
	})
}

// Cancel stops the rollout; devices not yet notified are skipped.
func (e *Engine) Cancel(ctx context.Context, id string) (View, error) {
	return e.action(ctx, id, func(r *Rollout, now time.Time) error {
		if r.terminal() {
			return fmt.Errorf("%w: rollout is already %s", ErrState, r.State)
		}
		r.skipPending()
		e.endDelivery(ctx, r)
		r.State = StateCancelled
		r.event(now.UnixMilli(), "cancelled", r.Wave, "", "")
		return nil
	})
}

// Rollback restores, on every device the rollout touched, the desired
// values it had before, and ends the rollout.
func (e *Engine) Rollback(ctx context.Context, id string) (View, error) {
	return e.action(ctx, id, func(r *Rollout, now time.Time) error {
		if r.State == StateRolledBack {
			return fmt.Errorf("%w: already rolled back", ErrState)
		}
		e.rollback(ctx, r, now, "requested")
		return nil
	})
}

func (r *Rollout) terminal() bool {
	switch r.State {
	case StateCompleted, StateCancelled, StateRolledBack, StateHalted:
		return true
	}
	return false
}

func (r *Rollout) skipPending() {
	for th, d := range r.devices {
		if d.State == DevPending {
			d.State = DevSkipped
			r.dirty[th] = true
		}
	}
}

// View is a rollout as the API shows it.
type View struct {
	ID          string         `json:"id"`
	Spec        Spec           `json:"spec"`
	State       State          `json:"state"`
	Reason      string         `json:"reason,omitempty"`
	CurrentWave int            `json:"currentWave"`
	Waves       []WaveProgress `json:"waves"`
	BakeUntil   int64          `json:"bakeUntil,omitempty"`
	// Totals sums the waves (Name and State empty).
	Totals WaveProgress `json:"totals"`
	// Notice says what the state means for the fleet (e.g. a rollback
	// without rollbackPatch leaves installed firmware installed).
	Notice    string  `json:"notice,omitempty"`
	CreatedAt int64   `json:"createdAt"`
	UpdatedAt int64   `json:"updatedAt"`
	Events    []Event `json:"events"`
}

func (r *Rollout) view() View {
	v := View{ID: r.ID, Spec: r.Spec, State: r.State, Reason: r.Reason, CurrentWave: r.Wave, Waves: r.progress(),
		BakeUntil: r.BakeUntil, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, Events: slices.Clone(r.Events)}
	for _, w := range v.Waves {
		t := &v.Totals
		t.Size += w.Size
		t.Pending += w.Pending
		t.Notified += w.Notified
		t.InProgress += w.InProgress
		t.Succeeded += w.Succeeded
		t.Failed += w.Failed
		t.Regressed += w.Regressed
		t.RolledBack += w.RolledBack
		t.Skipped += w.Skipped
		t.Installed += w.Installed
	}
	if r.State == StateRolledBack {
		if len(r.Spec.RollbackPatch) > 0 {
			v.Notice = fmt.Sprintf("rolled back: previous desired values restored and rollbackPatch written on %d devices; %d still report the new version", v.Totals.RolledBack, v.Totals.Installed)
		} else {
			v.Notice = fmt.Sprintf("rolled back: previous desired values restored on %d devices; a plain rollback does not downgrade firmware already installed: %d devices run the new version (set rollbackPatch to downgrade)", v.Totals.RolledBack, v.Totals.Installed)
		}
	}
	return v
}

// Get returns a rollout.
func (e *Engine) Get(id string) (View, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.rollouts[id]
	if !ok {
		return View{}, ErrNotFound
	}
	return r.view(), nil
}

// Devices lists a rollout's devices (optionally one wave or one state).
func (e *Engine) Devices(id string, wave int, state DeviceState) ([]Device, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.rollouts[id]
	if !ok {
		return nil, ErrNotFound
	}
	var out []Device
	for _, d := range r.devices {
		// A rolled-back device also matches the state it had (failed, …).
		if (wave < 0 || d.Wave == wave) && (state == "" || d.State == state || d.RolledBack && d.Before == state) {
			out = append(out, *d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Thing < out[j].Thing })
	return out, nil
}

// List returns every rollout, newest first.
func (e *Engine) List() []View {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]View, 0, len(e.rollouts))
	for _, r := range e.rollouts {
		v := r.view()
		v.Events = nil
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].CreatedAt > out[j].CreatedAt || out[i].CreatedAt == out[j].CreatedAt && out[i].ID > out[j].ID
	})
	return out
}

// maxEvents bounds the event log kept with a rollout.
const maxEvents = 2000

func (r *Rollout) event(now int64, typ string, wave int, thing, msg string) {
	r.Events = append(r.Events, Event{Time: now, Type: typ, Wave: wave, Thing: thing, Message: msg})
	if len(r.Events) > maxEvents {
		r.Events = slices.Delete(r.Events, 1, len(r.Events)-maxEvents+1) // keep "created"
	}
	r.UpdatedAt = now
	r.unannounced = append(r.unannounced, r.Events[len(r.Events)-1])
}

// announce publishes an event on MQTT and to the live stream.
func (e *Engine) announce(r *Rollout, ev Event) {
	if e.cfg.Publisher != nil {
		b, _ := json.Marshal(struct {
			Rollout string `json:"rollout"`
			Event
		}{r.ID, ev})
		_ = e.cfg.Publisher.Publish("$umbra/rollouts/"+r.ID+"/events", b)
	}
	if e.cfg.OnEvent != nil {
		e.cfg.OnEvent(r.ID, ev)
	}
}

// ShadowChanged marks a thing for re-evaluation at the next step. It never
// blocks on the engine (it is called from the shadow service's commit path).
func (e *Engine) ShadowChanged(thing string) {
	e.changedMu.Lock()
	e.changed[thing] = true
	e.changedMu.Unlock()
}

// Run steps the engine every interval until ctx ends.
func (e *Engine) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A step under way when ctx ends is finished, not cut in half
			// (its shadow writes and its save would fail one by one).
			e.Step(context.WithoutCancel(ctx))
		}
	}
}

// Reload replaces the engine's rollouts and jobs with what the store holds
// now. Cluster mode calls it when this node becomes the one that runs the
// engine, because another node may have advanced the rollouts since this
// one loaded them. Every reloaded rollout re-reads all its devices at the
// next step (as after Open), so no shadow change made meanwhile is missed.
func (e *Engine) Reload() error {
	fresh := &Engine{cfg: e.cfg, rollouts: map[string]*Rollout{}, jobs: map[string]*Job{}}
	if err := fresh.load(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rollouts, e.jobs = fresh.rollouts, fresh.jobs
	e.docArtifacts.Clear()
	fresh.docArtifacts.Range(func(k, v any) bool {
		e.docArtifacts.Store(k, v)
		return true
	})
	return nil
}
