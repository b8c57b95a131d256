package shadow

import "strconv"

// Metadata mirrors state (spec §2.3, §3.2): every object becomes an object with
// the same keys, every array an array of per-element metadata, every leaf a
// {"timestamp":T} object holding the Unix time of its last write.

// timestampLeaf is the {"timestamp":T} leaf of one update. A single leaf is
// shared by every path the update writes; nodes are never edited in place
// once built, so the sharing is safe.
func timestampLeaf(ts int64) *node {
	return &node{
		kind:   kindObject,
		height: 1,
		live:   1,
		members: []member{{
			name:    "timestamp",
			rawName: []byte(`"timestamp"`),
			val:     &node{kind: kindNumber, raw: strconv.AppendInt(nil, ts, 10)},
		}},
	}
}

// valueMeta is the metadata of a value stored whole: a scalar is a leaf, an
// array is the array of its elements' metadata, and an object (which only
// reaches here as an array element) mirrors its keys.
func valueMeta(v, leaf *node) *node {
	switch v.kind {
	case kindArray:
		a := &node{kind: kindArray, elems: make([]*node, len(v.elems))}
		for i, e := range v.elems {
			a.elems[i] = valueMeta(e, leaf)
		}
		return a
	case kindObject:
		o := newObject()
		for _, m := range v.members {
			o.set(m.name, m.rawName, valueMeta(m.val, leaf))
		}
		return o
	}
	return leaf
}

// patchMeta is the metadata /update/accepted returns for a patch object: exactly
// the request's keys, deletions (null or {}) included, each with a leaf.
func patchMeta(p, leaf *node) *node {
	o := newObject()
	for _, m := range p.members {
		var mv *node
		switch v := m.val; {
		case v.isDeletion():
			mv = leaf
		case v.kind == kindObject:
			mv = patchMeta(v, leaf)
		default:
			mv = valueMeta(v, leaf)
		}
		o.set(m.name, m.rawName, mv)
	}
	return o
}

// acceptedMeta is the "metadata" member of /update/accepted. "state": null
// cleared both sections, so both get a leaf, as "desired": null does.
func (r *UpdateRequest) acceptedMeta(leaf *node) *node {
	o := newObject()
	if r.stateNull {
		o.set("desired", []byte(`"desired"`), leaf)
		o.set("reported", []byte(`"reported"`), leaf)
		return o
	}
	for _, s := range [...]struct {
		name  string
		patch *node
	}{{"desired", r.desired}, {"reported", r.reported}} {
		switch {
		case s.patch == nil:
		case s.patch.isDeletion():
			o.set(s.name, []byte(`"`+s.name+`"`), leaf)
		default:
			o.set(s.name, []byte(`"`+s.name+`"`), patchMeta(s.patch, leaf))
		}
	}
	return o
}
