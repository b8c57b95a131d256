package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
)

// Store keeps the engine's rollouts and jobs: the rollout engine's own
// storage (storeadapt.RolloutStore keeps it in its own buckets of the
// broker's database). Every save is one durable transaction.
type Store interface {
	// SaveRollout writes a rollout's header and the given device records
	// (thing → record) at once.
	SaveRollout(ctx context.Context, id string, header []byte, devices map[string][]byte) error
	// SaveJob writes a job.
	SaveJob(ctx context.Context, id string, job []byte) error
	// Load calls rollout for every stored rollout with its device records,
	// then job for every stored job, from one consistent read.
	Load(rollout func(id string, header []byte, devices [][]byte) error, job func(id string, job []byte) error) error
}

// storedDevice is a device with its place in the wave's order.
type storedDevice struct {
	Device
	Index int `json:"index"`
}

// persist writes the rollout header and its changed devices durably, then
// announces the new events (so an event is never announced for a state
// that could be lost).
func (e *Engine) persist(ctx context.Context, r *Rollout) error {
	if err := e.save(ctx, r); err != nil {
		return err
	}
	for _, ev := range r.unannounced {
		e.announce(r, ev)
	}
	r.unannounced = nil
	return nil
}

func (e *Engine) save(ctx context.Context, r *Rollout) error {
	header, err := json.Marshal(r)
	if err != nil {
		return err
	}
	index := map[string]int{}
	for _, things := range r.order {
		for i, th := range things {
			if r.dirty[th] {
				index[th] = i
			}
		}
	}
	devices := make(map[string][]byte, len(r.dirty))
	for th := range r.dirty {
		b, err := json.Marshal(storedDevice{Device: *r.devices[th], Index: index[th]})
		if err != nil {
			return err
		}
		devices[th] = b
	}
	err = e.cfg.Store.SaveRollout(ctx, r.ID, header, devices)
	if err == nil {
		clear(r.dirty)
	}
	return err
}

func (e *Engine) load() error {
	rollout := func(id string, header []byte, devices [][]byte) error {
		r := &Rollout{devices: map[string]*Device{}, dirty: map[string]bool{}, fresh: true}
		if err := json.Unmarshal(header, r); err != nil {
			return fmt.Errorf("rollout %s: %w", id, err)
		}
		p, err := validate(r.Spec)
		if err != nil {
			return fmt.Errorf("rollout %s: %w", id, err)
		}
		r.parsed = p
		stored := make([]storedDevice, len(devices))
		for i, v := range devices {
			if err := json.Unmarshal(v, &stored[i]); err != nil {
				return fmt.Errorf("rollout %s devices: %w", id, err)
			}
		}
		if len(stored) > 0 || r.State != StateCreated {
			r.order = make([][]string, len(r.Spec.Waves))
			sort.Slice(stored, func(i, j int) bool { return stored[i].Index < stored[j].Index })
			for i := range stored {
				d := stored[i].Device
				r.devices[d.Thing] = &d
				if d.Wave < len(r.order) {
					r.order[d.Wave] = append(r.order[d.Wave], d.Thing)
				}
			}
		}
		e.rollouts[id] = r
		if p.jobMode && r.Spec.Artifact != "" {
			e.docArtifacts.Store(id, r.Spec.Artifact)
		}
		return nil
	}
	job := func(id string, v []byte) error {
		j := &Job{}
		if err := json.Unmarshal(v, j); err != nil {
			return fmt.Errorf("job %s: %w", id, err)
		}
		if err := j.compile(); err != nil {
			return fmt.Errorf("job %s: %w", id, err)
		}
		e.jobs[id] = j
		if len(j.Spec.Document) > 0 && j.Spec.Artifact != "" {
			e.docArtifacts.Store(id, j.Spec.Artifact)
		}
		return nil
	}
	return e.cfg.Store.Load(rollout, job)
}
