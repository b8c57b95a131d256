package registry

import (
	"strconv"
	"sync"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/registry/query"
)

// index is the in-memory fleet index: for every field, every distinct value
// and the set (a roaring bitmap of dense thing ids) of things that have it.
// An equality query is a map lookup; a bucket aggregation is one bitmap
// intersection count per distinct value; a range or wildcard scans the
// field's distinct values, not the things.
//
// Each thing's values come from sources (the registry record,
// connectivity, each shadow) that are replaced whole when they change.
type index struct {
	mu         sync.RWMutex
	ids        map[string]uint32
	names      []string
	free       []uint32
	registered *roaring.Bitmap
	fields     map[string]*field
	sources    []map[string][]posting // by id: source name → postings
}

type field struct {
	values map[string]*fvalue // normalised key → value
}

// fvalue is one distinct value of a field and the things that have it.
// Most values of high-cardinality fields (thingName, timestamps) belong to
// one thing: those keep the id inline instead of a bitmap, which keeps a
// million-thing index to a few small objects per thing.
type fvalue struct {
	v   query.Value
	one uint32          // the only id while ids is nil and n == 1
	n   int             // how many things have the value
	ids *roaring.Bitmap // nil while n <= 1
}

func (f *fvalue) add(id uint32) {
	switch {
	case f.ids != nil:
		if f.ids.CheckedAdd(id) {
			f.n++
		}
	case f.n == 0:
		f.one, f.n = id, 1
	case f.one != id:
		f.ids = roaring.BitmapOf(f.one, id)
		f.n = 2
	}
}

func (f *fvalue) remove(id uint32) {
	switch {
	case f.ids != nil:
		if f.ids.CheckedRemove(id) {
			f.n--
		}
	case f.n == 1 && f.one == id:
		f.n = 0
	}
}

// orInto adds the value's things to out.
func (f *fvalue) orInto(out *roaring.Bitmap) {
	if f.ids != nil {
		out.Or(f.ids)
	} else if f.n == 1 {
		out.Add(f.one)
	}
}

// andCardinality counts the value's things that are in set.
func (f *fvalue) andCardinality(set *roaring.Bitmap) uint64 {
	if f.ids != nil {
		return f.ids.AndCardinality(set)
	}
	if f.n == 1 && set.Contains(f.one) {
		return 1
	}
	return 0
}

type posting struct {
	f   *field
	key string
}

// fieldValue is one value a source contributes to a field.
type fieldValue struct {
	field string
	v     query.Value
}

func newIndex() *index {
	return &index{ids: map[string]uint32{}, registered: roaring.New(), fields: map[string]*field{}}
}

// normKey is the lookup key of a value: two values have the same key
// exactly when the query language calls them equal (strings fold case,
// numbers compare by exact decimal value, booleans by truth).
func normKey(v query.Value) string { return query.Key(v) }

func (ix *index) id(name string) uint32 {
	if id, ok := ix.ids[name]; ok {
		return id
	}
	var id uint32
	if n := len(ix.free); n > 0 {
		id, ix.free = ix.free[n-1], ix.free[:n-1]
		ix.names[id] = name
		ix.sources[id] = nil
	} else {
		id = uint32(len(ix.names))
		ix.names = append(ix.names, name)
		ix.sources = append(ix.sources, nil)
	}
	ix.ids[name] = id
	return id
}

// set replaces the values a source contributes for a thing (nil removes).
func (ix *index) set(thing, source string, vals []fieldValue) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.setLocked(thing, source, vals)
}

func (ix *index) setLocked(thing, source string, vals []fieldValue) {
	id, known := ix.ids[thing]
	if !known && len(vals) == 0 {
		return
	}
	if !known {
		id = ix.id(thing)
	}
	for _, p := range ix.sources[id][source] {
		if fv := p.f.values[p.key]; fv != nil {
			fv.remove(id)
			if fv.n == 0 {
				delete(p.f.values, p.key)
			}
		}
	}
	if len(vals) == 0 {
		delete(ix.sources[id], source)
		ix.release(id)
		return
	}
	ps := make([]posting, 0, len(vals))
	for _, fv := range vals {
		f := ix.fields[fv.field]
		if f == nil {
			f = &field{values: map[string]*fvalue{}}
			ix.fields[fv.field] = f
		}
		key := normKey(fv.v)
		e := f.values[key]
		if e == nil {
			e = &fvalue{v: fv.v}
			f.values[key] = e
		}
		e.add(id)
		ps = append(ps, posting{f, key})
	}
	if ix.sources[id] == nil {
		ix.sources[id] = map[string][]posting{}
	}
	ix.sources[id][source] = ps
}

// release frees an id that no source and no registration uses any more.
func (ix *index) release(id uint32) {
	if len(ix.sources[id]) > 0 || ix.registered.Contains(id) {
		return
	}
	delete(ix.ids, ix.names[id])
	ix.names[id] = ""
	ix.sources[id] = nil
	ix.free = append(ix.free, id)
}

// register marks a thing as registered (or not).
func (ix *index) register(thing string, on bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if on {
		ix.registered.Add(ix.id(thing))
		return
	}
	if id, ok := ix.ids[thing]; ok {
		ix.registered.Remove(id)
		ix.release(id)
	}
}

// values returns a thing's values of one field (read lock held by caller).
func (ix *index) valuesLocked(id uint32, fieldName string) []query.Value {
	f := ix.fields[fieldName]
	if f == nil {
		return nil
	}
	var out []query.Value
	for _, ps := range ix.sources[id] {
		for _, p := range ps {
			if p.f == f {
				out = append(out, f.values[p.key].v)
			}
		}
	}
	return out
}

// flatten turns a JSON object into field values under prefix: nested
// objects become dotted paths; array elements are values of the array's
// path (so any element matches), and objects in arrays add their fields.
func flatten(prefix string, obj []byte, out []fieldValue) []fieldValue {
	var walk func(path string, r gjson.Result)
	walk = func(path string, r gjson.Result) {
		switch {
		case r.IsObject():
			r.ForEach(func(k, v gjson.Result) bool {
				walk(path+"."+k.String(), v)
				return true
			})
		case r.IsArray():
			// Every element is a value of the array's path (any element
			// matches); objects in arrays contribute their fields.
			r.ForEach(func(_, v gjson.Result) bool {
				walk(path, v)
				return true
			})
		default:
			if v, ok := scalar(r); ok {
				out = append(out, fieldValue{path, v})
			}
		}
	}
	gjson.ParseBytes(obj).ForEach(func(k, v gjson.Result) bool {
		walk(prefix+k.String(), v)
		return true
	})
	return out
}

func scalar(r gjson.Result) (query.Value, bool) {
	switch r.Type {
	case gjson.String:
		return query.Value{Kind: query.String, S: r.Str}, true
	case gjson.Number:
		return query.Value{Kind: query.Number, S: r.Raw}, true
	case gjson.True:
		return query.Value{Kind: query.Bool, S: "true"}, true
	case gjson.False:
		return query.Value{Kind: query.Bool, S: "false"}, true
	}
	return query.Value{}, false
}

func str(s string) query.Value   { return query.Value{Kind: query.String, S: s} }
func num(n int64) query.Value    { return query.Value{Kind: query.Number, S: strconv.FormatInt(n, 10)} }
func boolean(b bool) query.Value { return query.Value{Kind: query.Bool, S: strconv.FormatBool(b)} }
