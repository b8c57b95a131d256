package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"runtime"
	"slices"

	"sync"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/umbra-iot/umbra/internal/keyed"
	"github.com/umbra-iot/umbra/registry/query"
	"github.com/umbra-iot/umbra/shadow"
)

// KV is a store transaction over named buckets (store.KV satisfies it).
type KV interface {
	Get(bucket, key string) []byte
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	ForEach(bucket, prefix string, fn func(key string, value []byte) error) error
	ForEachFrom(bucket, start string, fn func(key string, value []byte) error) error
}

// Store is the storage the registry needs (the bbolt store satisfies it).
type Store interface {
	UpdateKV(ctx context.Context, fn func(KV) error) error // durable, atomic
	ViewKV(fn func(KV) error) error
	StageKV(bucket, key string, value []byte) // write-behind
	Flush(ctx context.Context) error          // commits what StageKV staged
}

// ShadowSource lists stored shadows, to build the index at start.
type ShadowSource interface {
	ForEachShadow(fn func(ref shadow.Ref, doc []byte) error) error
}

// Publisher publishes lifecycle events.
type Publisher interface {
	Publish(topic string, payload []byte) error
}

const (
	bucketThings  = "reg_things"
	bucketTypes   = "reg_types"
	bucketGroups  = "reg_groups"
	bucketMembers = "reg_members" // group 0x00 thing
	bucketConn    = "reg_connectivity"
	// bucketDeleted holds a tombstone per deleted thing (thing → unix
	// seconds), so that with policy auto a deleted thing's credentials do
	// not register it again (Config.RecreateDeleted).
	bucketDeleted = "reg_deleted"
)

// DisabledAttribute is the thing attribute that, set to "true", refuses
// the thing's connections at CONNECT (its credentials stay; set it to
// anything else or remove it to let the thing connect again).
const DisabledAttribute = "umbra:disabled"

// Errors.
var (
	ErrNotFound        = errors.New("not found")
	ErrExists          = errors.New("already exists")
	ErrVersionConflict = errors.New("version conflict")
	ErrInUse           = errors.New("in use")
	ErrDisabled        = errors.New("refused")
)

// Policy is the registration policy.
type Policy string

const (
	// PolicyAuto registers a device on its first connection.
	PolicyAuto Policy = "auto"
	// PolicyStrict lets only registered things connect as devices.
	PolicyStrict Policy = "strict"
)

// Config assembles a Registry.
type Config struct {
	Store     Store
	Shadows   ShadowSource
	Publisher Publisher
	Policy    Policy
	Clock     func() time.Time
	Logger    *slog.Logger
	// RecreateDeleted lets a deleted thing that connects again with valid
	// credentials register itself again under policy auto. Off by default:
	// a deleted thing stays deleted until it is created explicitly.
	RecreateDeleted bool
	// OnRevoked, when set, is told (after the commit) that a thing was
	// disabled or deleted, so that its open connection can be ended.
	OnRevoked func(thing string)
	// OnConnectivity, when set, is told every connectivity change.
	OnConnectivity func(clientID string, c Connectivity)
	// Shared says the store is shared with other processes (cluster mode):
	// they report their changes through StoreChanged, and the operations
	// that read the in-memory groups and thing types first catch up with
	// every change committed before they started (catchUp).
	Shared bool
	// SnapshotPath, when set, is the file of the index snapshot: Open
	// loads the index from it when it matches the store (and rebuilds it
	// from the store otherwise); SaveSnapshot writes it.
	SnapshotPath string
}

// Registry is the fleet directory and index.
type Registry struct {
	cfg   Config
	ix    *index
	locks keyed.Mutex[string]

	source string // where Open got the index (IndexSource)

	mu     sync.RWMutex // guards the maps below
	types  map[string]ThingType
	groups map[string]*compiledGroup
	conn   map[string]Connectivity // recorded since Open; the rest is read from the store (connLocked)
	// reserved: per client id, the highest version Reserve handed out
	// while it is above the current connection's
	reserved map[string]int64

	follow follower // StoreChanged's queue (cluster mode)
}

// Open loads the registry from the store and the fleet index from its
// snapshot (Config.SnapshotPath) when that matches the store, or else
// builds the index from every thing and every stored shadow. Every thing
// starts disconnected.
func Open(cfg Config) (*Registry, error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Policy == "" {
		cfg.Policy = PolicyAuto
	}
	if cfg.Policy != PolicyAuto && cfg.Policy != PolicyStrict {
		return nil, fmt.Errorf("registry: registration policy %q: want auto or strict", cfg.Policy)
	}
	r := &Registry{cfg: cfg, ix: newIndex(), types: map[string]ThingType{}, groups: map[string]*compiledGroup{}, conn: map[string]Connectivity{}, reserved: map[string]int64{}}
	var state storeState
	haveTx := false
	err := cfg.Store.ViewKV(func(kv KV) error {
		state, haveTx = stateOf(kv)
		if err := kv.ForEach(bucketTypes, "", func(_ string, v []byte) error {
			var t ThingType
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			r.types[t.Name] = t
			return nil
		}); err != nil {
			return fmt.Errorf("thing types: %w", err)
		}
		if err := kv.ForEach(bucketGroups, "", func(_ string, v []byte) error {
			var g Group
			if err := json.Unmarshal(v, &g); err != nil {
				return err
			}
			cg := &compiledGroup{g: g}
			if g.Dynamic() {
				q, err := query.Parse(g.Query)
				if err != nil {
					return fmt.Errorf("group %s: %w", g.Name, err)
				}
				cg.q = q
			}
			r.groups[g.Name] = cg
			return nil
		}); err != nil {
			return fmt.Errorf("groups: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: load: %w", err)
	}
	start := time.Now()
	switch {
	case cfg.SnapshotPath == "":
		r.source = "rebuilt: no snapshot file configured"
	case !haveTx:
		r.source = "rebuilt: the store does not report transaction ids"
	default:
		ix, err := loadSnapshot(cfg.SnapshotPath, state)
		switch {
		case err == nil:
			r.ix, r.source = ix, "snapshot"
		case errors.Is(err, fs.ErrNotExist):
			r.source = "rebuilt: no snapshot at " + cfg.SnapshotPath
		default:
			r.source = "rebuilt: snapshot " + cfg.SnapshotPath + ": " + err.Error()
		}
	}
	if r.source != "snapshot" {
		if err := r.rebuild(); err != nil {
			return nil, err
		}
	} else if err := r.disconnectAtStart(); err != nil {
		return nil, err
	}
	cfg.Logger.Info("fleet index ready", "from", r.source, "things", r.ix.registered.GetCardinality(), "took", time.Since(start).Round(time.Millisecond))
	return r, nil
}

// atStart is a stored connectivity as Open finds it: a connection still
// open in the store ended with the restart.
//
// On a shared store (Config.Shared, cluster mode) a stored connection may
// be open on another node, so it is taken as stored.
func (r *Registry) atStart(c Connectivity) Connectivity {
	if c.Connected && !r.cfg.Shared {
		c.Connected, c.DisconnectReason = false, "SERVER_INITIATED_DISCONNECT"
	}
	return c
}

// indexConnectivity indexes every stored connectivity record (a rebuild),
// decoding a batch on every core at a time. The records themselves are
// read again when asked for (connLocked), not kept.
func (r *Registry) indexConnectivity(vals [][]fieldValue) error {
	var keys []string
	var raw [][]byte
	flush := func() {
		parallel(len(raw), func(i int) {
			var c Connectivity
			vals[i] = nil
			if json.Unmarshal(raw[i], &c) == nil {
				vals[i] = connValues(r.atStart(c))
			}
		})
		r.ix.mu.Lock()
		for i, k := range keys {
			if vals[i] != nil {
				r.ix.setLocked(k, sourceConnectivity, vals[i])
			}
		}
		r.ix.mu.Unlock()
		keys, raw = keys[:0], raw[:0]
	}
	err := r.cfg.Store.ViewKV(func(kv KV) error {
		return kv.ForEach(bucketConn, "", func(k string, v []byte) error {
			keys, raw = append(keys, k), append(raw, v)
			if len(raw) == loadBatch {
				flush()
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("registry: connectivity: %w", err)
	}
	flush()
	return nil
}

// disconnectAtStart turns the connections a snapshot has as open (it was
// taken while they were: normally none, as a shutdown ends them first)
// into ended ones, as a rebuild does.
func (r *Registry) disconnectAtStart() error {
	f := r.ix.field("connectivity.connected")
	if f == nil {
		return nil
	}
	vid, ok := f.values[normKey(boolean(true))]
	if !ok {
		return nil
	}
	var names []string
	ids := roaring.New()
	r.ix.vals[vid].orInto(ids)
	for it := ids.Iterator(); it.HasNext(); {
		names = append(names, r.ix.names[it.Next()])
	}
	for _, name := range names {
		r.mu.Lock()
		c, ok := r.connLocked(name)
		r.mu.Unlock()
		if ok {
			r.ix.set(name, sourceConnectivity, connValues(c))
		} else {
			r.ix.set(name, sourceConnectivity, nil)
		}
	}
	return nil
}

// connLocked returns a client's connectivity (r.mu held): the one recorded
// since Open, or else the stored one as Open found it. Records are read
// from the store when asked for rather than all kept in memory.
func (r *Registry) connLocked(clientID string) (Connectivity, bool) {
	if c, ok := r.conn[clientID]; ok {
		return c, true
	}
	var c Connectivity
	ok := false
	_ = r.cfg.Store.ViewKV(func(kv KV) error {
		if v := kv.Get(bucketConn, clientID); v != nil && json.Unmarshal(v, &c) == nil {
			ok = true
		}
		return nil
	})
	return r.atStart(c), ok
}

// loadBatch is how many records a rebuild decodes in parallel at a time.
const loadBatch = 4096

// parallel runs fn(i) for i in [0, n) on every core.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// rebuild builds the index from the store: every thing (in name order, so
// that ids are in name order) and every stored shadow, decoding and
// parsing a batch of records on every core at a time.
func (r *Registry) rebuild() error {
	members := map[string][]string{} // thing → static groups
	var raw [][]byte
	things := make([]Thing, loadBatch)
	vals := make([][]fieldValue, loadBatch)
	flush := func() error {
		errs := make([]error, len(raw))
		parallel(len(raw), func(i int) {
			things[i] = Thing{}
			if errs[i] = json.Unmarshal(raw[i], &things[i]); errs[i] == nil {
				vals[i] = r.thingValues(things[i], members[things[i].Name])
			}
		})
		if err := errors.Join(errs...); err != nil {
			return err
		}
		r.ix.mu.Lock()
		for i := range raw {
			t := &things[i]
			id, ok := uint32(len(r.ix.names)), r.ix.appendSorted(t.Name)
			if !ok {
				id = r.ix.id(t.Name)
			}
			r.ix.registered.Add(id)
			r.ix.setLocked(t.Name, "registry", vals[i])
		}
		r.ix.mu.Unlock()
		raw = raw[:0]
		return nil
	}
	err := r.cfg.Store.ViewKV(func(kv KV) error {
		if err := kv.ForEach(bucketMembers, "", func(k string, _ []byte) error {
			g, th, _ := cutNUL(k)
			members[th] = append(members[th], g)
			return nil
		}); err != nil {
			return fmt.Errorf("group members: %w", err)
		}
		if err := kv.ForEach(bucketThings, "", func(_ string, v []byte) error {
			raw = append(raw, v)
			if len(raw) == loadBatch {
				return flush()
			}
			return nil
		}); err != nil {
			return err
		}
		return flush()
	})
	if err != nil {
		return fmt.Errorf("registry: load: %w", err)
	}
	if err := r.indexConnectivity(vals); err != nil {
		return err
	}
	if r.cfg.Shadows == nil {
		return nil
	}
	var refs []shadow.Ref
	var docs [][]byte
	flushShadows := func() {
		parallel(len(docs), func(i int) { vals[i] = shadowValues(refs[i].Name, docs[i]) })
		r.ix.mu.Lock()
		for i, ref := range refs {
			r.ix.setLocked(ref.Thing, shadowSource(ref.Name), vals[i])
		}
		r.ix.mu.Unlock()
		refs, docs = refs[:0], docs[:0]
	}
	err = r.cfg.Shadows.ForEachShadow(func(ref shadow.Ref, doc []byte) error {
		refs, docs = append(refs, ref), append(docs, bytes.Clone(doc))
		if len(docs) == loadBatch {
			flushShadows()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: index shadows: %w", err)
	}
	flushShadows()
	return nil
}

func cutNUL(s string) (a, b string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// thingValues are the index values of a registry record. Static groups
// include their ancestors, so a query for a parent group finds members of
// its children.
func (r *Registry) thingValues(t Thing, groups []string) []fieldValue {
	vals := []fieldValue{{"thingName", str(t.Name)}, {"registry.version", num(t.Version)}}
	if t.Type != "" {
		vals = append(vals, fieldValue{"thingTypeName", str(t.Type)})
	}
	for k, v := range t.Attributes {
		vals = append(vals, fieldValue{"attributes." + k, str(v)})
	}
	seen := map[string]bool{}
	for _, g := range groups {
		for depth := 0; g != "" && !seen[g] && depth < 64; depth++ {
			seen[g] = true
			vals = append(vals, fieldValue{fieldGroups, str(g)})
			r.mu.RLock()
			parent := ""
			if cg := r.groups[g]; cg != nil {
				parent = cg.g.Parent
			}
			r.mu.RUnlock()
			g = parent
		}
	}
	return vals
}

func connValues(c Connectivity) []fieldValue {
	vals := []fieldValue{{"connectivity.connected", boolean(c.Connected)}, {"connectivity.timestamp", num(c.Timestamp)}}
	if c.DisconnectReason != "" {
		vals = append(vals, fieldValue{"connectivity.disconnectReason", str(c.DisconnectReason)})
	}
	return vals
}

func shadowSource(name string) string { return "shadow:" + name }

func shadowPrefix(name string) string {
	if name == "" {
		return "shadow."
	}
	return "shadow.name." + name + "."
}

// shadowValues are the index values of a stored shadow document.
func shadowValues(name string, doc []byte) []fieldValue {
	if doc == nil {
		return nil
	}
	p := shadowPrefix(name)
	desired, reported := shadow.DocState(doc)
	delta := shadow.DocDelta(doc)
	vals := []fieldValue{{p + "version", num(shadow.DocVersion(doc))}, {p + "hasDelta", boolean(delta != nil)}}
	if reported != nil {
		vals = flatten(p+"reported.", reported, vals)
	}
	if desired != nil {
		vals = flatten(p+"desired.", desired, vals)
	}
	if delta != nil {
		vals = flatten(p+"delta.", delta, vals)
		if since := deltaSince(doc, delta); since > 0 {
			vals = append(vals, fieldValue{p + deltaSinceField, num(since)})
		}
	}
	return vals
}

// ShadowChanged keeps the index current with a committed shadow change. It
// is called in version order per shadow (shadow.Config.OnEvent).
func (r *Registry) ShadowChanged(ev shadow.Event) {
	r.ix.set(ev.Ref.Thing, shadowSource(ev.Ref.Name), shadowValues(ev.Ref.Name, ev.Doc))
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
