package shadow

import (
	"bytes"
	"encoding/json"
	"testing"
)

// sameJSON reports whether a and b are the same JSON value: objects compare as
// unordered sets of members, arrays in order, and scalars byte for byte, so a
// number must come back exactly as it was written (1.0 is not 1).
func sameJSON(a, b []byte) bool {
	x, ok1 := parseJSON(a)
	y, ok2 := parseJSON(b)
	return ok1 && ok2 && sameNode(x, y)
}

func sameNode(a, b *node) bool {
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case kindObject:
		if a.live != b.live {
			return false
		}
		for _, m := range a.members {
			if m.val == nil {
				continue
			}
			bv := b.get(m.name)
			if bv == nil || !sameNode(m.val, bv) {
				return false
			}
		}
		return true
	case kindArray:
		if len(a.elems) != len(b.elems) {
			return false
		}
		for i := range a.elems {
			if !sameNode(a.elems[i], b.elems[i]) {
				return false
			}
		}
		return true
	}
	return bytes.Equal(a.raw, b.raw)
}

// checkPayload fails unless got is valid, compact JSON (what every reply and
// stored document must be) equal to want in the sense of sameJSON.
func checkPayload(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Errorf("%s: unexpected payload %s", what, got)
		}
		return
	}
	if got == nil {
		t.Errorf("%s: missing, want %s", what, compact(want))
		return
	}
	checkCompact(t, what, got)
	if !sameJSON(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, got, compact(want))
	}
}

func checkCompact(t *testing.T, what string, got []byte) {
	t.Helper()
	if !json.Valid(got) {
		t.Errorf("%s: invalid JSON %q", what, got)
		return
	}
	n, ok := parseJSON(got)
	if !ok {
		t.Errorf("%s: rejected by parseJSON: %q", what, got)
		return
	}
	if re := appendNode(nil, n); !bytes.Equal(re, got) {
		t.Errorf("%s: not compact: %s", what, got)
	}
}

func compact(b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

func TestSameJSON(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{`{"a":1,"b":[1,2]}`, `{ "b": [1, 2], "a": 1 }`, true},
		{`{"a":1}`, `{"a":1.0}`, false},
		{`{"a":1}`, `{"a":1,"b":2}`, false},
		{`[1,2]`, `[2,1]`, false},
		{`{"a":"x"}`, `{"a":"\u0078"}`, false},
		{`null`, `null`, true},
		{`{"a":null}`, `{"a":false}`, false},
	} {
		if got := sameJSON([]byte(c.a), []byte(c.b)); got != c.same {
			t.Errorf("sameJSON(%s, %s) = %v", c.a, c.b, got)
		}
	}
}
