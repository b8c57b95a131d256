package query

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/Masterminds/semver/v3"

	exact "github.com/umbra-iot/umbra/internal/decimal"
)

// Kind is the JSON type of a Value.
type Kind int

// The kinds of Value. The zero Kind is String.
const (
	String Kind = iota
	Number
	Bool
)

// decimal is an exact decimal number (internal/decimal).
type decimal = exact.Decimal

func parseDecimal(s string) (decimal, bool) { return exact.Parse(s) }

func (k Kind) String() string {
	switch k {
	case String:
		return "string"
	case Number:
		return "number"
	case Bool:
		return "bool"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is one scalar a Record holds at a field. S is the canonical text:
// a string's characters (unescaped), a number as written in JSON, a bool as
// "true" or "false".
type Value struct {
	Kind Kind
	S    string
}

// Str, Num and Boolean build Values.
func Str(s string) Value { return Value{Kind: String, S: s} }

// Num is a Number Value; s should be a JSON number.
func Num(s string) Value { return Value{Kind: Number, S: s} }

// Boolean is a Bool Value.
func Boolean(b bool) Value {
	if b {
		return Value{Kind: Bool, S: "true"}
	}
	return Value{Kind: Bool, S: "false"}
}

// truth is a Bool Value's truth: S is "true" in any case.
func truth(s string) bool { return len(s) >= 4 && len(s) <= 8 && foldCompare(s, "true") == 0 }

// parseBool reads a literal as a bool: true or false in any case.
func parseBool(s string) (value, ok bool) {
	if truth(s) {
		return true, true
	}
	return false, len(s) >= 5 && len(s) <= 10 && foldCompare(s, "false") == 0
}

// EqualFold is the equality of ':': two numbers are equal by exact decimal
// value (1 == 1.0 == 1e0, and 100000000000000000001 != 1e20), two bools by
// truth, two strings case-insensitively (Unicode simple folding, like
// strings.EqualFold). Values of different kinds are never equal (a Number
// whose S is not a number is compared as text, with other such Numbers
// only). It is an equivalence relation; Key gives its classes.
func EqualFold(a, b Value) bool {
	oa, ob := operand{v: a}, operand{v: b}
	return equalOperands(&oa, &ob)
}

// Key returns a string that is equal for two Values exactly when EqualFold
// says they are: an index may use it as a map key for ':' lookups. (The
// query literal of a Term takes the kind of the value it is tested against,
// so look up Key(Str(lit)), Key(Num(lit)) and Key(Boolean(...)) as they
// apply.)
func Key(v Value) string {
	switch v.Kind {
	case Number:
		if d, ok := parseDecimal(v.S); ok {
			return "n:" + d.Canonical()
		}
		return "N:" + FoldKey(v.S)
	case Bool:
		if truth(v.S) {
			return "b:true"
		}
		return "b:false"
	case String:
		return "s:" + FoldKey(v.S)
	}
	return "?" + strconv.Itoa(int(v.Kind)) + ":" + FoldKey(v.S)
}

// FoldKey maps s to a case-folded form: FoldKey(a) == FoldKey(b) exactly
// when the strings are equal under the package's case-insensitive
// comparison.
func FoldKey(s string) string {
	ascii := true
	lower := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
		if 'A' <= c && c <= 'Z' {
			lower = false
		}
	}
	if ascii {
		if lower {
			return s
		}
		return strings.ToLower(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := nextRune(s, i)
		i += n
		if r > unicode.MaxRune {
			b.WriteByte(byte(r - invalidBase))
			continue
		}
		b.WriteRune(foldRune(r))
	}
	return b.String()
}

// Compare is the order of <, <=, >, >= and ranges. Two numbers compare by
// exact decimal value (no float rounding, any size). Otherwise, when both
// texts are versions (semantic versions and the loose forms "2", "1.2",
// "v2.0.0-rc1", parsed by github.com/Masterminds/semver/v3 after folding
// case), they compare in semver order: 1.9.0 < 1.10.0, 2.0.0-rc1 < 2.0.0,
// build metadata ignored. Two bools compare false < true. Anything else
// compares as case-insensitive text, rune by rune.
//
// Compare is antisymmetric and EqualFold(a, b) implies Compare(a, b) == 0.
// It is a total order within numbers, within bools and within versions, but
// not across those classes (mixed-kind orders may be cyclic), so an index
// must not sort a field that mixes kinds by it and binary-search.
func Compare(a, b Value) int {
	oa, ob := operand{v: a}, operand{v: b}
	return compareOperands(&oa, &ob)
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// parseVersion returns s as a semantic version, or nil. Case is folded
// first so that version order agrees with case-insensitive equality
// (1.0.0-RC1 and 1.0.0-rc1 are the same version). Only texts made of the
// characters a version can hold, starting with a digit or "v", are handed to
// the library; strict semver is tried first as it is much cheaper.
func parseVersion(s string) *semver.Version {
	if len(s) == 0 || len(s) > semver.MaxVersionLen {
		return nil
	}
	c := s[0]
	if !(c >= '0' && c <= '9') && c != 'v' && c != 'V' {
		return nil
	}
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c == '.', c == '-', c == '+':
		case c >= 'A' && c <= 'Z':
			upper = true
		default:
			return nil
		}
	}
	if upper {
		s = strings.ToLower(s)
	}
	if s[0] != 'v' {
		if v, err := semver.StrictNewVersion(s); err == nil {
			return v
		}
	}
	v, err := semver.NewVersion(s)
	if err != nil {
		return nil
	}
	return v
}

// IsVersion reports whether s compares as a version (see Compare).
func IsVersion(s string) bool { return parseVersion(s) != nil }

// ---- case folding ----

// invalidBase is added to a byte that is not valid UTF-8, so that it is a
// "rune" of its own, distinct from every real rune and from U+FFFD.
const invalidBase = unicode.MaxRune + 1

// nextRune decodes the rune at s[i]; an invalid byte comes back as
// invalidBase+byte with size 1.
func nextRune(s string, i int) (rune, int) {
	c := s[i]
	if c < utf8.RuneSelf {
		return rune(c), 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && n == 1 {
		return invalidBase + rune(c), 1
	}
	return r, n
}

// foldRune maps r to the smallest rune of its simple-folding orbit, so two
// runes are equal under strings.EqualFold exactly when their foldRune is.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	if r > unicode.MaxRune {
		return r
	}
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < m {
			m = f
		}
	}
	// Keep ASCII letters lower-case as the representative: for orbits with
	// an ASCII member (k, K, U+212A KELVIN SIGN) the minimum is 'K'.
	if 'A' <= m && m <= 'Z' {
		m += 'a' - 'A'
	}
	return m
}

// foldCompare orders strings rune by rune after folding case.
func foldCompare(a, b string) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		ca, cb := a[i], b[j]
		if ca < utf8.RuneSelf && cb < utf8.RuneSelf {
			if 'A' <= ca && ca <= 'Z' {
				ca += 'a' - 'A'
			}
			if 'A' <= cb && cb <= 'Z' {
				cb += 'a' - 'A'
			}
			if ca != cb {
				if ca < cb {
					return -1
				}
				return 1
			}
			i++
			j++
			continue
		}
		ra, na := nextRune(a, i)
		rb, nb := nextRune(b, j)
		i += na
		j += nb
		if ra == rb {
			continue
		}
		fa, fb := foldRune(ra), foldRune(rb)
		if fa != fb {
			if fa < fb {
				return -1
			}
			return 1
		}
	}
	switch {
	case i < len(a):
		return 1
	case j < len(b):
		return -1
	}
	return 0
}

// IsNumber reports whether s reads as a number for the query language:
// [+-] digits [. digits] [e [+-] digits].
func IsNumber(s string) bool {
	_, ok := parseDecimal(s)
	return ok
}
