package registry

import (
	"sort"
	"strconv"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/umbra-iot/umbra/registry/query"
)

// evaluator snapshots the dynamic groups for one query (index read lock
// held by the caller).
func (r *Registry) evaluator() *evaluator {
	r.mu.RLock()
	groups := make(map[string]*compiledGroup, len(r.groups))
	for n, g := range r.groups {
		if g.g.Dynamic() {
			groups[n] = g
		}
	}
	r.mu.RUnlock()
	return &evaluator{ix: r.ix, groups: groups, now: r.cfg.Clock()}
}

// match evaluates q to the set of registered things matching it.
func (r *Registry) match(q *query.Query) *roaring.Bitmap {
	return roaring.And(r.evaluator().eval(q.Root), r.ix.registered)
}

// SearchResult is one page of things matching a query.
type SearchResult struct {
	Total     uint64   // matching things in all
	Things    []string // this page, in name order
	NextToken string   // the last name of this page when more follow
}

// Search returns the names of matching things in name order, a page of at
// most limit after the name after.
func (r *Registry) Search(q *query.Query, after string, limit int) SearchResult {
	r.ix.mu.RLock()
	defer r.ix.mu.RUnlock()
	ids := r.match(q)
	res := SearchResult{Total: ids.GetCardinality()}
	if limit <= 0 {
		return res
	}
	// Names in the sorted range come in id order: a first page of 100 out
	// of a million matches walks 101 ids, not the million.
	names := r.ix.page(ids, after, limit)
	if len(names) > limit {
		names = names[:limit]
		res.NextToken = names[len(names)-1]
	}
	res.Things = names
	return res
}

// Count returns how many registered things match q.
func (r *Registry) Count(q *query.Query) uint64 {
	r.ix.mu.RLock()
	defer r.ix.mu.RUnlock()
	return r.match(q).GetCardinality()
}

// Bucket is one value of an aggregation field and how many matching
// things have it.
type Bucket struct {
	Value string `json:"keyValue"`
	Count uint64 `json:"count"`
}

// Buckets counts the matching things per value of field (a terms
// aggregation): the largest buckets first, at most max of them. total is
// the number of matching things.
func (r *Registry) Buckets(q *query.Query, field string, max int) (buckets []Bucket, total uint64) {
	r.ix.mu.RLock()
	defer r.ix.mu.RUnlock()
	ids := r.match(q)
	total = ids.GetCardinality()
	if field == fieldThingName {
		it := ids.Iterator()
		for it.HasNext() {
			buckets = append(buckets, Bucket{Value: r.ix.names[it.Next()], Count: 1})
		}
	} else if f := r.ix.field(field); f != nil {
		for _, vid := range f.values {
			v := &r.ix.vals[vid]
			if n := v.andCardinality(ids); n > 0 {
				buckets = append(buckets, Bucket{Value: v.v.S, Count: n})
			}
		}
	} else {
		return nil, total
	}
	sort.Slice(buckets, func(i, j int) bool {
		if buckets[i].Count != buckets[j].Count {
			return buckets[i].Count > buckets[j].Count
		}
		return buckets[i].Value < buckets[j].Value
	})
	if max > 0 && len(buckets) > max {
		buckets = buckets[:max]
	}
	return buckets, total
}

// Members lists a group's members (static: direct members and members of
// its descendants; dynamic: things matching its query now), a page at a time.
func (r *Registry) Members(group, after string, limit int) (SearchResult, error) {
	g, err := r.Group(group)
	if err != nil {
		return SearchResult{}, err
	}
	q, err := query.Parse(fieldGroups + ":" + strconv.Quote(g.Name))
	if err != nil {
		return SearchResult{}, err
	}
	return r.Search(q, after, limit), nil
}

// MatchThing reports whether one registered thing matches q now.
func (r *Registry) MatchThing(q *query.Query, name string) bool {
	r.ix.mu.RLock()
	defer r.ix.mu.RUnlock()
	id, ok := r.ix.lookup(name)
	if !ok || !r.ix.registered.Contains(id) {
		return false
	}
	return q.Match(record{r.evaluator(), id, nil})
}

// MatchThingShadow is MatchThing with the fields of one shadow (shadowName,
// "" for the classic shadow) read from doc, a document the caller read
// (a stored document or a GET response; nil: no such shadow), instead of
// the index. A caller that reads a shadow and also matches queries on it
// thus decides on one shadow version, although the index applies each
// committed change a moment after the commit.
func (r *Registry) MatchThingShadow(q *query.Query, name, shadowName string, doc []byte) bool {
	r.ix.mu.RLock()
	defer r.ix.mu.RUnlock()
	id, ok := r.ix.lookup(name)
	if !ok || !r.ix.registered.Contains(id) {
		return false
	}
	return q.Match(record{r.evaluator(), id, newShadowOverlay(shadowName, doc)})
}

// Registered is the number of registered things.
func (r *Registry) Registered() uint64 {
	r.ix.mu.RLock()
	defer r.ix.mu.RUnlock()
	return r.ix.registered.GetCardinality()
}
