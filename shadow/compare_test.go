package shadow

import (
	"math/big"
	"strings"
	"testing"
)

func TestNumEqual(t *testing.T) {
	for _, c := range []struct {
		a, b  string
		equal bool
	}{
		{"1", "1.0", true},
		{"1", "1e0", true},
		{"100", "1e2", true},
		{"100", "1E+2", true},
		{"0.001", "1e-3", true},
		{"10e-1", "1", true},
		{"0", "-0", true},
		{"0", "0e99999999999999999999999", true},
		{"-0.0", "0.000", true},
		{"1", "-1", false},
		{"1", "2", false},
		{"0.1", "0.10000000000000001", false}, // equal as float64
		{"100000000000000000000001", "100000000000000000000000", false},
		{"9007199254740993", "9007199254740992", false}, // equal as float64
		{"1e400", "10e399", true},
		{"1e400", "1e401", false},
		{"1e99999999999999999999", "10e99999999999999999998", true},
		{"1e99999999999999999999", "1e99999999999999999998", false},
		{"1e-99999999999999999999", "0.1e-99999999999999999998", true},
		{"12.5e1", "125", true},
		{"-12.5e1", "-125.000", true},
		{"0.0001e4", "1", true},
	} {
		if got := numEqual([]byte(c.a), []byte(c.b)); got != c.equal {
			t.Errorf("numEqual(%s, %s) = %v", c.a, c.b, got)
		}
		if got := numEqual([]byte(c.b), []byte(c.a)); got != c.equal {
			t.Errorf("numEqual(%s, %s) = %v (not symmetric)", c.b, c.a, got)
		}
	}
}

func TestEqual(t *testing.T) {
	for _, c := range []struct {
		a, b  string
		equal bool
	}{
		{`{"a":1,"b":[1,{"c":"x"}]}`, `{"b":[1.0,{"c":"\u0078"}],"a":1e0}`, true},
		{`[1,2]`, `[2,1]`, false},
		{`[1,2]`, `[1,2,3]`, false},
		{`{"a":1}`, `{"a":1,"b":2}`, false},
		{`{"a":1,"b":2}`, `{"a":1}`, false},
		{`"1"`, `1`, false},
		{`true`, `false`, false},
		{`"a\"b"`, `"a\u0022b"`, true},
		{`"ab"`, `"ac"`, false},
		{`{}`, `[]`, false},
	} {
		a, _ := parseJSON([]byte(c.a))
		b, _ := parseJSON([]byte(c.b))
		if got := equal(a, b); got != c.equal {
			t.Errorf("equal(%s, %s) = %v", c.a, c.b, got)
		}
	}
}

// FuzzNumEqual checks the decimal comparison against exact rational arithmetic
// for numbers whose exponent big.Rat can handle quickly.
func FuzzNumEqual(f *testing.F) {
	for _, s := range [][2]string{{"1", "1.0"}, {"0.1", "1e-1"}, {"-0", "0"}, {"123.456e2", "12345.6"}, {"1e3", "999"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		na, ok1 := parseJSON([]byte(a))
		nb, ok2 := parseJSON([]byte(b))
		if !ok1 || !ok2 || na.kind != kindNumber || nb.kind != kindNumber || hugeExponent(a) || hugeExponent(b) {
			return
		}
		ra, _ := new(big.Rat).SetString(string(na.raw)) // raw: without surrounding whitespace
		rb, _ := new(big.Rat).SetString(string(nb.raw))
		if ra == nil || rb == nil {
			t.Fatalf("big.Rat cannot read %q or %q", na.raw, nb.raw)
		}
		if got, want := numEqual(na.raw, nb.raw), ra.Cmp(rb) == 0; got != want {
			t.Fatalf("numEqual(%s, %s) = %v, exact arithmetic says %v", a, b, got, want)
		}
	})
}

func hugeExponent(s string) bool {
	i := strings.IndexAny(s, "eE")
	return i >= 0 && len(strings.TrimLeft(s[i+1:], "+-0")) > 3
}
