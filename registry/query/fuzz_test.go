package query

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// Seeds shared by FuzzParse and FuzzMatch; testdata/fuzz/<Target>/ holds
// more (every golden query, and inputs that once failed).
var fuzzSeeds = []string{
	"attributes.location:factory-A AND shadow.reported.firmware_version:2.1.3",
	"thingName:(tv* AND -plasma) OR NOT (connectivity.connected:true shadow.hasDelta:true)",
	`attributes.name:"hall \"2\"" shadow.reported.temp:{10 TO 20] shadow.reported.x:[* TO "z"}`,
	"shadow.name.cfg.reported.x:>=5 shadow.deltaAgeSeconds>3600 shadow.reported.fw<v2.2.0-rc1",
	`thingName:a\ b\** thingName:a:b -(-(*))`,
	"*:*",
	"thingName:(a (b OR (c -d)))",
	"shadow.reported.big:123456789012345678901234567890 shadow.reported.n:1e999999999999999999999",
	"((((",
	"thingName:",
	"attributes.größe:Küche",
	"\xff:\xfe",
	"",
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := Parse(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("%q: error %T %v", s, err, err)
			}
			if se.Pos < 0 || se.Pos > len(s) || se.Msg == "" {
				t.Fatalf("%q: bad error %+v", s, se)
			}
			return
		}
		if q.Root == nil || q.Source != s {
			t.Fatalf("%q: Root %v Source %q", s, q.Root, q.Source)
		}
		c := q.String()
		q2, err := Parse(c)
		if err != nil {
			t.Fatalf("%q: canonical %q does not parse: %v", s, c, err)
		}
		if c2 := q2.String(); c2 != c {
			t.Fatalf("%q: canonical %q re-parses to %q", s, c, c2)
		}
		if !q.Equal(q2) {
			t.Fatalf("%q: canonical %q re-parses to another tree", s, c)
		}
		for _, tm := range q.Terms() {
			if tm.Pos < 0 || tm.Pos >= len(s) {
				t.Fatalf("%q: term %s at %d", s, tm.Field, tm.Pos)
			}
			if _, _, err := CanonicalField(tm.Field); err != nil {
				t.Fatalf("%q: term field %q: %v", s, tm.Field, err)
			}
		}
	})
}

// FuzzMatch runs random queries over the golden fleet: no panic, the
// canonical form matches the same things, and MatchValue agrees with its
// definition in terms of Compare and EqualFold (and, for patterns, with a
// regular expression).
func FuzzMatch(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	fleet := loadFleet(f)
	f.Fuzz(func(t *testing.T, s string) {
		q, err := Parse(s)
		if err != nil {
			return
		}
		q2 := MustParse(q.String())
		terms := q.Terms()
		for _, r := range fleet {
			if q.Match(r) != q2.Match(r) {
				t.Fatalf("%q and its canonical form %q disagree on %s", s, q.String(), r.name)
			}
			for _, tm := range terms {
				for _, v := range r.Values(tm.Field) {
					checkMatchValue(t, tm, v)
				}
			}
		}
	})
}

func checkMatchValue(t *testing.T, tm *Term, v Value) {
	got := tm.MatchValue(v)
	if want := refMatchValue(tm, v); got != want {
		t.Fatalf("%s MatchValue(%v) = %v, reference %v", (&Query{Root: tm}).String(), v, got, want)
	}
	if tm.Op == OpWildcard && utf8.ValidString(tm.Value) && utf8.ValidString(v.S) {
		if want := wildcardRegexp(tm.Value).MatchString(v.S); got != want {
			t.Fatalf("pattern %q on %q: %v, regexp says %v", tm.Value, v.S, got, want)
		}
	}
}

func wildcardRegexp(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`(?is)\A`)
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '*':
			b.WriteString(".*")
		case c == '?':
			b.WriteString(".")
		default:
			if c == '\\' && i+1 < len(p) {
				i++
			}
			_, n := utf8.DecodeRuneInString(p[i:])
			b.WriteString(regexp.QuoteMeta(p[i : i+n]))
			i += n - 1
		}
	}
	b.WriteString(`\z`)
	return regexp.MustCompile(b.String())
}

// FuzzCompare checks the laws doc.go promises: Compare is antisymmetric and
// reflexive, EqualFold is symmetric and implies Compare == 0, and Key
// equality is EqualFold.
func FuzzCompare(f *testing.F) {
	type seed struct {
		ka int
		a  string
		kb int
		b  string
	}
	for _, s := range []seed{
		{1, "1", 1, "1.0"}, {0, "2.1.10", 0, "2.2.0"}, {0, "v2.0.0-RC1", 0, "2.0.0-rc1"},
		{1, "1e99999999999999999999", 1, "-0"}, {2, "true", 2, "TRUE"}, {0, "Küche", 0, "KÜCHE"},
		{0, "\u212a", 0, "k"}, {1, "abc", 0, "abc"}, {0, "1.2", 1, "1.2"}, {0, "\xff", 0, "\ufffd"},
	} {
		f.Add(s.ka, s.a, s.kb, s.b)
	}
	f.Fuzz(func(t *testing.T, ka int, a string, kb int, b string) {
		va := Value{Kind: Kind(uint(ka) % 3), S: a}
		vb := Value{Kind: Kind(uint(kb) % 3), S: b}
		ab, ba := Compare(va, vb), Compare(vb, va)
		if ab != -ba || ab < -1 || ab > 1 {
			t.Fatalf("Compare(%v, %v) = %d but Compare(%v, %v) = %d", va, vb, ab, vb, va, ba)
		}
		if Compare(va, va) != 0 || !EqualFold(va, va) {
			t.Fatalf("%v is not equal to itself", va)
		}
		eq := EqualFold(va, vb)
		if eq != EqualFold(vb, va) {
			t.Fatalf("EqualFold(%v, %v) is not symmetric", va, vb)
		}
		if eq && ab != 0 {
			t.Fatalf("EqualFold(%v, %v) but Compare = %d", va, vb, ab)
		}
		if (Key(va) == Key(vb)) != eq {
			t.Fatalf("Key(%v) = %q, Key(%v) = %q, EqualFold = %v", va, Key(va), vb, Key(vb), eq)
		}
		tm := &Term{Field: "shadow.reported.x", Op: OpEq, Value: b}
		checkMatchValue(t, tm, va)
		tm.Op = OpLE
		checkMatchValue(t, tm, va)
	})
}
