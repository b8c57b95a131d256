package shadow

import "github.com/tidwall/gjson"

// The stored document is compact JSON:
//
//	{"state":{"desired":{…},"reported":{…}},"metadata":{"desired":{…},"reported":{…}},"version":N,"timestamp":T}
//
// "state" and "metadata" are always present; desired/reported (and their
// metadata) are omitted when empty; T is the Unix time of the last update.

// maxStoredDepth bounds the state sections of a stored document. Anything
// taller was not written by this package and is reported as 500 rather than
// walked. (Metadata below the sections is raw text, see document.)
const maxStoredDepth = MaxDepthLimit

// document is a stored shadow loaded for editing. Its four objects are never
// nil; an absent section is an empty object. The metadata is parsed lazily
// (parseLazy): below the section objects it stays raw text until an update
// edits that part, since most of it is only ever copied through.
type document struct {
	desired, reported         *node
	desiredMeta, reportedMeta *node
	version                   int64

	// The stored text of "state" and "metadata" as loaded, for replies about
	// the document before any edit (/update/documents "previous", /get).
	stateText, metadataText []byte
}

func emptyDocument() *document {
	return &document{desired: newObject(), reported: newObject(), desiredMeta: newObject(), reportedMeta: newObject()}
}

// loadDocument parses a stored document. It fails on anything this package
// would not have written: bad JSON, sections that are not objects, a missing or
// negative version, excessive depth.
func loadDocument(b []byte) (*document, bool) {
	root, ok := parseLazy(b, 3, "metadata")
	if !ok || root.kind != kindObject {
		return nil, false
	}
	d := emptyDocument()
	v := root.get("version")
	if v == nil || v.kind != kindNumber {
		return nil, false
	}
	if d.version, ok = parseVersion(v); !ok {
		return nil, false
	}
	state, meta := root.get("state"), root.get("metadata")
	for _, s := range [...]struct {
		parent *node
		name   string
		dst    **node
	}{
		{state, "desired", &d.desired}, {state, "reported", &d.reported},
		{meta, "desired", &d.desiredMeta}, {meta, "reported", &d.reportedMeta},
	} {
		if s.parent != nil && s.parent.kind != kindObject {
			return nil, false
		}
		sec := s.parent.get(s.name)
		if sec == nil {
			continue
		}
		if sec.kind != kindObject || sec.height > maxStoredDepth {
			return nil, false
		}
		*s.dst = sec
	}
	d.stateText, d.metadataText = []byte("{}"), []byte("{}")
	if state != nil {
		d.stateText = state.raw
	}
	if meta != nil {
		d.metadataText = meta.raw
	}
	return d, true
}

// appendState writes {"desired":…,"reported":…}, omitting empty sections.
func (d *document) appendState(dst []byte) []byte {
	w := newObj(dst)
	if d.desired.live > 0 {
		w.node("desired", d.desired)
	}
	if d.reported.live > 0 {
		w.node("reported", d.reported)
	}
	return w.close()
}

// appendMetadata writes the metadata of the present sections.
func (d *document) appendMetadata(dst []byte) []byte {
	w := newObj(dst)
	if d.desired.live > 0 {
		w.node("desired", d.desiredMeta)
	}
	if d.reported.live > 0 {
		w.node("reported", d.reportedMeta)
	}
	return w.close()
}

// marshal writes the stored form into dst. It also returns the size of the
// state object (what MaxDocumentBytes limits) and the length of the prefix
// that, closed with '}', is the {"state","metadata","version"} snapshot of
// /update/documents, so neither needs a second serialisation.
func (d *document) marshal(dst []byte, timestamp int64) (doc []byte, stateSize, snapshotLen int) {
	w := newObj(dst)
	w.key("state")
	start := len(w.buf)
	w.buf = d.appendState(w.buf)
	stateSize = len(w.buf) - start
	w.key("metadata")
	w.buf = d.appendMetadata(w.buf)
	w.int("version", d.version)
	snapshotLen = len(w.buf)
	w.int("timestamp", timestamp)
	return w.close(), stateSize, snapshotLen
}

// storedSnapshot is the {"state","metadata","version"} object of the document
// as loaded (at version), copied from its stored text.
func (d *document) storedSnapshot(dst []byte, version int64) []byte {
	w := newObj(dst)
	w.raw("state", d.stateText)
	w.raw("metadata", d.metadataText)
	w.int("version", version)
	return w.close()
}

// DocVersion is the version of a stored document, 0 if it has none.
func DocVersion(doc []byte) int64 {
	return gjson.GetBytes(doc, "version").Int()
}

// DocState returns the raw desired and reported objects of a stored document,
// nil for an absent section. The slices alias doc.
func DocState(doc []byte) (desired, reported []byte) {
	state := gjson.GetBytes(doc, "state")
	if !state.IsObject() {
		return nil, nil
	}
	return rawObject(doc, state.Get("desired")), rawObject(doc, state.Get("reported"))
}

// storedSection is the stored text of a top-level section of a stored
// document, as loadDocument keeps it ({} when absent).
func storedSection(doc []byte, name string) []byte {
	if raw := rawObject(doc, gjson.GetBytes(doc, name)); raw != nil {
		return raw
	}
	return []byte("{}")
}

func rawObject(doc []byte, r gjson.Result) []byte {
	if !r.IsObject() {
		return nil
	}
	if r.Index > 0 && r.Index+len(r.Raw) <= len(doc) {
		return doc[r.Index : r.Index+len(r.Raw)]
	}
	return []byte(r.Raw)
}

// DocDelta is the current delta of a stored document (desired values that
// differ from reported, spec §3.5), nil when empty or when doc is unreadable.
func DocDelta(doc []byte) []byte {
	// Most devices only report: with no desired state there is no delta,
	// and finding that out needs no parse (gjson scans without allocating).
	if desired := gjson.GetBytes(doc, "state.desired"); !desired.IsObject() || emptyObject(desired.Raw) {
		return nil
	}
	d, ok := loadDocument(doc)
	if !ok {
		return nil
	}
	delta, _ := computeDelta(d.desired, d.desiredMeta, d.reported)
	if delta == nil {
		return nil
	}
	return appendNode(nil, delta)
}

// emptyObject reports whether raw is a JSON object with no members.
func emptyObject(raw string) bool {
	for _, c := range raw[1:] {
		switch c {
		case ' ', '\t', '\n', '\r':
		case '}':
			return true
		default:
			return false
		}
	}
	return false
}
