package query

import (
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	n, s, b := Num, Str, Boolean
	cases := []struct {
		a, b Value
		want int
	}{
		// Numbers: exact decimal value.
		{n("1"), n("1.0"), 0},
		{n("1"), n("1e0"), 0},
		{n("100"), n("1e2"), 0},
		{n("-0"), n("0.0"), 0},
		{n("0.1"), n("1e-1"), 0},
		{n("2"), n("10"), -1},
		{n("-2"), n("-10"), 1},
		{n("-1"), n("0"), -1},
		{n("0.05"), n("0.5"), -1},
		{n("123456789012345678901234567890"), n("123456789012345678901234567891"), -1},
		{n("100000000000000000001"), n("1e20"), 1},
		{n("1e400"), n("1e399"), 1},
		{n("1e99999999999999999999"), n("1e99999999999999999998"), 1},
		{n("-1e99999999999999999999"), n("1"), -1},
		{n("1e-99999999999999999999"), n("0"), 1},
		{n("79.5"), n("80"), -1},
		// Versions (strings, or a number against a version string).
		{s("2.1.10"), s("2.2.0"), -1},
		{s("1.9.0"), s("1.10.0"), -1},
		{s("2.2.0-rc1"), s("2.2.0"), -1},
		{s("v2.0.0"), s("2.0.0"), 0},
		{s("2.1"), s("2.1.0"), 0},
		{s("2.1.3+build7"), s("2.1.3"), 0},
		{s("2.2.0-RC1"), s("2.2.0-rc1"), 0},
		{s("3.0.0-beta.2"), s("3.0.0-beta.10"), -1},
		{s("3.0.0-alpha"), s("3.0.0-beta"), -1},
		{s("10"), s("9"), 1},
		{n("2"), s("2.2.0"), -1},
		{n("1.10"), n("1.9"), -1}, // two numbers stay numbers: 1.10 == 1.1 < 1.9
		{s("1.10"), s("1.9"), 1},  // two strings are versions
		// Text.
		{s("abc"), s("ABD"), -1},
		{s("Küche"), s("KÜCHE"), 0},
		{s("a"), s("ab"), -1},
		{s(""), s("a"), -1},
		{s("k"), s("\u212a"), 0}, // KELVIN SIGN folds to k
		{s("2.1.3.4"), s("2.1.3.5"), -1},
		// Bools.
		{b(false), b(true), -1},
		{b(true), Value{Kind: Bool, S: "TRUE"}, 0},
		{b(true), s("true"), 0},
	}
	for _, c := range cases {
		want := c.want
		if got := Compare(c.a, c.b); got != want {
			t.Errorf("Compare(%v, %v) = %d, want %d", c.a, c.b, got, want)
		}
		if got := Compare(c.b, c.a); got != -want {
			t.Errorf("Compare(%v, %v) = %d, want %d", c.b, c.a, got, -want)
		}
	}
}

func TestEqualFold(t *testing.T) {
	n, s, b := Num, Str, Boolean
	cases := []struct {
		a, b Value
		want bool
	}{
		{n("1"), n("1.0"), true},
		{n("1"), n("1.01"), false},
		{n("100000000000000000001"), n("1e20"), false},
		{n("0"), n("-0.0e5"), true},
		{s("Factory-A"), s("factory-a"), true},
		{s("straße"), s("STRASSE"), false}, // simple folding only
		{s("ſ"), s("S"), true},
		{b(true), Value{Kind: Bool, S: "True"}, true},
		{b(true), b(false), false},
		{n("80"), s("80"), false}, // kinds differ
		{b(true), s("true"), false},
		{n("abc"), n("ABC"), true}, // malformed numbers compare as text
		{n("abc"), n("1"), false},
		{s("\xff"), s("\xfe"), false},
		{s("\xff"), s("\ufffd"), false},
	}
	for _, c := range cases {
		if got := EqualFold(c.a, c.b); got != c.want {
			t.Errorf("EqualFold(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := Key(c.a) == Key(c.b); got != c.want {
			t.Errorf("Key(%v) == Key(%v) is %v, want %v (%q, %q)", c.a, c.b, got, c.want, Key(c.a), Key(c.b))
		}
	}
}

func TestKeyForms(t *testing.T) {
	for in, want := range map[Value]string{
		Num("1"):      "n:0.1e1",
		Num("1.0"):    "n:0.1e1",
		Num("-0.05"):  "n:-0.5e-1",
		Num("0"):      "n:0",
		Str("Hall 2"): "s:hall 2",
		Boolean(true): "b:true",
	} {
		if got := Key(in); got != want {
			t.Errorf("Key(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestIsNumberIsVersion(t *testing.T) {
	for s, want := range map[string]bool{"1": true, "-1.5e3": true, "+2": true, ".5": true, "5.": true, "1e": false, "e1": false, "": false, "-": false, "1.2.3": false, "0x10": false, "NaN": false} {
		if IsNumber(s) != want {
			t.Errorf("IsNumber(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{"2.1.3": true, "v2.0.0-rc1": true, "1.2": true, "7": true, "V1.0": true, "2.1.3+b7": true, "abc": false, "1.2.3.4": false, "": false, "1..2": false, strings.Repeat("1", 300): false} {
		if IsVersion(s) != want {
			t.Errorf("IsVersion(%q) = %v", s, !want)
		}
	}
}

func TestMatchPattern(t *testing.T) {
	cases := []struct {
		pat, s string
		want   bool
	}{
		{"sensor-*", "Sensor-100", true},
		{"sensor-*", "sensor-", true},
		{"sensor-?", "sensor-", false},
		{"s*-0?1", "sensor-011", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"a**", "a", true},
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
		{`a\?b`, "a?b", true},
		{`a\\*`, `a\xyz`, true},
		{"k?che", "KÜCHE", true},
		{"caf?", "café", true},
		{"x?", "x\xff", true},
		{"a*a*a*a*a*a*b", strings.Repeat("a", 200), false},
	}
	for _, c := range cases {
		if got := matchPattern(compilePattern(c.pat), c.s); got != c.want {
			t.Errorf("match(%q, %q) = %v, want %v", c.pat, c.s, got, c.want)
		}
	}
}

func TestFoldKey(t *testing.T) {
	for _, pair := range [][2]string{{"ABC", "abc"}, {"Küche", "KÜCHE"}, {"\u212a", "k"}, {"ſ", "s"}} {
		if FoldKey(pair[0]) != FoldKey(pair[1]) {
			t.Errorf("FoldKey(%q) != FoldKey(%q)", pair[0], pair[1])
		}
	}
	if FoldKey("\xff") == FoldKey("\ufffd") {
		t.Error("an invalid byte folds like U+FFFD")
	}
}
