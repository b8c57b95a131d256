package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
)

// NewThing is a thing to create.
type NewThing struct {
	Name       string            `json:"thingName"`
	Type       string            `json:"thingTypeName,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// CreateThing registers a thing (ErrExists if it is already registered).
func (r *Registry) CreateThing(ctx context.Context, n NewThing) (Thing, error) {
	if err := validateName("thingName", n.Name); err != nil {
		return Thing{}, err
	}
	if err := validateAttributes(n.Attributes); err != nil {
		return Thing{}, err
	}
	if n.Type != "" {
		r.catchUp() // a type created on another node just before
	}
	if err := r.checkType(n.Type, true); err != nil {
		return Thing{}, err
	}
	unlock := r.locks.Lock("thing:" + n.Name)
	defer unlock()
	now := r.cfg.Clock().Unix()
	t := Thing{Name: n.Name, Type: n.Type, Attributes: n.Attributes, Version: 1, CreatedAt: now, UpdatedAt: now}
	if t.Attributes == nil {
		t.Attributes = map[string]string{}
	}
	err := r.cfg.Store.UpdateKV(ctx, func(kv KV) error {
		if kv.Get(bucketThings, t.Name) != nil {
			return ErrExists
		}
		if err := kv.Delete(bucketDeleted, t.Name); err != nil {
			return err
		}
		return putJSON(kv, bucketThings, t.Name, t)
	})
	if err != nil {
		return Thing{}, err
	}
	r.ix.register(t.Name, true)
	r.ix.set(t.Name, "registry", r.thingValues(t, r.staticGroupsOf(t.Name)))
	return t, nil
}

// checkType validates a thing type reference; new things may not use a
// deprecated type.
func (r *Registry) checkType(name string, forNew bool) error {
	if name == "" {
		return nil
	}
	r.mu.RLock()
	tt, ok := r.types[name]
	r.mu.RUnlock()
	if !ok {
		return fieldErr("thingTypeName", "thing type %q does not exist", name)
	}
	if forNew && tt.Deprecated {
		return fieldErr("thingTypeName", "thing type %q is deprecated", name)
	}
	return nil
}

// Thing returns a registered thing.
func (r *Registry) Thing(name string) (Thing, error) {
	var t Thing
	err := r.cfg.Store.ViewKV(func(kv KV) error { return getJSON(kv, bucketThings, name, &t) })
	return t, err
}

// ThingPatch changes a thing: attributes to set (a nil value removes the
// attribute), optionally the type, guarded by ExpectedVersion when non-zero.
type ThingPatch struct {
	Attributes      map[string]*string `json:"attributes,omitempty"`
	Type            *string            `json:"thingTypeName,omitempty"`
	ExpectedVersion int64              `json:"expectedVersion,omitempty"`
}

// UpdateThing applies a patch and increments the registry version.
func (r *Registry) UpdateThing(ctx context.Context, name string, p ThingPatch) (Thing, error) {
	if p.Type != nil {
		r.catchUp()
		if err := r.checkType(*p.Type, true); err != nil {
			return Thing{}, err
		}
	}
	unlock := r.locks.Lock("thing:" + name)
	defer unlock()
	var t Thing
	err := r.cfg.Store.UpdateKV(ctx, func(kv KV) error {
		if err := getJSON(kv, bucketThings, name, &t); err != nil {
			return err
		}
		if p.ExpectedVersion != 0 && p.ExpectedVersion != t.Version {
			return fmt.Errorf("%w: expected version %d, current %d", ErrVersionConflict, p.ExpectedVersion, t.Version)
		}
		attrs := maps.Clone(t.Attributes)
		if attrs == nil {
			attrs = map[string]string{}
		}
		for k, v := range p.Attributes {
			if v == nil {
				delete(attrs, k)
			} else {
				attrs[k] = *v
			}
		}
		if err := validateAttributes(attrs); err != nil {
			return err
		}
		t.Attributes = attrs
		if p.Type != nil {
			t.Type = *p.Type
		}
		t.Version++
		t.UpdatedAt = r.cfg.Clock().Unix()
		return putJSON(kv, bucketThings, name, t)
	})
	if err != nil {
		return Thing{}, err
	}
	if t.Attributes[DisabledAttribute] == "true" && r.cfg.OnRevoked != nil {
		r.cfg.OnRevoked(name)
	}
	r.ix.set(name, "registry", r.thingValues(t, r.staticGroupsOf(name)))
	return t, nil
}

// DeleteThing removes a thing, its group memberships and connectivity. Its
// shadows stay (as in AWS IoT, registry and shadows are independent).
func (r *Registry) DeleteThing(ctx context.Context, name string, expectedVersion int64) error {
	unlock := r.locks.Lock("thing:" + name)
	defer unlock()
	err := r.cfg.Store.UpdateKV(ctx, func(kv KV) error {
		var t Thing
		if err := getJSON(kv, bucketThings, name, &t); err != nil {
			return err
		}
		if expectedVersion != 0 && expectedVersion != t.Version {
			return fmt.Errorf("%w: expected version %d, current %d", ErrVersionConflict, expectedVersion, t.Version)
		}
		for _, g := range r.staticGroupsOf(name) {
			if err := kv.Delete(bucketMembers, g+"\x00"+name); err != nil {
				return err
			}
		}
		if err := kv.Delete(bucketConn, name); err != nil {
			return err
		}
		for slot := range ConnHistorySlots {
			if err := kv.Delete(bucketConnHistory, fmt.Sprintf("%s\x00%02d", name, slot)); err != nil {
				return err
			}
		}
		if err := kv.Put(bucketDeleted, name, []byte(strconv.FormatInt(r.cfg.Clock().Unix(), 10))); err != nil {
			return err
		}
		return kv.Delete(bucketThings, name)
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.conn, name)
	r.mu.Unlock()
	r.ix.set(name, "registry", nil)
	r.ix.set(name, "connectivity", nil)
	r.ix.register(name, false)
	if r.cfg.OnRevoked != nil {
		r.cfg.OnRevoked(name)
	}
	return nil
}

// ListThings pages through registered things in name order.
func (r *Registry) ListThings(after string, limit int) (things []Thing, next string, err error) {
	err = r.cfg.Store.ViewKV(func(kv KV) error {
		return kv.ForEachFrom(bucketThings, after, func(k string, v []byte) error {
			if k <= after {
				return nil
			}
			if len(things) == limit {
				next = things[len(things)-1].Name
				return errStop
			}
			var t Thing
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			things = append(things, t)
			return nil
		})
	})
	if err == errStop {
		err = nil
	}
	return things, next, err
}

var errStop = fmt.Errorf("stop")

func putJSON(kv KV, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return kv.Put(bucket, key, b)
}

func getJSON(kv KV, bucket, key string, v any) error {
	b := kv.Get(bucket, key)
	if b == nil {
		return ErrNotFound
	}
	return json.Unmarshal(b, v)
}

// CreateThings registers many things in one durable transaction (bulk
// registration). Things already registered are skipped; the first invalid
// one fails the whole call before anything is written.
func (r *Registry) CreateThings(ctx context.Context, things []NewThing) (created int, err error) {
	r.catchUp()
	for i, n := range things {
		if err := validateName(fmt.Sprintf("things[%d].thingName", i), n.Name); err != nil {
			return 0, err
		}
		if err := validateAttributes(n.Attributes); err != nil {
			return 0, fmt.Errorf("things[%d]: %w", i, err)
		}
		if err := r.checkType(n.Type, true); err != nil {
			return 0, fmt.Errorf("things[%d]: %w", i, err)
		}
	}
	now := r.cfg.Clock().Unix()
	var made []Thing
	err = r.cfg.Store.UpdateKV(ctx, func(kv KV) error {
		made = made[:0]
		for _, n := range things {
			if kv.Get(bucketThings, n.Name) != nil {
				continue
			}
			t := Thing{Name: n.Name, Type: n.Type, Attributes: n.Attributes, Version: 1, CreatedAt: now, UpdatedAt: now}
			if t.Attributes == nil {
				t.Attributes = map[string]string{}
			}
			if err := kv.Delete(bucketDeleted, t.Name); err != nil {
				return err
			}
			if err := putJSON(kv, bucketThings, t.Name, t); err != nil {
				return err
			}
			made = append(made, t)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, t := range made {
		r.ix.register(t.Name, true)
		r.ix.set(t.Name, "registry", r.thingValues(t, nil))
	}
	return len(made), nil
}
