package query

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/tidwall/gjson"
)

// fleetRecord is a test Record over one thing of testdata/query/fleet.json.
// Every field's values are flattened once: nested objects become dotted
// paths, array elements (and the leaves of objects inside arrays) are all
// values of the array's path, and object-valued paths exist (Exister).
type fleetRecord struct {
	name   string
	vals   map[string][]Value
	exists map[string]bool
}

func (r *fleetRecord) Values(field string) []Value { return r.vals[field] }
func (r *fleetRecord) Exists(field string) bool    { return r.exists[field] }

func (r *fleetRecord) add(path string, v gjson.Result) {
	switch {
	case v.IsObject():
		r.exists[path] = true
		v.ForEach(func(k, e gjson.Result) bool {
			r.add(path+"."+k.String(), e)
			return true
		})
	case v.IsArray():
		v.ForEach(func(_, e gjson.Result) bool {
			r.add(path, e)
			return true
		})
	default:
		var val Value
		switch v.Type {
		case gjson.String:
			val = Str(v.Str)
		case gjson.Number:
			val = Num(v.Raw)
		case gjson.True:
			val = Boolean(true)
		case gjson.False:
			val = Boolean(false)
		default:
			return // null
		}
		r.vals[path] = append(r.vals[path], val)
		r.exists[path] = true
	}
}

func (r *fleetRecord) addShadow(prefix string, s gjson.Result) {
	for _, k := range []string{"version", "hasDelta", "deltaAgeSeconds"} {
		if v := s.Get(k); v.Exists() {
			r.add(prefix+k, v)
		}
	}
	for _, sec := range []string{"reported", "desired", "delta"} {
		s.Get(sec).ForEach(func(k, v gjson.Result) bool {
			r.add(prefix+sec+"."+k.String(), v)
			return true
		})
	}
}

func newFleetRecord(t gjson.Result) *fleetRecord {
	r := &fleetRecord{name: t.Get("thingName").String(), vals: map[string][]Value{}, exists: map[string]bool{}}
	r.add("thingName", t.Get("thingName"))
	if v := t.Get("thingTypeName"); v.Exists() {
		r.add("thingTypeName", v)
	}
	if v := t.Get("thingGroupNames"); v.Exists() {
		r.add("thingGroupNames", v)
	}
	r.add("registry.version", t.Get("version"))
	t.Get("attributes").ForEach(func(k, v gjson.Result) bool {
		r.add("attributes."+k.String(), v)
		return true
	})
	t.Get("connectivity").ForEach(func(k, v gjson.Result) bool {
		r.add("connectivity."+k.String(), v)
		return true
	})
	if s := t.Get("shadow"); s.Exists() {
		r.addShadow("shadow.", s)
	}
	t.Get("namedShadows").ForEach(func(k, v gjson.Result) bool {
		r.addShadow("shadow.name."+k.String()+".", v)
		return true
	})
	return r
}

func loadFleet(tb testing.TB) []*fleetRecord {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "query", "fleet.json"))
	if err != nil {
		tb.Fatal(err)
	}
	if !gjson.ValidBytes(data) {
		tb.Fatal("fleet.json is not valid JSON")
	}
	var out []*fleetRecord
	gjson.GetBytes(data, "things").ForEach(func(_, t gjson.Result) bool {
		out = append(out, newFleetRecord(t))
		return true
	})
	if len(out) == 0 {
		tb.Fatal("fleet.json has no things")
	}
	return out
}

// matching returns the sorted names of the things q matches.
func matching(q *Query, fleet []*fleetRecord) []string {
	out := []string{}
	for _, r := range fleet {
		if q.Match(r) {
			out = append(out, r.name)
		}
	}
	sort.Strings(out)
	return out
}
