package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"sync"
	"time"

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
}

// Registry is the fleet directory and index.
type Registry struct {
	cfg   Config
	ix    *index
	locks keyed.Mutex[string]

	mu     sync.RWMutex // guards the maps below
	types  map[string]ThingType
	groups map[string]*compiledGroup
	conn   map[string]Connectivity
	// reserved: per client id, the highest version Reserve handed out
	// while it is above the current connection's
	reserved map[string]int64
}

// Open loads the registry from the store and builds the fleet index,
// including every stored shadow. Every thing starts disconnected.
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
	members := map[string][]string{} // thing → static groups
	err := cfg.Store.ViewKV(func(kv KV) error {
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
		if err := kv.ForEach(bucketMembers, "", func(k string, _ []byte) error {
			g, th, _ := cutNUL(k)
			members[th] = append(members[th], g)
			return nil
		}); err != nil {
			return fmt.Errorf("group members: %w", err)
		}
		if err := kv.ForEach(bucketConn, "", func(k string, v []byte) error {
			var c Connectivity
			if json.Unmarshal(v, &c) == nil {
				if c.Connected { // the broker restarted under it
					c.Connected, c.DisconnectReason = false, "SERVER_INITIATED_DISCONNECT"
				}
				r.conn[k] = c
			}
			return nil
		}); err != nil {
			return fmt.Errorf("connectivity: %w", err)
		}
		return kv.ForEach(bucketThings, "", func(_ string, v []byte) error {
			var t Thing
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			r.ix.register(t.Name, true)
			r.ix.set(t.Name, "registry", r.thingValues(t, members[t.Name]))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("registry: load: %w", err)
	}
	for name, c := range r.conn {
		r.ix.set(name, "connectivity", connValues(c))
	}
	if cfg.Shadows != nil {
		err := cfg.Shadows.ForEachShadow(func(ref shadow.Ref, doc []byte) error {
			r.ix.set(ref.Thing, shadowSource(ref.Name), shadowValues(ref.Name, doc))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("registry: index shadows: %w", err)
		}
	}
	return r, nil
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
