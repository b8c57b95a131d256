package registry

import (
	"container/heap"
	"slices"
	"sort"
	"strconv"
	"sync"
	"unicode/utf8"

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
// It is kept compact for fleets of millions: a thing is an integer id, its
// name one string (one shared allocation when loaded from a snapshot), and
// its values one slice of integers (a record: for each source, the source
// id, the number of values and their value ids). There are no maps or
// objects per thing. Ids below sorted are in name order (a snapshot and a
// rebuild number things so), which lets a page of results in name order
// stop after the page; things added since get ids after them.
//
// Each thing's values come from sources (the registry record,
// connectivity, each shadow) that are replaced whole when they change.
type index struct {
	mu sync.RWMutex

	names  []string          // by id; "" for a released id at or past sorted
	sorted uint32            // ids [0, sorted) are in strictly increasing name order
	extra  map[string]uint32 // name → id for ids at or past sorted
	dead   *roaring.Bitmap   // released ids below sorted (never reused until renumbered)

	registered *roaring.Bitmap
	recs       [][]uint32 // by id: segments of [source id, n, n value ids]

	sources   []string // source id → name
	sourceIDs map[string]uint32

	fields   []*field // field id → field
	fieldIDs map[string]uint32

	vals     []fvalue // value id → value
	freeVals []uint32
}

type field struct {
	name   string
	values map[string]uint32 // normalised key → value id
}

// fvalue is one distinct value of a field and the things that have it.
// Most values of high-cardinality fields (timestamps) belong to one thing:
// those keep the id inline instead of a bitmap.
type fvalue struct {
	v     query.Value
	field uint32
	one   uint32          // the only id while ids is nil and n == 1
	n     uint32          // how many things have the value (0: a free slot)
	ids   *roaring.Bitmap // nil while n <= 1
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

// fieldValue is one value a source contributes to a field.
type fieldValue struct {
	field string
	v     query.Value
}

// fieldThingName is not stored as values: a registered thing's name is
// its thingName (see index.thingNameTerm).
const fieldThingName = "thingName"

// sourceConnectivity is the source of a client's connectivity values.
const sourceConnectivity = "connectivity"

func newIndex() *index {
	return &index{extra: map[string]uint32{}, dead: roaring.New(), registered: roaring.New(),
		sourceIDs: map[string]uint32{}, fieldIDs: map[string]uint32{}}
}

// normKey is the lookup key of a value: two values have the same key
// exactly when the query language calls them equal (strings fold case,
// numbers compare by exact decimal value, booleans by truth).
func normKey(v query.Value) string { return query.Key(v) }

// lookup returns a thing's id.
func (ix *index) lookup(name string) (uint32, bool) {
	if name == "" {
		return 0, false
	}
	n := int(ix.sorted)
	i := sort.Search(n, func(i int) bool { return ix.names[i] >= name })
	if i < n && ix.names[i] == name && !ix.dead.Contains(uint32(i)) {
		return uint32(i), true
	}
	id, ok := ix.extra[name]
	return id, ok
}

// id returns a thing's id, giving it a new one if it has none.
func (ix *index) id(name string) uint32 {
	if id, ok := ix.lookup(name); ok {
		return id
	}
	id := uint32(len(ix.names))
	ix.names = append(ix.names, name)
	ix.recs = append(ix.recs, nil)
	ix.extra[name] = id
	return id
}

// appendSorted gives name the next id and extends the sorted range; names
// must come in increasing order into an index whose ids are all sorted
// (a rebuild, in key order).
func (ix *index) appendSorted(name string) bool {
	n := len(ix.names)
	if n != int(ix.sorted) || (n > 0 && ix.names[n-1] >= name) || name == "" {
		return false
	}
	ix.names = append(ix.names, name)
	ix.recs = append(ix.recs, nil)
	ix.sorted++
	return true
}

func (ix *index) sourceID(name string) uint32 {
	if id, ok := ix.sourceIDs[name]; ok {
		return id
	}
	id := uint32(len(ix.sources))
	ix.sources = append(ix.sources, name)
	ix.sourceIDs[name] = id
	return id
}

func (ix *index) field(name string) *field {
	if id, ok := ix.fieldIDs[name]; ok {
		return ix.fields[id]
	}
	return nil
}

// valueID returns the id of a field's value, making it if needed.
func (ix *index) valueID(fieldName string, v query.Value) uint32 {
	fid, ok := ix.fieldIDs[fieldName]
	if !ok {
		fid = uint32(len(ix.fields))
		ix.fields = append(ix.fields, &field{name: fieldName, values: map[string]uint32{}})
		ix.fieldIDs[fieldName] = fid
	}
	f := ix.fields[fid]
	key := normKey(v)
	if vid, ok := f.values[key]; ok {
		return vid
	}
	var vid uint32
	if n := len(ix.freeVals); n > 0 {
		vid, ix.freeVals = ix.freeVals[n-1], ix.freeVals[:n-1]
		ix.vals[vid] = fvalue{v: v, field: fid}
	} else {
		vid = uint32(len(ix.vals))
		ix.vals = append(ix.vals, fvalue{v: v, field: fid})
	}
	f.values[key] = vid
	return vid
}

// unpost takes thing id off value vid, freeing the value when no thing has it.
func (ix *index) unpost(vid, id uint32) {
	v := &ix.vals[vid]
	if v.n == 0 {
		return
	}
	v.remove(id)
	if v.n == 0 {
		delete(ix.fields[v.field].values, normKey(v.v))
		*v = fvalue{}
		ix.freeVals = append(ix.freeVals, vid)
	}
}

// set replaces the values a source contributes for a thing (nil removes).
func (ix *index) set(thing, source string, vals []fieldValue) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.setLocked(thing, source, vals)
}

func (ix *index) setLocked(thing, source string, vals []fieldValue) {
	id, known := ix.lookup(thing)
	if !known && len(vals) == 0 {
		return
	}
	if !known {
		id = ix.id(thing)
	}
	sid := ix.sourceID(source)
	rec := ix.recs[id]
	// Take the thing off the source's old values, keeping the other segments.
	at, end := -1, -1
	for i := 0; i+1 < len(rec); {
		n := int(rec[i+1])
		if rec[i] == sid {
			for _, vid := range rec[i+2 : i+2+n] {
				ix.unpost(vid, id)
			}
			at, end = i, i+2+n
			break
		}
		i += 2 + n
	}
	// The new segment (values of the same field and key once).
	var seg []uint32
	if len(vals) > 0 {
		seg = make([]uint32, 2, 2+len(vals))
		seg[0] = sid
		var seen map[uint32]struct{} // for many values; a few are compared directly
		if len(vals) > 32 {
			seen = make(map[uint32]struct{}, len(vals))
		}
		for _, fv := range vals {
			if fv.field == fieldThingName {
				continue
			}
			vid := ix.valueID(fv.field, fv.v)
			if seen != nil {
				if _, dup := seen[vid]; dup {
					continue
				}
				seen[vid] = struct{}{}
			} else if slices.Contains(seg[2:], vid) {
				continue
			}
			ix.vals[vid].add(id)
			seg = append(seg, vid)
		}
		seg[1] = uint32(len(seg) - 2)
	}
	var out []uint32
	if at >= 0 && end-at == len(seg) {
		copy(rec[at:end], seg) // same size: in place
		out = rec
	} else {
		out = make([]uint32, 0, len(rec)-(end-at)+len(seg))
		if at >= 0 {
			out = append(append(out, rec[:at]...), rec[end:]...)
		} else {
			out = append(out, rec...)
		}
		out = append(out, seg...)
	}
	if len(out) == 0 {
		out = nil
	}
	ix.recs[id] = out
	if out == nil {
		ix.release(id)
	}
}

// release frees an id that no source and no registration uses any more.
func (ix *index) release(id uint32) {
	if len(ix.recs[id]) > 0 || ix.registered.Contains(id) {
		return
	}
	ix.recs[id] = nil
	if id < ix.sorted {
		ix.dead.Add(id)
		return
	}
	delete(ix.extra, ix.names[id])
	ix.names[id] = ""
}

// register marks a thing as registered (or not).
func (ix *index) register(thing string, on bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if on {
		ix.registered.Add(ix.id(thing))
		return
	}
	if id, ok := ix.lookup(thing); ok {
		ix.registered.Remove(id)
		ix.release(id)
	}
}

// valuesLocked returns a thing's values of one field (read lock held).
func (ix *index) valuesLocked(id uint32, fieldName string) []query.Value {
	if fieldName == fieldThingName {
		if ix.registered.Contains(id) {
			return []query.Value{str(ix.names[id])}
		}
		return nil
	}
	fid, ok := ix.fieldIDs[fieldName]
	if !ok {
		return nil
	}
	var out []query.Value
	rec := ix.recs[id]
	for i := 0; i+1 < len(rec); {
		n := int(rec[i+1])
		for _, vid := range rec[i+2 : i+2+n] {
			if ix.vals[vid].field == fid {
				out = append(out, ix.vals[vid].v)
			}
		}
		i += 2 + n
	}
	return out
}

// thingNameTerm evaluates a term on thingName: the names of registered
// things, tested one by one (a name is not stored as a value).
func (ix *index) thingNameTerm(t *query.Term) *roaring.Bitmap {
	if t.Op == query.OpExists {
		return ix.registered.Clone()
	}
	out := roaring.New()
	// Thing names are ASCII (ValidName), and an ASCII literal equals an
	// ASCII name exactly when they differ at most in the case of letters:
	// look up each case variant of the literal (a few letters: a few
	// lookups) instead of comparing every name.
	if t.Op == query.OpEq && isASCII(t.Value) && letters(t.Value) <= maxCaseVariantLetters {
		for _, v := range caseVariants(t.Value) {
			if id, ok := ix.lookup(v); ok && ix.registered.Contains(id) && t.MatchValue(str(v)) {
				out.Add(id)
			}
		}
		return out
	}
	// An ASCII literal equals an ASCII name only at the same length.
	asciiEq := t.Op == query.OpEq && isASCII(t.Value)
	it := ix.registered.Iterator()
	for it.HasNext() {
		id := it.Next()
		name := ix.names[id]
		if asciiEq && len(name) != len(t.Value) && isASCII(name) {
			continue
		}
		if t.MatchValue(str(name)) {
			out.Add(id)
		}
	}
	return out
}

// maxCaseVariantLetters bounds the case variants of a thingName literal
// looked up one by one (2^10 lookups); longer ones compare every name.
const maxCaseVariantLetters = 10

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func letters(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if isLetter(s[i]) {
			n++
		}
	}
	return n
}

// caseVariants lists every spelling of ASCII s with its letters in either case.
func caseVariants(s string) []string {
	out := []string{""}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) {
			for j := range out {
				out[j] += string(c)
			}
			continue
		}
		lo, up := c|0x20, c&^0x20
		n := len(out)
		for j := range n {
			out = append(out, out[j]+string(up))
			out[j] += string(lo)
		}
	}
	return out
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// page returns up to limit+1 names of ids, in name order, after the name
// after: ids in the sorted range are walked in id order from the first
// name after `after` and the walk stops after limit+1; ids added since are
// few and kept in a max-heap of the limit+1 smallest names.
func (ix *index) page(ids *roaring.Bitmap, after string, limit int) []string {
	start := sort.Search(int(ix.sorted), func(i int) bool { return ix.names[i] > after })
	var base []string
	it := ids.Iterator()
	it.AdvanceIfNeeded(uint32(start))
	for it.HasNext() && len(base) <= limit {
		id := it.Next()
		if id >= ix.sorted {
			break
		}
		base = append(base, ix.names[id])
	}
	h := &nameHeap{}
	it = ids.Iterator()
	it.AdvanceIfNeeded(ix.sorted)
	for it.HasNext() {
		id := it.Next()
		if id < ix.sorted {
			continue
		}
		n := ix.names[id]
		if n <= after {
			continue
		}
		if h.Len() <= limit {
			heap.Push(h, n)
		} else if n < (*h)[0] {
			(*h)[0] = n
			heap.Fix(h, 0)
		}
	}
	if h.Len() == 0 {
		return base
	}
	extra := []string(*h)
	sort.Strings(extra)
	n := len(base) + len(extra) // at most limit+1 of them are kept (limit may be MaxInt)
	if limit < n {
		n = limit + 1
	}
	out := make([]string, 0, n)
	for len(out) <= limit && (len(base) > 0 || len(extra) > 0) {
		if len(extra) == 0 || (len(base) > 0 && base[0] < extra[0]) {
			out, base = append(out, base[0]), base[1:]
		} else {
			out, extra = append(out, extra[0]), extra[1:]
		}
	}
	return out
}

// nameHeap is a max-heap of names.
type nameHeap []string

func (h nameHeap) Len() int           { return len(h) }
func (h nameHeap) Less(i, j int) bool { return h[i] > h[j] }
func (h nameHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *nameHeap) Push(x any)        { *h = append(*h, x.(string)) }
func (h *nameHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
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
