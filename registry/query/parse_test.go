package query

import (
	"reflect"
	"strings"
	"testing"
)

func term(field string, op Op, value string) *Term { return &Term{Field: field, Op: op, Value: value} }

func TestParseTrees(t *testing.T) {
	a := term("thingName", OpEq, "a")
	b := term("thingName", OpEq, "b")
	c := term("thingName", OpEq, "c")
	cases := []struct {
		q    string
		want Node
	}{
		{"thingName:a thingName:b OR thingName:c", &Or{&And{a, b}, c}},
		{"thingName:a OR thingName:b thingName:c", &Or{a, &And{b, c}}},
		{"thingName:a OR thingName:b OR thingName:c", &Or{&Or{a, b}, c}},
		{"thingName:a OR (thingName:b OR thingName:c)", &Or{a, &Or{b, c}}},
		{"NOT thingName:a AND thingName:b", &And{&Not{a}, b}},
		{"-thingName:a thingName:b", &And{&Not{a}, b}},
		{"NOT (thingName:a thingName:b)", &Not{&And{a, b}}},
		{"thingName:(a OR b c)", &Or{a, &And{b, c}}},
		{"thingName:(a -b)", &And{a, &Not{b}}},
		{"thingName:(NOT (a OR b))", &Not{&Or{a, b}}},
		{"* -thingName:a", &And{&All{}, &Not{a}}},
		{"thingName :  a", a},
		{"NOT(thingName:a)", &Not{a}},
		{"thingName:a AND(thingName:b)", &And{a, b}},
		{`thingName:"a"`, a},
		{`thingName:\a`, a},
		{"thingName:*", term("thingName", OpExists, "")},
		{"thingName:(*)", term("thingName", OpExists, "")},
		{"thingName:a*", term("thingName", OpWildcard, "a*")},
		{`thingName:a\*`, term("thingName", OpEq, "a*")},
		{`thingName:a\**`, term("thingName", OpWildcard, `a\**`)},
		{`thingName:a\ b?`, term("thingName", OpWildcard, `a b?`)},
		{`thingName:"a*"`, term("thingName", OpEq, "a*")},
		{`thingName:"say \"hi\" \\o/"`, term("thingName", OpEq, `say "hi" \o/`)},
		{"thingName:a:b", term("thingName", OpEq, "a:b")},
		{"shadow.reported.t>-5", term("shadow.reported.t", OpGT, "-5")},
		{"shadow.reported.t <= 5", term("shadow.reported.t", OpLE, "5")},
		{"shadow.reported.t:>=5", term("shadow.reported.t", OpGE, "5")},
		{"shadow.reported.t:(<5)", term("shadow.reported.t", OpLT, "5")},
		{`shadow.reported.t>"=5"`, term("shadow.reported.t", OpGT, "=5")},
		{"shadow.reported.t:[1 TO *}", &Term{Field: "shadow.reported.t", Op: OpRange, Low: "1", High: "*", LowIncl: true}},
		{`thingName:{"a b" TO "TO"]`, &Term{Field: "thingName", Op: OpRange, Low: "a b", High: "TO", HighIncl: true}},
		{`thingName:["TO" TO x]`, &Term{Field: "thingName", Op: OpRange, Low: "TO", High: "x", LowIncl: true, HighIncl: true}},
		{"registry.thingGroupNames:x", term("thingGroupNames", OpEq, "x")},
		{"attributes.a.b:x", term("attributes.a.b", OpEq, "x")},
		{"shadow.name.my-shadow_2.delta.a-b.c_d.3:x", term("shadow.name.my-shadow_2.delta.a-b.c_d.3", OpEq, "x")},
		{"shadow.name.cfg.deltaAgeSeconds:[0 TO 60]", &Term{Field: "shadow.name.cfg.deltaAgeSeconds", Op: OpRange, Low: "0", High: "60", LowIncl: true, HighIncl: true}},
		{"attributes.ort:Küche", term("attributes.ort", OpEq, "Küche")},
		{"attributes.größe:x", term("attributes.größe", OpEq, "x")},
	}
	for _, c := range cases {
		q, err := Parse(c.q)
		if err != nil {
			t.Errorf("%s: %v", c.q, err)
			continue
		}
		if !EqualNodes(q.Root, c.want) {
			t.Errorf("%s: got %s", c.q, q)
		}
	}
}

func TestCanonical(t *testing.T) {
	cases := map[string]string{
		"thingName:a thingName:b":                      "thingName:a AND thingName:b",
		"-thingName:a":                                 "NOT thingName:a",
		"thingName:(a OR b) thingName:c":               "(thingName:a OR thingName:b) AND thingName:c",
		"thingName:c thingName:(a b)":                  "thingName:c AND (thingName:a AND thingName:b)",
		"((thingName:a))":                              "thingName:a",
		"NOT (NOT thingName:a)":                        "NOT NOT thingName:a",
		"NOT (thingName:a OR thingName:b)":             "NOT (thingName:a OR thingName:b)",
		`thingName:"a b"`:                              `thingName:"a b"`,
		`thingName:a\ b`:                               `thingName:"a b"`,
		`thingName:a\ b*`:                              `thingName:a\ b*`,
		`thingName:"AND"`:                              `thingName:"AND"`,
		`thingName:"*"`:                                `thingName:"*"`,
		`thingName:""`:                                 `thingName:""`,
		`thingName:"x(y)"`:                             `thingName:"x(y)"`,
		`thingName:{"TO" TO z]`:                        `thingName:{"TO" TO z]`,
		`shadow.reported.t>"=5"`:                       `shadow.reported.t>"=5"`,
		"connectivity.connected:TRUE":                  "connectivity.connected:TRUE",
		"shadow.reported.t :>= 5":                      "shadow.reported.t>=5",
		"*:*":                                          "*",
		"registry.thingTypeName:x":                     "thingTypeName:x",
		`thingName:x\~`:                                `thingName:"x~"`,
		"thingName:a OR thingName:b AND thingName:c":   "thingName:a OR thingName:b AND thingName:c",
		"(thingName:a OR thingName:b) AND thingName:c": "(thingName:a OR thingName:b) AND thingName:c",
	}
	for in, want := range cases {
		q, err := Parse(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := q.String(); got != want {
			t.Errorf("String(%s) = %s, want %s", in, got, want)
		}
		q2, err := Parse(q.String())
		if err != nil || !q.Equal(q2) {
			t.Errorf("%s: canonical %s re-parses as %v, %v", in, q.String(), q2, err)
		}
	}
}

func TestPositions(t *testing.T) {
	q := MustParse("thingName:a AND  attributes.x:(b OR [1 TO 2])")
	var got []int
	for _, tm := range q.Terms() {
		got = append(got, tm.Pos)
	}
	if want := []int{0, 31, 36}; !reflect.DeepEqual(got, want) {
		t.Errorf("positions %v, want %v", got, want)
	}
	if q.Source != "thingName:a AND  attributes.x:(b OR [1 TO 2])" {
		t.Errorf("Source = %q", q.Source)
	}
}

func TestSyntaxErrorText(t *testing.T) {
	_, err := Parse("attributes.location:")
	if err == nil || err.Error() != `query: position 21: expected a value after "attributes.location:"` {
		t.Errorf("got %v", err)
	}
	_, _, err = CanonicalField("atributes.x")
	if err == nil || !strings.Contains(err.Error(), `did you mean "attributes.x"`) {
		t.Errorf("CanonicalField: %v", err)
	}
	if f, typ, err := CanonicalField("registry.thingTypeName"); err != nil || f != "thingTypeName" || typ != StringType {
		t.Errorf("CanonicalField alias: %v %v %v", f, typ, err)
	}
}

func TestLimits(t *testing.T) {
	ok := strings.Repeat("(", MaxDepth) + "thingName:a" + strings.Repeat(")", MaxDepth)
	if _, err := Parse(ok); err != nil {
		t.Errorf("depth %d: %v", MaxDepth, err)
	}
	ok = strings.Repeat("-", MaxDepth) + "thingName:a"
	if _, err := Parse(ok); err != nil {
		t.Errorf("%d exclusions: %v", MaxDepth, err)
	}
	// A long flat chain is fine (no nesting), and evaluation stays shallow
	// enough: every tree is at most a few hundred nodes deep.
	long := strings.Repeat("thingName:a OR ", 200) + "thingName:b"
	q, err := Parse(long)
	if err != nil {
		t.Fatal(err)
	}
	if q.Match(mapRecord{"thingName": {Str("b")}}) != true {
		t.Error("long chain: no match")
	}
	exact := "thingName:" + strings.Repeat("a", MaxQueryBytes-len("thingName:"))
	if _, err := Parse(exact); err != nil {
		t.Errorf("%d bytes: %v", MaxQueryBytes, err)
	}
	if _, err := Parse(exact + "a"); err == nil {
		t.Errorf("%d bytes accepted", MaxQueryBytes+1)
	}
}

// mapRecord is a minimal Record.
type mapRecord map[string][]Value

func (m mapRecord) Values(f string) []Value { return m[f] }

func TestHandBuiltNodes(t *testing.T) {
	r := mapRecord{"thingName": {Str("Pump-7")}, "shadow.reported.v": {Str("2.1.3")}}
	// Value forms and pointer forms, and terms built without Parse.
	q := &Query{Root: And{Left: Term{Field: "thingName", Value: "pump-7"}, Right: &Not{X: Term{Field: "shadow.reported.v", Op: OpGE, Value: "2.2.0"}}}}
	if !q.Match(r) {
		t.Error("hand-built query does not match")
	}
	if got, want := q.String(), "thingName:pump-7 AND NOT shadow.reported.v>=2.2.0"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if !q.Equal(MustParse(q.String())) {
		t.Error("hand-built query differs from its canonical form")
	}
	if len(q.Terms()) != 2 {
		t.Errorf("Terms = %v", q.Terms())
	}
	// A parsed term edited afterwards uses its new value.
	p := MustParse("thingName:x")
	p.Root.(*Term).Value = "PUMP-7"
	if !p.Match(r) {
		t.Error("edited term uses its stale literal")
	}
	if (&Query{}).Match(r) || (*Query)(nil).Match(r) {
		t.Error("empty query matches")
	}
	if (&Query{}).String() != "" {
		t.Error("empty query has text")
	}
}

func TestMatchValue(t *testing.T) {
	cases := []struct {
		q    string
		v    Value
		want bool
	}{
		{"shadow.reported.b>80", Num("80.5"), true},
		{"shadow.reported.b>80", Str("90"), true},
		{"shadow.reported.b>80", Str("abc"), true}, // text order: "abc" > "80"
		{"shadow.reported.b:80", Num("8e1"), true},
		{"shadow.reported.b:80", Str("80"), true},
		{"shadow.reported.b:80", Str("80.0"), false},
		{"shadow.reported.b:true", Boolean(true), true},
		{"shadow.reported.b:true", Str("TRUE"), true},
		{"shadow.reported.b:yes", Boolean(true), false},
		{"shadow.reported.b:8*", Num("85"), true},
		{"shadow.reported.b:t*", Boolean(true), true},
		{"shadow.reported.b:*", Str(""), true},
		{"shadow.reported.b:[1 TO 2]", Str("1.5.0"), true},
		{"shadow.reported.b:{1 TO 2]", Str("1"), false},
		{"shadow.reported.b:{1 TO 2]", Str("1.0.0"), false}, // semver equal to the bound
		{"shadow.reported.b:[a TO c}", Str("C"), false},
		{"shadow.reported.b:[false TO true]", Boolean(false), true},
		{"shadow.reported.b:{false TO true]", Boolean(false), false},
	}
	for _, c := range cases {
		tm := MustParse(c.q).Root.(*Term)
		if got := tm.MatchValue(c.v); got != c.want {
			t.Errorf("%s MatchValue(%v) = %v, want %v", c.q, c.v, got, c.want)
		}
		if got := refMatchValue(tm, c.v); got != c.want {
			t.Errorf("%s reference(%v) = %v, want %v", c.q, c.v, got, c.want)
		}
	}
}

// refMatchValue is MatchValue written with the exported functions only, as
// doc.go describes it.
func refMatchValue(t *Term, v Value) bool {
	lit := func(s string) Value {
		switch {
		case v.Kind == Number && IsNumber(s):
			return Num(s)
		case v.Kind == Bool && strings.EqualFold(s, "true"):
			return Boolean(true)
		case v.Kind == Bool && strings.EqualFold(s, "false"):
			return Boolean(false)
		}
		return Str(s)
	}
	switch t.Op {
	case OpEq:
		return EqualFold(v, lit(t.Value))
	case OpLT:
		return Compare(v, lit(t.Value)) < 0
	case OpLE:
		return Compare(v, lit(t.Value)) <= 0
	case OpGT:
		return Compare(v, lit(t.Value)) > 0
	case OpGE:
		return Compare(v, lit(t.Value)) >= 0
	case OpExists:
		return true
	case OpRange:
		if t.Low != "*" {
			c := Compare(v, lit(t.Low))
			if c < 0 || c == 0 && !t.LowIncl {
				return false
			}
		}
		if t.High != "*" {
			c := Compare(v, lit(t.High))
			if c > 0 || c == 0 && !t.HighIncl {
				return false
			}
		}
		return true
	case OpWildcard:
		return matchPattern(compilePattern(t.Value), v.S)
	}
	return false
}

// Parsed queries are shared by concurrent evaluations (dynamic groups,
// searches): Match and MatchValue must not write to the query.
func TestConcurrentMatch(t *testing.T) {
	fleet := loadFleet(t)
	q := MustParse("shadow.reported.battery>80 OR shadow.reported.firmware_version:[2.1 TO 2.2} OR connectivity.connected:TRUE OR thingName:s*-0?1")
	want := matching(q, fleet)
	done := make(chan []string)
	for range 4 {
		go func() { done <- matching(q, fleet) }()
	}
	for range 4 {
		if got := <-done; !reflect.DeepEqual(got, want) {
			t.Errorf("concurrent match %v, want %v", got, want)
		}
	}
}
