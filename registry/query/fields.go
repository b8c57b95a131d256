package query

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// FieldType is what a field holds, as far as the query language knows:
// AnyType for free-form fields (attributes are strings, shadow paths hold
// any JSON), StringType, NumberType or BoolType for the managed fields.
type FieldType int

// Field types.
const (
	AnyType FieldType = iota
	StringType
	NumberType
	BoolType
)

// AcceptedFields lists the field forms, for error messages and docs.
const AcceptedFields = "thingName, thingTypeName, thingGroupNames, registry.version, attributes.<key>, " +
	"connectivity.connected, connectivity.timestamp, connectivity.disconnectReason, " +
	"shadow.version, shadow.hasDelta, shadow.deltaAgeSeconds, shadow.reported.<path>, " +
	"shadow.desired.<path>, shadow.delta.<path>, and each shadow.* form for a named shadow as " +
	"shadow.name.<shadowName>.* (e.g. shadow.name.cfg.reported.x)"

// fixedFields are the fields without a free part, with their types.
var fixedFields = map[string]FieldType{
	"thingName":                     StringType,
	"thingTypeName":                 StringType,
	"thingGroupNames":               StringType,
	"registry.version":              NumberType,
	"connectivity.connected":        BoolType,
	"connectivity.timestamp":        NumberType,
	"connectivity.disconnectReason": StringType,
	"shadow.version":                NumberType,
	"shadow.hasDelta":               BoolType,
	"shadow.deltaAgeSeconds":        NumberType,
	"registry.thingTypeName":        StringType, // alias
	"registry.thingGroupNames":      StringType, // alias
}

var fieldAliases = map[string]string{
	"registry.thingTypeName":   "thingTypeName",
	"registry.thingGroupNames": "thingGroupNames",
}

// shadowLeaves are the fixed fields of a shadow (classic or named).
var shadowLeaves = map[string]FieldType{"version": NumberType, "hasDelta": BoolType, "deltaAgeSeconds": NumberType}

// shadowSections hold a JSON path.
var shadowSections = map[string]bool{"reported": true, "desired": true, "delta": true}

// fieldError is a field validation failure: off is the byte offset within
// the field text the message is about.
type fieldError struct {
	off int
	msg string
}

// CanonicalField validates a field name and returns its canonical form
// (aliases resolved: registry.thingTypeName → thingTypeName, …) and type.
// The error text is the message a SyntaxError would carry.
func CanonicalField(f string) (string, FieldType, error) {
	c, t, fe := checkField(f)
	if fe != nil {
		return "", 0, &SyntaxError{Pos: fe.off, Msg: fe.msg}
	}
	return c, t, nil
}

func checkField(f string) (string, FieldType, *fieldError) {
	c, t, fe := validateField(f)
	if fe != nil && fe.msg == "" {
		fe.msg = unknownField(f)
	}
	return c, t, fe
}

// validateField is checkField without the message of an unknown field
// (left empty), so that suggestions can call it.
func validateField(f string) (string, FieldType, *fieldError) {
	if t, ok := fixedFields[f]; ok {
		if a, ok := fieldAliases[f]; ok {
			return a, t, nil
		}
		return f, t, nil
	}
	segs := strings.Split(f, ".")
	off := 0
	for _, s := range segs {
		if s == "" {
			return "", 0, &fieldError{off, `empty key in field "` + f + `" (two dots, or a dot at an end)`}
		}
		off += len(s) + 1
	}
	switch segs[0] {
	case "attributes":
		if len(segs) == 1 {
			return "", 0, incomplete(f, "attributes.", "an attribute name", "attributes.location")
		}
		return f, AnyType, nil
	case "shadow":
		rest := segs[1:]
		prefix := "shadow."
		if len(rest) > 0 && rest[0] == "name" {
			if len(rest) == 1 {
				return "", 0, incomplete(f, "shadow.name.", "a shadow name", "shadow.name.cfg.reported.x")
			}
			prefix = "shadow.name." + rest[1] + "."
			rest = rest[2:]
		}
		if len(rest) == 0 {
			return "", 0, incomplete(f, prefix, "version, hasDelta, deltaAgeSeconds, reported.<path>, desired.<path> or delta.<path>", prefix+"reported.temp")
		}
		if t, ok := shadowLeaves[rest[0]]; ok && len(rest) == 1 {
			return f, t, nil
		}
		if shadowSections[rest[0]] {
			if len(rest) == 1 {
				return "", 0, incomplete(f, prefix+rest[0]+".", "a key path", prefix+rest[0]+".temp")
			}
			return f, AnyType, nil
		}
	}
	return "", 0, &fieldError{0, ""}
}

func incomplete(f, prefix, what, example string) *fieldError {
	return &fieldError{len(f), `incomplete field "` + f + `": expected ` + what + ` after "` + prefix + `" (e.g. ` + example + `)`}
}

func unknownField(f string) string {
	msg := `unknown field "` + f + `"`
	if s := suggestField(f); s != "" {
		msg += ` (did you mean "` + s + `"?)`
	}
	return msg + "; accepted: " + AcceptedFields
}

// vocabulary is the fixed words of field names, for suggestions.
var vocabulary = []string{
	"thingName", "thingTypeName", "thingGroupNames", "registry", "attributes", "connectivity", "shadow",
	"version", "connected", "timestamp", "disconnectReason", "hasDelta", "deltaAgeSeconds",
	"reported", "desired", "delta", "name",
}

// suggestField proposes a valid field one or two edits away in one of its
// first three dot-separated words ("" if none).
func suggestField(f string) string {
	if len(f) > 200 {
		return ""
	}
	segs := strings.Split(f, ".")
	best, bestD := "", 3
	for i := 0; i < len(segs) && i < 4; i++ {
		for _, w := range vocabulary {
			d := editDistance(segs[i], w)
			if d == 0 || d >= bestD {
				continue
			}
			cand := append([]string(nil), segs...)
			cand[i] = w
			c := strings.Join(cand, ".")
			if _, _, fe := validateField(c); fe == nil {
				best, bestD = c, d
			}
		}
	}
	return best
}

// editDistance is the Levenshtein distance, where a change of case only
// counts as one edit.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// isFieldRune reports whether r may appear in a field name: letters and
// digits (any script), and _ - . @ / #.
func isFieldRune(r rune) bool {
	if r < utf8.RuneSelf {
		c := byte(r)
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || c == '.' || c == '@' || c == '/' || c == '#'
	}
	return unicode.IsLetter(r) || unicode.IsDigit(r)
}
