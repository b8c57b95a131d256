package shadow

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// Seeds shared by the fuzz targets; testdata/fuzz/<Target>/ holds more,
// including inputs that once failed.
var fuzzSeeds = []string{
	`{"state":{"reported":{"color":"red"}}}`,
	`{"state":{"desired":{"color":"green"}},"clientToken":"c1","version":3}`,
	`{"state":{"desired":{"a":{"b":{"c":1,"d":2}}},"reported":{"a":{"b":{"c":1.0,"d":3}}}}}`,
	`{"state":{"desired":{"l":[1,{"x":[2]}]},"reported":{"l":[1]}}}`,
	`{"state":{"desired":null,"reported":{"a":null,"b":{}}}}`,
	`{"state":null}`,
	`{"state":{}}`,
	`{"desired":{"led_is_on":false}}`,
	`{"reported":{"n":1e400,"m":-0.0,"s":"\u00e9\ud83d\ude00"}}`,
	`{"state":{"delta":{}}}`,
	`{"state":{"desired":{"a":[null]}}}`,
	`{"state":{"reported":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}}}`,
	`{"state":{"reported":{"a":1,"a":2}}}`,
	`[[[[`,
	"",
	"\xff",
}

// fuzzDocs are the stored states FuzzUpdate applies payloads to.
func fuzzDocs(t testing.TB) []Current {
	keep := Options{Converge: ConvergeKeep}
	a := mustUpdate(t, Current{}, `{"state":{"desired":{"color":"green","cfg":{"rate":5,"l":[1,2]},"x":1},"reported":{"color":"red","cfg":{"rate":5.0,"mode":"eco"},"up":[{"a":1}]}}}`, keep).Doc
	b := mustUpdate(t, Current{}, `{"state":{"reported":{"led_is_on":true,"firmware_version":"1.0.0","big":123456789012345678901234567890}}}`, Options{}).Doc
	return []Current{{}, {Version: 7}, {Doc: a}, {Doc: b}}
}

func FuzzParseUpdate(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, payload []byte, strict bool) {
		o := Options{Strict: strict}
		req, tok, has, err := ParseUpdate(payload, o)
		if has && len(tok) > DefaultMaxClientTokenBytes {
			t.Fatalf("returned an over-long token %q", tok)
		}
		if err != nil {
			if req != nil {
				t.Fatal("a rejection returned a request")
			}
			if err.Code != 400 && err.Code != 413 && err.Code != 415 {
				t.Fatalf("unexpected rejection %v", err)
			}
			checkCompact(t, "rejected", Rejected(err, tok, has, time.Unix(1, 0)))
			return
		}
		if !json.Valid(payload) {
			t.Fatalf("accepted a payload encoding/json rejects: %q", payload)
		}
		if req.HasToken != has || req.ClientToken != tok {
			t.Fatalf("token mismatch: %+v vs %q %v", req, tok, has)
		}
		checkCompact(t, "state echo", req.State())
	})
}

func FuzzUpdate(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add([]byte(s), uint8(i), i%3 == 0)
	}
	docs := fuzzDocs(f)
	f.Fuzz(func(t *testing.T, payload []byte, which uint8, keep bool) {
		cur := docs[int(which)%len(docs)]
		o := Options{}
		if keep {
			o.Converge = ConvergeKeep
		}
		now := time.Unix(1700000000, 0)
		req, tok, has, err := ParseUpdate(payload, o)
		var res UpdateResult
		if err == nil {
			res, err = Update(cur, req, now, o)
		}
		if err != nil {
			checkCompact(t, "rejected", Rejected(err, tok, has, now))
			return
		}
		checkUpdateResult(t, cur, req, res, o)
	})
}

// checkUpdateResult states what every accepted update guarantees.
func checkUpdateResult(t *testing.T, cur Current, req *UpdateRequest, res UpdateResult, o Options) {
	t.Helper()
	for name, p := range map[string][]byte{"doc": res.Doc, "accepted": res.Accepted, "documents": res.Documents} {
		checkCompact(t, name, p)
	}
	d, ok := loadDocument(res.Doc)
	if !ok {
		t.Fatalf("the new document does not load: %s", res.Doc)
	}
	old := cur.Version
	if cur.Doc != nil {
		old = DocVersion(cur.Doc)
	}
	if res.Version != old+1 || d.version != old+1 {
		t.Fatalf("version %d (doc %d) after %d", res.Version, d.version, old)
	}
	if size := len(d.appendState(nil)); size > o.Normalize().MaxDocumentBytes {
		t.Fatalf("state of %d bytes accepted", size)
	}
	checkMirrors(t, d.desired, d.desiredMeta)
	checkMirrors(t, d.reported, d.reportedMeta)
	if d.desired.height > int32(o.Normalize().MaxDepth) || d.reported.height > int32(o.Normalize().MaxDepth) {
		t.Fatalf("document deeper than the limit: %s", res.Doc)
	}

	delta := DocDelta(res.Doc)
	if (delta == nil) != (res.Delta == nil) {
		t.Fatalf("delta message %s, but the document's delta is %s", res.Delta, delta)
	}
	if res.Delta != nil {
		checkCompact(t, "delta", res.Delta)
		if !sameJSON([]byte(gjson.GetBytes(res.Delta, "state").Raw), delta) {
			t.Fatalf("delta message %s, recomputed %s", res.Delta, delta)
		}
	}
	if delta != nil {
		dn, _ := parseJSON(delta)
		checkDelta(t, d.desired, d.reported, dn)
	} else {
		checkDelta(t, d.desired, d.reported, nil)
	}
	if o.Converge != ConvergeKeep { // prune: what is left of desired is its delta
		desired, _ := DocState(res.Doc)
		if (desired == nil) != (delta == nil) || desired != nil && !sameJSON(desired, delta) {
			t.Fatalf("prune left desired %s with delta %s", desired, delta)
		}
	}

	acc := gjson.ParseBytes(res.Accepted)
	if acc.Get("version").Int() != res.Version || !sameJSON([]byte(acc.Get("state").Raw), req.State()) {
		t.Fatalf("accepted %s does not echo the request %s", res.Accepted, req.State())
	}
	docs := gjson.ParseBytes(res.Documents)
	if docs.Get("current.version").Int() != res.Version ||
		(cur.Doc == nil) != (docs.Get("previous").Type == gjson.Null) ||
		cur.Doc != nil && docs.Get("previous.version").Int() != old {
		t.Fatalf("documents %s", res.Documents)
	}
	if got, err := Get(Current{Doc: res.Doc}, "", false, time.Unix(1, 0)); err != nil {
		t.Fatalf("Get of the new document: %v", err)
	} else {
		checkCompact(t, "get", got)
	}
}

// checkMirrors fails unless meta mirrors state: same keys, arrays of the same
// length, and a {"timestamp":N} leaf for every scalar.
func checkMirrors(t *testing.T, state, meta *node) {
	t.Helper()
	if meta == nil {
		t.Fatalf("no metadata for %s", appendNode(nil, state))
	}
	meta.expand()
	switch state.kind {
	case kindObject:
		if meta.kind != kindObject || meta.live != state.live {
			t.Fatalf("metadata %s does not mirror %s", appendNode(nil, meta), appendNode(nil, state))
		}
		for _, m := range state.members {
			if m.val != nil {
				checkMirrors(t, m.val, meta.get(m.name))
			}
		}
	case kindArray:
		if meta.kind != kindArray || len(meta.elems) != len(state.elems) {
			t.Fatalf("metadata %s does not mirror %s", appendNode(nil, meta), appendNode(nil, state))
		}
		for i := range state.elems {
			checkMirrors(t, state.elems[i], meta.elems[i])
		}
	default:
		ts := meta.get("timestamp")
		if meta.kind != kindObject || meta.live != 1 || ts == nil || ts.kind != kindNumber {
			t.Fatalf("leaf metadata %s", appendNode(nil, meta))
		}
	}
}

// checkDelta states the delta rules of spec §3.5 independently of
// computeDelta: a desired key is in the delta exactly when reported does not
// cover it, and then with the desired value (recursing into two objects).
func checkDelta(t *testing.T, desired, reported, delta *node) {
	t.Helper()
	for _, m := range delta.membersOrNil() {
		if m.val != nil && desired.get(m.name) == nil {
			t.Fatalf("delta key %q is not desired", m.name)
		}
	}
	for _, m := range desired.members {
		if m.val == nil {
			continue
		}
		dv, rv, dd := m.val, reported.get(m.name), delta.get(m.name)
		switch {
		case rv != nil && dv.kind == kindObject && rv.kind == kindObject:
			if (dd == nil) != covers(dv, rv) {
				t.Fatalf("key %q: delta %v but covered %v", m.name, dd != nil, covers(dv, rv))
			}
			if dd != nil {
				checkDelta(t, dv, rv, dd)
			}
		case rv != nil && equal(dv, rv):
			if dd != nil {
				t.Fatalf("key %q equals reported but is in the delta", m.name)
			}
		default:
			if dd == nil || !sameNode(dd, dv) {
				t.Fatalf("key %q differs from reported but the delta has %v", m.name, dd)
			}
		}
	}
}

func (n *node) membersOrNil() []member {
	if n == nil {
		return nil
	}
	return n.members
}

// covers reports whether reported has every desired leaf with an equal value.
func covers(desired, reported *node) bool {
	for _, m := range desired.members {
		if m.val == nil {
			continue
		}
		rv := reported.get(m.name)
		switch {
		case rv == nil:
			return false
		case m.val.kind == kindObject && rv.kind == kindObject:
			if !covers(m.val, rv) {
				return false
			}
		case !equal(m.val, rv):
			return false
		}
	}
	return true
}

func FuzzDelta(f *testing.F) {
	f.Add(`{"a":1,"b":{"c":[1,2],"d":"x"}}`, `{"a":1.0,"b":{"c":[1,2],"d":"y"},"e":3}`)
	f.Add(`{"a":{"b":1}}`, `{"a":5}`)
	f.Add(`{"n":1e2}`, `{"n":100}`)
	f.Fuzz(func(t *testing.T, desired, reported string) {
		d, ok1 := parseJSON([]byte(desired))
		r, ok2 := parseJSON([]byte(reported))
		if !ok1 || !ok2 || d.kind != kindObject || r.kind != kindObject || d.height > MaxDepthLimit || r.height > MaxDepthLimit {
			return
		}
		delta, meta := computeDelta(d, valueMeta(d, timestampLeaf(1)), r)
		checkDelta(t, d, r, delta)
		if delta != nil {
			checkMirrors(t, delta, meta)
		}
		// prune must leave exactly the delta.
		dm := valueMeta(d, timestampLeaf(1))
		prune(d, dm, r)
		if delta == nil && d.live != 0 || delta != nil && !sameNode(d, delta) {
			t.Fatalf("prune left %s, delta %v", appendNode(nil, d), delta)
		}
	})
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{
		"$aws/things/T/shadow/update", "$aws/things/T/shadow/name/S/update/delta", "$aws/things/T/shadow/get/accepted",
		"$aws/things/T/shadow/name/$package/delete/rejected", "$aws/things/T/shadow/name/get", "$aws/things/+/shadow/#", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		tp, ok := ParseTopic(topic)
		if !ok {
			if tp != (Topic{}) {
				t.Fatalf("rejected topic returned %+v", tp)
			}
			return
		}
		if !tp.Ref.Valid() {
			t.Fatalf("accepted invalid names: %+v", tp)
		}
		if back := tp.Ref.Topic(tp.Op, tp.Suffix); back != topic {
			t.Fatalf("%q round-trips to %q", topic, back)
		}
	})
}
