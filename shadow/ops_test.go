package shadow

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Unix(1700000000, 0)

// mustUpdate parses and applies one request, failing the test on any rejection.
func mustUpdate(t testing.TB, cur Current, payload string, o Options) UpdateResult {
	t.Helper()
	req, _, _, err := ParseUpdate([]byte(payload), o)
	if err != nil {
		t.Fatalf("ParseUpdate(%.200s): %v", payload, err)
	}
	res, err := Update(cur, req, t0, o)
	if err != nil {
		t.Fatalf("Update(%.200s): %v", payload, err)
	}
	return res
}

func TestParseUpdateFields(t *testing.T) {
	req, tok, has, err := ParseUpdate([]byte(`{"state":{"reported":{"a":1}, "desired" : null},"clientToken":"c","version":7}`), Options{})
	if err != nil || tok != "c" || !has {
		t.Fatalf("err %v token %q %v", err, tok, has)
	}
	if req.ClientToken != "c" || !req.HasToken || req.Version != 7 || !req.HasVersion {
		t.Errorf("fields: %+v", req)
	}
	if got := string(req.State()); got != `{"reported":{"a":1},"desired":null}` {
		t.Errorf("State() = %s", got)
	}
	req, _, has, _ = ParseUpdate([]byte(`{"state":{}}`), Options{})
	if req.HasToken || req.HasVersion || has {
		t.Errorf("absent token/version reported present: %+v", req)
	}
	if _, tok, has, err := ParseUpdate([]byte(`{"state":[],"clientToken":"early"}`), Options{}); err != ErrStateNotObject || tok != "early" || !has {
		t.Errorf("a rejection must still return the token: %v %q %v", err, tok, has)
	}
}

// The payload is copied: a caller reusing its receive buffer cannot change a
// parsed request.
func TestParseUpdateCopiesPayload(t *testing.T) {
	buf := []byte(`{"state":{"reported":{"a":"xyz"}}}`)
	req, _, _, err := ParseUpdate(buf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	copy(buf, bytes.Repeat([]byte("#"), len(buf)))
	res, _ := Update(Current{}, req, t0, Options{})
	if !bytes.Contains(res.Doc, []byte(`"a":"xyz"`)) {
		t.Errorf("request changed with the caller's buffer: %s", res.Doc)
	}
}

// Update must neither keep nor modify cur.Doc (a bbolt value is only valid
// inside its transaction), and a request may be applied again, concurrently.
func TestUpdateInputsUntouchedAndRequestReusable(t *testing.T) {
	doc := mustUpdate(t, Current{}, `{"state":{"desired":{"a":{"b":1,"c":[1,2]}},"reported":{"a":{"b":2}}}}`, Options{}).Doc
	orig := bytes.Clone(doc)
	req, _, _, _ := ParseUpdate([]byte(`{"state":{"desired":{"a":{"b":null,"d":{"e":1}}},"reported":{"a":{"c":[1,2]}}}}`), Options{})
	first, err := Update(Current{Doc: doc}, req, t0, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := Update(Current{Doc: doc}, req, t0, Options{})
			if err != nil || !bytes.Equal(res.Doc, first.Doc) || !bytes.Equal(res.Accepted, first.Accepted) ||
				!bytes.Equal(res.Delta, first.Delta) || !bytes.Equal(res.Documents, first.Documents) {
				t.Errorf("re-applying the request gave a different result: %v\n%s\n%s", err, res.Doc, first.Doc)
			}
		}()
	}
	wg.Wait()
	if !bytes.Equal(doc, orig) {
		t.Errorf("cur.Doc was modified:\n%s\n%s", doc, orig)
	}
	for i := range doc {
		doc[i] = 'X' // the results must not alias the stored document
	}
	checkCompact(t, "doc", first.Doc)
	checkCompact(t, "documents", first.Documents)
}

// Vector 11 with the AWS default: the merged state may be 8192 bytes, not 8193.
func TestDefaultDocumentLimit(t *testing.T) {
	overhead := len(`{"reported":{"s":""}}`)
	fill := func(n int) string { return `{"state":{"reported":{"s":"` + strings.Repeat("x", n) + `"}}}` }
	res := mustUpdate(t, Current{}, fill(8192-overhead), Options{})
	if d, r := DocState(res.Doc); d != nil || len(`{"reported":`)+len(r)+1 != 8192 {
		t.Fatalf("state is not 8192 bytes")
	}
	req, _, _, err := ParseUpdate([]byte(fill(8193-overhead)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Update(Current{}, req, t0, Options{}); err != ErrPayloadTooLarge {
		t.Errorf("8193 bytes: %v, want 413", err)
	}
	// Metadata does not count: many tiny leaves whose metadata alone is far
	// beyond 8 KiB still fit.
	var b strings.Builder
	b.WriteString(`{"state":{"reported":{`)
	for i := range 700 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + strconv.Itoa(i) + `":1`)
	}
	b.WriteString(`}}}`)
	res = mustUpdate(t, Current{}, b.String(), Options{})
	if len(res.Doc) < 2*8192 {
		t.Errorf("expected metadata well over the limit, document is %d bytes", len(res.Doc))
	}
}

func TestUnreadableStoredDocument(t *testing.T) {
	req, _, _, _ := ParseUpdate([]byte(`{"state":{"reported":{"a":1}}}`), Options{})
	for _, doc := range []string{
		`not json`, `[]`, `{"state":{}}`, `{"version":"1"}`, `{"version":-1}`, `{"version":1,"state":[]}`,
		`{"version":1,"state":{"desired":5}}`, `{"version":1,"metadata":{"reported":[]}}`,
		`{"version":1,"state":{"reported":{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}}}`,
	} {
		cur := Current{Doc: []byte(doc)}
		if _, err := Update(cur, req, t0, Options{}); err != ErrInternal {
			t.Errorf("Update on %.30q: %v, want 500", doc, err)
		}
		if _, err := Get(cur, "", false, t0); err != ErrInternal {
			t.Errorf("Get on %.30q: %v, want 500", doc, err)
		}
		if _, err := Delete(cur, "", false, t0); err != nil {
			t.Errorf("Delete must work on an unreadable document %.30q: %v", doc, err)
		}
	}
	if _, err := Update(Current{}, nil, t0, Options{}); err != ErrInternal {
		t.Errorf("nil request: %v", err)
	}
}

func TestAbsentShadow(t *testing.T) {
	for _, cur := range []Current{{}, {Version: 9}} {
		if _, err := Get(cur, "", false, t0); err != ErrNoShadow {
			t.Errorf("Get: %v", err)
		}
		if _, err := Delete(cur, "", false, t0); err != ErrNoShadow {
			t.Errorf("Delete: %v", err)
		}
	}
}

func TestDocHelpers(t *testing.T) {
	doc := mustUpdate(t, Current{}, `{"state":{"desired":{"a":1,"b":{"c":2}},"reported":{"a":1.0,"b":{"c":3}}}}`, Options{Converge: ConvergeKeep}).Doc
	if v := DocVersion(doc); v != 1 {
		t.Errorf("DocVersion = %d", v)
	}
	d, r := DocState(doc)
	if string(d) != `{"a":1,"b":{"c":2}}` || string(r) != `{"a":1.0,"b":{"c":3}}` {
		t.Errorf("DocState = %s, %s", d, r)
	}
	if got := string(DocDelta(doc)); got != `{"b":{"c":2}}` {
		t.Errorf("DocDelta = %s", got)
	}
	converged := mustUpdate(t, Current{Doc: doc}, `{"state":{"reported":{"b":{"c":2}}}}`, Options{Converge: ConvergeKeep}).Doc
	if DocDelta(converged) != nil {
		t.Errorf("DocDelta of a converged document = %s", DocDelta(converged))
	}
	if d, r := DocState([]byte(`{"state":{"reported":{"x":1}}}`)); d != nil || string(r) != `{"x":1}` {
		t.Errorf("DocState without desired = %s, %s", d, r)
	}
	if DocVersion([]byte("garbage")) != 0 || DocDelta([]byte("garbage")) != nil {
		t.Error("helpers must tolerate garbage")
	}
}

// Accepted and delta of one update share version and timestamp (spec §1.2).
func TestAcceptedAndDeltaShareVersionAndTimestamp(t *testing.T) {
	res := mustUpdate(t, Current{Version: 41}, `{"state":{"desired":{"x":1}},"clientToken":"k"}`, Options{})
	for _, p := range [][]byte{res.Accepted, res.Delta} {
		if !bytes.Contains(p, []byte(`"version":42,"timestamp":1700000000,"clientToken":"k"`)) {
			t.Errorf("payload %s", p)
		}
	}
}

// Stored metadata is parsed lazily, so damage deep inside it (a duplicate key
// the lazy pass does not look for) only surfaces when an update edits that
// part; the damaged subtree is then dropped rather than failing the shadow.
func TestDamagedStoredMetadataIsDropped(t *testing.T) {
	doc := []byte(`{"state":{"reported":{"a":{"b":1},"z":2}},"metadata":{"reported":{"a":{"b":{"timestamp":1},"b":{"timestamp":2}},"z":{"timestamp":3}}},"version":1,"timestamp":3}`)
	res := mustUpdate(t, Current{Doc: doc}, `{"state":{"reported":{"a":{"c":5}}}}`, Options{})
	want := `{"state":{"reported":{"a":{"b":1,"c":5},"z":2}},"metadata":{"reported":{"a":{"c":{"timestamp":1700000000}},"z":{"timestamp":3}}},"version":2,"timestamp":1700000000}`
	if string(res.Doc) != want {
		t.Errorf("got  %s\nwant %s", res.Doc, want)
	}
}
