package query

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestRandomQueries builds queries from the grammar (byte-level fuzzing
// rarely reaches deep, well-formed ones) and checks that they parse, that
// the canonical form round-trips, and that it matches the same things.
func TestRandomQueries(t *testing.T) {
	fleet := loadFleet(t)
	rng := rand.New(rand.NewPCG(1, 2))
	n := 5000
	if testing.Short() {
		n = 1000
	}
	skipped := 0
	for range n {
		s := genQuery(rng, 0)
		q, err := Parse(s)
		if err != nil {
			if se := err.(*SyntaxError); strings.Contains(se.Msg, "nesting") || strings.Contains(se.Msg, "allowed") {
				skipped++
				continue
			}
			t.Fatalf("%s: %v", s, err)
		}
		c := q.String()
		q2, err := Parse(c)
		if err != nil || q2.String() != c || !q.Equal(q2) {
			t.Fatalf("%s: canonical %s re-parses as %v, %v", s, c, q2, err)
		}
		for _, r := range fleet {
			if q.Match(r) != q2.Match(r) {
				t.Fatalf("%s and %s disagree on %s", s, c, r.name)
			}
		}
	}
	if skipped > n/10 {
		t.Errorf("%d of %d generated queries exceeded the limits", skipped, n)
	}
}

var (
	genFields = []string{"thingName", "thingTypeName", "thingGroupNames", "attributes.location", "attributes.a.b",
		"shadow.reported.battery", "shadow.reported.firmware_version", "shadow.reported.tags", "shadow.name.config.reported.x",
		"shadow.desired.mode", "shadow.delta.firmware_version"}
	genValues = []string{"a", "sensor-*", "s?n*", `"hall 2"`, `"a\"b"`, `a\ b`, `a\*`, "2.1.3", "v2.0.0-rc1", "-5", "1e2",
		"85.0", "TRUE", `"AND"`, `"TO"`, `""`, "x:y", "Küche", `"="`, `\(x\)`, `"*"`, "=5", "*", `\-5`}
)

func genValue(rng *rand.Rand) string { return genValues[rng.IntN(len(genValues))] }

func genBound(rng *rand.Rand) string {
	v := genValue(rng)
	if strings.ContainsAny(v, "*?") && v != "*" && v[0] != '"' || v == "=5" {
		return `"` + strings.ReplaceAll(v, `"`, "") + `"`
	}
	return v
}

func genCmp(rng *rand.Rand) string {
	v := strings.TrimPrefix(genBound(rng), "=")
	if v == "*" || v == "" {
		return "5"
	}
	return v
}

func genGroup(rng *rand.Rand, depth int) string {
	switch k := rng.IntN(10); {
	case depth < 4 && k < 2:
		return "(" + genGroup(rng, depth+1) + " OR " + genGroup(rng, depth+1) + ")"
	case depth < 4 && k < 4:
		return genGroup(rng, depth+1) + " " + genGroup(rng, depth+1)
	case depth < 4 && k < 5:
		return "-" + genGroup(rng, depth+1)
	case k < 6:
		return "[" + genBound(rng) + " TO " + genBound(rng) + "}"
	case k < 7:
		return ">=" + genCmp(rng)
	}
	v := genValue(rng)
	if v == "=5" || v == "-5" {
		v = `"-5"`
	}
	return v
}

func genQuery(rng *rand.Rand, depth int) string {
	switch k := rng.IntN(12); {
	case depth < 6 && k < 2:
		return genQuery(rng, depth+1) + " OR " + genQuery(rng, depth+1)
	case depth < 6 && k < 4:
		return genQuery(rng, depth+1) + [...]string{" ", " AND ", "  "}[rng.IntN(3)] + genQuery(rng, depth+1)
	case depth < 6 && k < 5:
		return [...]string{"NOT ", "-", "NOT"}[rng.IntN(3)] + "(" + genQuery(rng, depth+1) + ")"
	case depth < 6 && k < 6:
		return "(" + genQuery(rng, depth+1) + ")"
	case k < 7:
		return "*"
	}
	f := genFields[rng.IntN(len(genFields))]
	switch rng.IntN(5) {
	case 0:
		return f + ":(" + genGroup(rng, 0) + ")"
	case 1:
		return f + [...]string{"<", "<=", ">", ">=", " > ", ":>"}[rng.IntN(6)] + genCmp(rng)
	case 2:
		return f + ":" + [...]string{"[", "{"}[rng.IntN(2)] + genBound(rng) + " TO " + genBound(rng) + [...]string{"]", "}"}[rng.IntN(2)]
	}
	return f + ":" + genValue(rng)
}
