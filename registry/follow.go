package registry

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"

	"github.com/umbra-iot/umbra/registry/query"
)

// follower brings the registry up to date with records another process
// changed in the shared store (StoreChanged).
type follower struct {
	mu      sync.Mutex
	queue   []storeKey
	queued  map[storeKey]bool
	running bool
	idle    *sync.Cond // broadcast when the queue drains
}

type storeKey struct{ bucket, key string }

// StoreChanged tells the registry that a record of one of its buckets was
// changed in the store by another process: in cluster mode, by another
// node's transaction (docs/cluster.md). The registry then brings its
// in-memory state up to date from the store: thing types, groups (and
// dynamic group queries), the fleet index entries of the things concerned
// (registry values, static group memberships, connectivity), and ends the
// connections of things deleted or disabled elsewhere (Config.OnRevoked).
//
// It returns at once; the work runs on a goroutine, reading the store
// under the same per-record locks as the registry's own writes, so the
// state after it is the store's latest. Call it in the store's commit
// order; records of other buckets are ignored.
func (r *Registry) StoreChanged(bucket, key string) {
	switch bucket {
	case bucketThings, bucketTypes, bucketGroups, bucketMembers, bucketConn:
	default:
		return
	}
	f := &r.follow
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.queued == nil {
		f.queued = map[storeKey]bool{}
		f.idle = sync.NewCond(&f.mu)
	}
	k := storeKey{bucket, key}
	if f.queued[k] {
		return
	}
	f.queued[k] = true
	f.queue = append(f.queue, k)
	if !f.running {
		f.running = true
		go r.follow.run(r)
	}
}

// WaitStoreChanges waits until the changes StoreChanged was told about
// have been applied (for tests and orderly shutdown).
func (r *Registry) WaitStoreChanges() {
	f := &r.follow
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.running && f.idle != nil {
		f.idle.Wait()
	}
}

func (f *follower) run(r *Registry) {
	for {
		f.mu.Lock()
		if len(f.queue) == 0 {
			f.running = false
			f.idle.Broadcast()
			f.mu.Unlock()
			return
		}
		k := f.queue[0]
		f.queue = f.queue[1:]
		delete(f.queued, k)
		f.mu.Unlock()
		r.refresh(k.bucket, k.key)
	}
}

func (r *Registry) refresh(bucket, key string) {
	switch bucket {
	case bucketThings:
		r.refreshThing(key)
	case bucketMembers:
		_, thing, _ := cutNUL(key)
		r.refreshThing(thing)
	case bucketTypes:
		unlock := r.locks.Lock("types")
		defer unlock()
		var t ThingType
		err := r.cfg.Store.ViewKV(func(kv KV) error { return getJSON(kv, bucketTypes, key, &t) })
		r.mu.Lock()
		switch {
		case err == nil:
			r.types[key] = t
		case errors.Is(err, ErrNotFound):
			delete(r.types, key)
		}
		r.mu.Unlock()
	case bucketGroups:
		r.refreshGroup(key)
	case bucketConn:
		r.refreshConn(key)
	}
}

// refreshThing reads a thing and its memberships again and indexes them.
func (r *Registry) refreshThing(name string) {
	unlock := r.locks.Lock("thing:" + name)
	defer unlock()
	var t Thing
	err := r.cfg.Store.ViewKV(func(kv KV) error { return getJSON(kv, bucketThings, name, &t) })
	switch {
	case errors.Is(err, ErrNotFound):
		r.ix.mu.RLock()
		id, known := r.ix.lookup(name)
		registered := known && r.ix.registered.Contains(id)
		r.ix.mu.RUnlock()
		if !registered {
			return
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
	case err == nil:
		r.ix.register(name, true)
		r.ix.set(name, "registry", r.thingValues(t, r.staticGroupsOf(name)))
		if t.Attributes[DisabledAttribute] == "true" && r.cfg.OnRevoked != nil {
			r.cfg.OnRevoked(name)
		}
	}
}

// refreshGroup reads a group again and reindexes its static members.
func (r *Registry) refreshGroup(name string) {
	unlock := r.locks.Lock("groups")
	var g Group
	var members []string
	err := r.cfg.Store.ViewKV(func(kv KV) error {
		if err := getJSON(kv, bucketGroups, name, &g); err != nil {
			return err
		}
		return kv.ForEach(bucketMembers, name+"\x00", func(k string, _ []byte) error {
			members = append(members, strings.TrimPrefix(k, name+"\x00"))
			return nil
		})
	})
	switch {
	case errors.Is(err, ErrNotFound):
		r.mu.Lock()
		delete(r.groups, name)
		r.mu.Unlock()
	case err == nil:
		cg := &compiledGroup{g: g}
		if g.Dynamic() {
			q, perr := query.Parse(g.Query)
			if perr != nil {
				r.cfg.Logger.Warn("registry: group from another node has a bad query", "group", name, "error", perr)
				unlock()
				return
			}
			cg.q = q
		}
		r.mu.Lock()
		r.groups[name] = cg
		r.mu.Unlock()
	}
	unlock()
	for _, th := range members {
		r.refreshThing(th)
	}
}

// refreshConn takes a client's connectivity as another node recorded it
// (the client is connected there), unless this node has a newer one.
func (r *Registry) refreshConn(clientID string) {
	unlock := r.locks.Lock(connLock(clientID))
	defer unlock()
	var c Connectivity
	var stored bool
	_ = r.cfg.Store.ViewKV(func(kv KV) error {
		if v := kv.Get(bucketConn, clientID); v != nil && json.Unmarshal(v, &c) == nil {
			stored = true
		}
		return nil
	})
	r.mu.Lock()
	mine, ok := r.conn[clientID]
	if !stored {
		delete(r.conn, clientID)
		r.mu.Unlock()
		r.ix.set(clientID, "connectivity", nil)
		return
	}
	if ok && mine.Version > c.Version {
		r.mu.Unlock()
		return
	}
	r.conn[clientID] = c
	r.mu.Unlock()
	r.ix.set(clientID, "connectivity", connValues(c))
}

// catchUp, on a shared store, waits until the registry has taken in every
// change committed (by any process) before the call: the store's read
// catches up with the stream and hands the other nodes' changes to
// StoreChanged first, then their queue drains. Call it holding no
// registry lock.
func (r *Registry) catchUp() {
	if !r.cfg.Shared {
		return
	}
	_ = r.cfg.Store.ViewKV(func(KV) error { return nil })
	r.WaitStoreChanges()
}
