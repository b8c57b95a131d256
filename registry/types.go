package registry

import (
	"context"
	"fmt"
)

// CreateType creates a thing type.
func (r *Registry) CreateType(ctx context.Context, t ThingType) (ThingType, error) {
	if err := validateName("thingTypeName", t.Name); err != nil {
		return ThingType{}, err
	}
	if len(t.Description) > MaxDescriptionLen {
		return ThingType{}, fieldErr("description", "longer than %d characters", MaxDescriptionLen)
	}
	for i, a := range t.Attributes {
		if !keyRE.MatchString(a) {
			return ThingType{}, fieldErr(fmt.Sprintf("searchableAttributes[%d]", i), "invalid attribute name %q", a)
		}
	}
	r.catchUp()
	unlock := r.locks.Lock("types")
	defer unlock()
	r.mu.RLock()
	_, exists := r.types[t.Name]
	r.mu.RUnlock()
	if exists {
		return ThingType{}, ErrExists
	}
	t.CreatedAt, t.Deprecated = r.cfg.Clock().Unix(), false
	if err := r.cfg.Store.UpdateKV(ctx, func(kv KV) error { return putJSON(kv, bucketTypes, t.Name, t) }); err != nil {
		return ThingType{}, err
	}
	r.mu.Lock()
	r.types[t.Name] = t
	r.mu.Unlock()
	return t, nil
}

// Type returns a thing type.
func (r *Registry) Type(name string) (ThingType, error) {
	r.catchUp()
	return r.typeOf(name)
}

func (r *Registry) typeOf(name string) (ThingType, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.types[name]
	if !ok {
		return ThingType{}, ErrNotFound
	}
	return t, nil
}

// Types lists every thing type in name order.
func (r *Registry) Types() []ThingType {
	r.catchUp()
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]ThingType, 0, len(r.types))
	for _, n := range sortedKeys(r.types) {
		out = append(out, r.types[n])
	}
	return out
}

// DeprecateType stops new things from using a type (or undoes that).
func (r *Registry) DeprecateType(ctx context.Context, name string, deprecated bool) (ThingType, error) {
	r.catchUp()
	unlock := r.locks.Lock("types")
	defer unlock()
	t, err := r.typeOf(name)
	if err != nil {
		return ThingType{}, err
	}
	t.Deprecated = deprecated
	if err := r.cfg.Store.UpdateKV(ctx, func(kv KV) error { return putJSON(kv, bucketTypes, name, t) }); err != nil {
		return ThingType{}, err
	}
	r.mu.Lock()
	r.types[name] = t
	r.mu.Unlock()
	return t, nil
}

// DeleteType deletes a type no thing uses.
func (r *Registry) DeleteType(ctx context.Context, name string) error {
	r.catchUp()
	unlock := r.locks.Lock("types")
	defer unlock()
	if _, err := r.typeOf(name); err != nil {
		return err
	}
	if n, _ := r.countField("thingTypeName", name); n > 0 {
		return fmt.Errorf("%w: %d things have type %q", ErrInUse, n, name)
	}
	if err := r.cfg.Store.UpdateKV(ctx, func(kv KV) error { return kv.Delete(bucketTypes, name) }); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.types, name)
	r.mu.Unlock()
	return nil
}

func (r *Registry) countField(field, value string) (uint64, error) {
	r.ix.mu.RLock()
	defer r.ix.mu.RUnlock()
	f := r.ix.field(field)
	if f == nil {
		return 0, nil
	}
	if vid, ok := f.values[normKey(str(value))]; ok {
		return r.ix.vals[vid].andCardinality(r.ix.registered), nil
	}
	return 0, nil
}
