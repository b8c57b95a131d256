package registry

import (
	"strconv"
	"strings"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/umbra-iot/umbra/registry/query"
)

// Fields the index keeps under other names than the query uses.
const (
	fieldGroups     = "thingGroupNames"
	deltaAgeSuffix  = "deltaAgeSeconds"
	deltaSinceField = "deltaSince" // epoch seconds of the oldest pending desired change
	maxGroupDepth   = 8
)

// evaluator runs one query against the index (read lock held).
type evaluator struct {
	ix     *index
	groups map[string]*compiledGroup
	now    time.Time
	depth  int
}

type compiledGroup struct {
	g Group
	q *query.Query
}

func (e *evaluator) eval(n query.Node) *roaring.Bitmap {
	switch n := n.(type) {
	case query.All:
		return e.ix.registered.Clone()
	case *query.All:
		return e.ix.registered.Clone()
	case query.And:
		return roaring.And(e.eval(n.Left), e.eval(n.Right))
	case *query.And:
		return roaring.And(e.eval(n.Left), e.eval(n.Right))
	case query.Or:
		return roaring.Or(e.eval(n.Left), e.eval(n.Right))
	case *query.Or:
		return roaring.Or(e.eval(n.Left), e.eval(n.Right))
	case query.Not:
		return roaring.AndNot(e.ix.registered, e.eval(n.X))
	case *query.Not:
		return roaring.AndNot(e.ix.registered, e.eval(n.X))
	case query.Term:
		return e.term(&n)
	case *query.Term:
		return e.term(n)
	}
	return roaring.New()
}

func (e *evaluator) term(t *query.Term) *roaring.Bitmap {
	if strings.HasSuffix(t.Field, "."+deltaAgeSuffix) {
		return e.deltaAge(t)
	}
	if t.Field == fieldThingName {
		return e.ix.thingNameTerm(t)
	}
	out := roaring.New()
	if t.Field == fieldGroups {
		out.Or(e.dynamicGroups(t))
	}
	f := e.ix.field(t.Field)
	if f == nil {
		return out
	}
	switch t.Op {
	case query.OpExists:
		for _, vid := range f.values {
			e.ix.vals[vid].orInto(out)
		}
		return out
	case query.OpEq:
		// Direct lookups of the forms the literal can take; verified with
		// the query's own equality, so the index never disagrees with Match.
		lit := t.Value
		cands := []query.Value{str(lit), {Kind: query.Number, S: lit}, {Kind: query.Bool, S: strings.ToLower(lit)}}
		seen := map[string]bool{}
		for _, c := range cands {
			k := normKey(c)
			if vid, ok := f.values[k]; ok && !seen[k] && t.MatchValue(e.ix.vals[vid].v) {
				seen[k] = true
				e.ix.vals[vid].orInto(out)
			}
		}
		return out
	}
	for _, vid := range f.values {
		if v := &e.ix.vals[vid]; t.MatchValue(v.v) {
			v.orInto(out)
		}
	}
	return out
}

// deltaAge turns "how long pending" into a comparison on the stored start
// time of the oldest pending desired change.
func (e *evaluator) deltaAge(t *query.Term) *roaring.Bitmap {
	out := roaring.New()
	f := e.ix.field(strings.TrimSuffix(t.Field, deltaAgeSuffix) + deltaSinceField)
	if f == nil {
		return out
	}
	now := e.now.Unix()
	for _, vid := range f.values {
		v := &e.ix.vals[vid]
		since, err := strconv.ParseInt(v.v.S, 10, 64)
		if err != nil {
			continue
		}
		if t.Op == query.OpExists || t.MatchValue(num(max(now-since, 0))) {
			v.orInto(out)
		}
	}
	return out
}

// dynamicGroups returns the members of every dynamic group whose name
// matches a thingGroupNames term.
func (e *evaluator) dynamicGroups(t *query.Term) *roaring.Bitmap {
	out := roaring.New()
	if e.depth >= maxGroupDepth {
		return out
	}
	for name, g := range e.groups {
		if t.Op == query.OpExists || t.MatchValue(str(name)) {
			sub := &evaluator{ix: e.ix, groups: e.groups, now: e.now, depth: e.depth + 1}
			out.Or(roaring.And(sub.eval(g.q.Root), e.ix.registered))
		}
	}
	return out
}

// record is one thing seen through query.Record, for Match on a single
// thing (a thing's dynamic groups). With ov set, the fields of one shadow
// come from a document the caller read instead of the index.
type record struct {
	e  *evaluator
	id uint32
	ov *shadowOverlay
}

// shadowOverlay holds the index values of one shadow document, standing
// in for what the index holds of that shadow.
type shadowOverlay struct {
	prefix string
	vals   map[string][]query.Value
}

func newShadowOverlay(shadowName string, doc []byte) *shadowOverlay {
	o := &shadowOverlay{prefix: shadowPrefix(shadowName), vals: map[string][]query.Value{}}
	for _, fv := range shadowValues(shadowName, doc) {
		o.vals[fv.field] = append(o.vals[fv.field], fv.v)
	}
	return o
}

// owns reports whether a field belongs to the overlaid shadow (the classic
// shadow's prefix "shadow." does not own the named shadows' fields).
func (o *shadowOverlay) owns(fieldName string) bool {
	return strings.HasPrefix(fieldName, o.prefix) &&
		(o.prefix != shadowPrefix("") || !strings.HasPrefix(fieldName, shadowPrefix("")+"name."))
}

func (r record) raw(fieldName string) []query.Value {
	if r.ov != nil && r.ov.owns(fieldName) {
		return r.ov.vals[fieldName]
	}
	return r.e.ix.valuesLocked(r.id, fieldName)
}

func (r record) Values(fieldName string) []query.Value {
	if strings.HasSuffix(fieldName, "."+deltaAgeSuffix) {
		var out []query.Value
		for _, v := range r.raw(strings.TrimSuffix(fieldName, deltaAgeSuffix) + deltaSinceField) {
			if since, err := strconv.ParseInt(v.S, 10, 64); err == nil {
				out = append(out, num(max(r.e.now.Unix()-since, 0)))
			}
		}
		return out
	}
	vals := r.raw(fieldName)
	if fieldName == fieldGroups && r.e.depth < maxGroupDepth {
		for _, name := range r.e.dynamicGroupsOf(r.id, r.ov) {
			vals = append(vals, str(name))
		}
	}
	return vals
}

// dynamicGroupsOf lists the dynamic groups a thing is in.
func (e *evaluator) dynamicGroupsOf(id uint32, ov *shadowOverlay) []string {
	var out []string
	for name, g := range e.groups {
		sub := &evaluator{ix: e.ix, groups: e.groups, now: e.now, depth: e.depth + 1}
		if g.q.Match(record{sub, id, ov}) {
			out = append(out, name)
		}
	}
	return out
}
