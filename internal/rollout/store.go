package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/umbra-iot/umbra/registry"
)

const (
	bucketRollouts = "rollouts"
	bucketDevices  = "rollout_devices" // rollout id 0x00 thing → Device
	bucketJobs     = "jobs"
)

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
	err = e.cfg.Store.UpdateKV(ctx, func(kv registry.KV) error {
		if err := kv.Put(bucketRollouts, r.ID, header); err != nil {
			return err
		}
		for th := range r.dirty {
			b, err := json.Marshal(storedDevice{Device: *r.devices[th], Index: index[th]})
			if err != nil {
				return err
			}
			if err := kv.Put(bucketDevices, r.ID+"\x00"+th, b); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		clear(r.dirty)
	}
	return err
}

func (e *Engine) load() error {
	return e.cfg.Store.ViewKV(func(kv registry.KV) error {
		err := kv.ForEach(bucketRollouts, "", func(id string, v []byte) error {
			r := &Rollout{devices: map[string]*Device{}, dirty: map[string]bool{}, fresh: true}
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("rollout %s: %w", id, err)
			}
			p, err := validate(r.Spec)
			if err != nil {
				return fmt.Errorf("rollout %s: %w", id, err)
			}
			r.parsed = p
			var stored []storedDevice
			if err := kv.ForEach(bucketDevices, id+"\x00", func(_ string, v []byte) error {
				var d storedDevice
				if err := json.Unmarshal(v, &d); err != nil {
					return err
				}
				stored = append(stored, d)
				return nil
			}); err != nil {
				return fmt.Errorf("rollout %s devices: %w", id, err)
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
		})
		if err != nil {
			return err
		}
		return kv.ForEach(bucketJobs, "", func(id string, v []byte) error {
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
		})
	})
}
