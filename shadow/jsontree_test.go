package shadow

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// The parser must accept exactly what RFC 8259 accepts (encoding/json is the
// reference), except that duplicate keys are rejected.
func TestParseJSONAgreesWithEncodingJSON(t *testing.T) {
	inputs := []string{
		`{}`, `[]`, `0`, `-0`, `1.5e-3`, `"x"`, `true`, `false`, `null`, ` {"a" : [1, 2, {"b": null}] } `,
		`{"a":"\u00e9\ud83d\ude00\n\"\\\/"}`, `[1e400, -1E+2, 0.0]`, "\t[\n1\r]\n",
		``, ` `, `{`, `}`, `[1,]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{a:1}`, `['a']`, `01`, `1.`, `.5`, `-`, `+1`,
		`1e`, `1e+`, `NaN`, `Infinity`, `tru`, `nul`, `truex`, `"a`, `"\x"`, `"\u12"`, `"\u12g4"`, "\"a\x01\"",
		`[1] [2]`, `{}}`, `[[]`, `"\ud800"`, `{"a":1}x`, "\x00", `[1,,2]`, `{"a":1 "b":2}`, `[1 2]`,
	}
	for _, in := range inputs {
		_, got := parseJSON([]byte(in))
		if want := json.Valid([]byte(in)); got != want {
			t.Errorf("parseJSON(%q) ok = %v, encoding/json says %v", in, got, want)
		}
	}
}

func TestParseJSONRejectsDuplicateKeys(t *testing.T) {
	many := make([]string, 0, 50)
	for i := range 50 {
		many = append(many, `"k`+strings.Repeat("x", i)+`":1`)
	}
	for _, in := range []string{
		`{"a":1,"a":2}`,
		`{"a":1,"\u0061":2}`,
		`{"x":{"a":1,"b":2,"a":3}}`,
		`[{"a":1,"a":1}]`,
		`{` + strings.Join(many, ",") + `,"k":2,"kxxx":1}`,
	} {
		if _, ok := parseJSON([]byte(in)); ok {
			t.Errorf("parseJSON(%q) accepted duplicate keys", in)
		}
	}
	if _, ok := parseJSON([]byte(`{` + strings.Join(many, ",") + `}`)); !ok {
		t.Error("50 distinct keys rejected")
	}
}

func TestParseJSONHeight(t *testing.T) {
	for in, want := range map[string]int32{
		`1`: 0, `{}`: 1, `[]`: 1, `{"a":1}`: 1, `{"a":{}}`: 2, `{"a":[1,[2]],"b":{"c":{}}}`: 3,
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000): 10000,
	} {
		n, ok := parseJSON([]byte(in))
		if !ok || n.height != want {
			t.Errorf("height of %.40q = %d (ok %v), want %d", in, n.height, ok, want)
		}
	}
}

func TestRoundTripIsCompactAndVerbatim(t *testing.T) {
	in := ` { "b" : [ 1.50 , -0 , 1E400 , "\u00e9" ] , "a" : { } , "\u0063" : null } `
	n, ok := parseJSON([]byte(in))
	if !ok {
		t.Fatal("rejected")
	}
	want := `{"b":[1.50,-0,1E400,"\u00e9"],"a":{},"\u0063":null}`
	if got := string(appendNode(nil, n)); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestUnquoteAgreesWithEncodingJSON(t *testing.T) {
	for _, raw := range []string{
		`"plain"`, `"\"\\\/\b\f\n\r\t"`, `"\u00e9"`, `"\ud83d\ude00"`, `"\ud800"`, `"\udc00\ud800"`,
		`"\ud800\u0041"`, `"\u0000"`, `"é"`, `"a\ud83dx"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatal(err)
		}
		if got := unquote([]byte(raw)); got != want {
			t.Errorf("unquote(%s) = %q, encoding/json gives %q", raw, got, want)
		}
	}
}

func TestObjectEditing(t *testing.T) {
	for _, n := range []int{5, indexAbove + 4} { // below and above indexAbove: both lookup paths
		o := newObject()
		for i := range n {
			k := "k" + strconv.Itoa(i)
			o.set(k, []byte(`"`+k+`"`), &node{kind: kindNumber, raw: []byte("1")})
		}
		o.del("k2")
		o.del("k2")
		o.del("zz")
		o.set("k2", []byte(`"k2"`), &node{kind: kindTrue, raw: []byte("true")})
		o.set("k0", []byte(`"k0"`), &node{kind: kindFalse, raw: []byte("false")})
		if int(o.live) != n || o.get("k2").kind != kindTrue || o.get("k0").kind != kindFalse || o.get("zz") != nil {
			t.Fatalf("%d members: live %d, k2 %v, k0 %v", n, o.live, o.get("k2"), o.get("k0"))
		}
		got := string(appendNode(nil, o))
		last := "k" + strconv.Itoa(n-1)
		if !strings.HasPrefix(got, `{"k0":false,"k1":1,"k3":1`) || !strings.HasSuffix(got, `"`+last+`":1,"k2":true}`) {
			t.Errorf("order after edits: %s", got)
		}
	}
}

// expandAll materialises every raw node below n.
func expandAll(n *node) {
	n.expand()
	for _, m := range n.members {
		if m.val != nil {
			expandAll(m.val)
		}
	}
	for _, e := range n.elems {
		expandAll(e)
	}
}

// FuzzParseLazy: a lazy parse, fully expanded, is the eager parse; it accepts
// the same syntax (only duplicate keys inside raw text go unnoticed).
func FuzzParseLazy(f *testing.F) {
	for _, s := range []string{
		`{"state":{"a":[1,{"b":2}]},"metadata":{"desired":{"a":[{"timestamp":1},{"b":{"timestamp":1}}]}},"version":1}`,
		`[[[]],{"x":{"y":{}}}]`, `{"metadata":5}`, `{"metadata":{"a":{"b":{"c":{"d":1,"d":2}}}}}`, `{"a":[}`,
	} {
		f.Add(s, uint8(1), true)
	}
	f.Fuzz(func(t *testing.T, in string, depth uint8, onlyMetadata bool) {
		member := ""
		if onlyMetadata {
			member = "metadata"
		}
		eager, ok1 := parseJSON([]byte(in))
		lazy, ok2 := parseLazy([]byte(in), int(depth%5), member)
		if ok1 && !ok2 {
			t.Fatalf("lazy parse rejected valid %q", in)
		}
		if !ok1 && ok2 && !json.Valid([]byte(in)) {
			t.Fatalf("lazy parse accepted invalid %q", in)
		}
		if !ok1 || !ok2 || eager.height > MaxDepthLimit {
			return
		}
		expandAll(lazy)
		if !sameNode(eager, lazy) {
			t.Fatalf("%q: lazy %s, eager %s", in, appendNode(nil, lazy), appendNode(nil, eager))
		}
	})
}
