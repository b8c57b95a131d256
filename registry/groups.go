package registry

import (
	"context"
	"fmt"
	"strings"

	"github.com/umbra-iot/umbra/registry/query"
)

// CreateGroup creates a static group (optionally under a static parent) or,
// with a query, a dynamic group (no parent, no explicit members).
func (r *Registry) CreateGroup(ctx context.Context, g Group) (Group, error) {
	if err := validateName("groupName", g.Name); err != nil {
		return Group{}, err
	}
	if len(g.Description) > MaxDescriptionLen {
		return Group{}, fieldErr("description", "longer than %d characters", MaxDescriptionLen)
	}
	cg := &compiledGroup{g: g}
	if g.Dynamic() {
		if g.Parent != "" {
			return Group{}, fieldErr("parentGroupName", "a dynamic group cannot have a parent")
		}
		q, err := query.Parse(g.Query)
		if err != nil {
			return Group{}, &FieldError{Field: "queryString", Msg: err.Error()}
		}
		cg.q = q
	}
	r.catchUp()
	unlock := r.locks.Lock("groups")
	defer unlock()
	r.mu.RLock()
	_, exists := r.groups[g.Name]
	parent, parentOK := r.groups[g.Parent]
	r.mu.RUnlock()
	if exists {
		return Group{}, ErrExists
	}
	if g.Parent != "" && (!parentOK || parent.g.Dynamic()) {
		return Group{}, fieldErr("parentGroupName", "%q is not an existing static group", g.Parent)
	}
	cg.g.CreatedAt = r.cfg.Clock().Unix()
	if err := r.cfg.Store.UpdateKV(ctx, func(kv KV) error {
		if kv.Get(bucketGroups, g.Name) != nil {
			return ErrExists // created meanwhile by another node (cluster mode)
		}
		return putJSON(kv, bucketGroups, g.Name, cg.g)
	}); err != nil {
		return Group{}, err
	}
	r.mu.Lock()
	r.groups[g.Name] = cg
	r.mu.Unlock()
	return cg.g, nil
}

// GroupInfo is a group as the API shows it.
func (r *Registry) Group(name string) (Group, error) {
	r.catchUp()
	r.mu.RLock()
	defer r.mu.RUnlock()
	cg, ok := r.groups[name]
	if !ok {
		return Group{}, ErrNotFound
	}
	return cg.g, nil
}

// Groups lists every group in name order.
func (r *Registry) Groups() []Group {
	r.catchUp()
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Group, 0, len(r.groups))
	for _, name := range sortedKeys(r.groups) {
		out = append(out, r.groups[name].g)
	}
	return out
}

// DeleteGroup deletes a group that has no child groups, with its static
// memberships.
func (r *Registry) DeleteGroup(ctx context.Context, name string) error {
	r.catchUp()
	unlock := r.locks.Lock("groups")
	defer unlock()
	r.mu.RLock()
	_, ok := r.groups[name]
	var children []string
	for n, cg := range r.groups {
		if cg.g.Parent == name {
			children = append(children, n)
		}
	}
	r.mu.RUnlock()
	if !ok {
		return ErrNotFound
	}
	if len(children) > 0 {
		return fmt.Errorf("%w: group %q has child groups %v", ErrInUse, name, children)
	}
	var members []string
	err := r.cfg.Store.UpdateKV(ctx, func(kv KV) error {
		members = members[:0]
		if err := kv.ForEach(bucketMembers, name+"\x00", func(k string, _ []byte) error {
			members = append(members, strings.TrimPrefix(k, name+"\x00"))
			return kv.Delete(bucketMembers, k)
		}); err != nil {
			return err
		}
		return kv.Delete(bucketGroups, name)
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.groups, name)
	r.mu.Unlock()
	for _, th := range members {
		r.reindexThing(th)
	}
	return nil
}

// AddToGroup adds a registered thing to a static group.
func (r *Registry) AddToGroup(ctx context.Context, group, thing string) error {
	return r.membership(ctx, group, thing, true)
}

// RemoveFromGroup removes a thing from a static group.
func (r *Registry) RemoveFromGroup(ctx context.Context, group, thing string) error {
	return r.membership(ctx, group, thing, false)
}

func (r *Registry) membership(ctx context.Context, group, thing string, add bool) error {
	r.catchUp()
	r.mu.RLock()
	cg, ok := r.groups[group]
	r.mu.RUnlock()
	if !ok {
		return fmt.Errorf("group %q: %w", group, ErrNotFound)
	}
	if cg.g.Dynamic() {
		return fieldErr("groupName", "%q is a dynamic group: its members follow its query", group)
	}
	unlock := r.locks.Lock("thing:" + thing)
	defer unlock()
	err := r.cfg.Store.UpdateKV(ctx, func(kv KV) error {
		if kv.Get(bucketThings, thing) == nil {
			return fmt.Errorf("thing %q: %w", thing, ErrNotFound)
		}
		if kv.Get(bucketGroups, group) == nil { // deleted meanwhile by another node
			return fmt.Errorf("group %q: %w", group, ErrNotFound)
		}
		key := group + "\x00" + thing
		if !add {
			if kv.Get(bucketMembers, key) == nil {
				return fmt.Errorf("thing %q is not in group %q: %w", thing, group, ErrNotFound)
			}
			return kv.Delete(bucketMembers, key)
		}
		return kv.Put(bucketMembers, key, []byte{})
	})
	if err != nil {
		return err
	}
	r.reindexThing(thing)
	return nil
}

// staticGroupsOf lists the static groups a thing is directly in.
func (r *Registry) staticGroupsOf(thing string) []string {
	r.mu.RLock()
	names := sortedKeys(r.groups)
	r.mu.RUnlock()
	var out []string
	_ = r.cfg.Store.ViewKV(func(kv KV) error {
		for _, g := range names {
			if kv.Get(bucketMembers, g+"\x00"+thing) != nil {
				out = append(out, g)
			}
		}
		return nil
	})
	return out
}

// reindexThing refreshes a thing's registry values after a membership change.
func (r *Registry) reindexThing(name string) {
	t, err := r.Thing(name)
	if err != nil {
		return
	}
	r.ix.set(name, "registry", r.thingValues(t, r.staticGroupsOf(name)))
}

// ThingGroups lists every group a thing is in: static ones (with their
// ancestors) and dynamic ones whose query it matches now.
func (r *Registry) ThingGroups(name string) []string {
	r.ix.mu.RLock()
	defer r.ix.mu.RUnlock()
	id, ok := r.ix.lookup(name)
	if !ok {
		return nil
	}
	e := r.evaluator()
	var out []string
	for _, v := range (record{e, id, nil}).Values(fieldGroups) {
		out = append(out, v.S)
	}
	return out
}
