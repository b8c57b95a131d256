package shadow

import (
	"strings"
	"testing"
)

func TestParseTopic(t *testing.T) {
	classic, named := Ref{Thing: "T"}, Ref{Thing: "T", Name: "S"}
	ok := []struct {
		topic string
		want  Topic
	}{
		{"$aws/things/T/shadow/get", Topic{classic, OpGet, SuffixNone}},
		{"$aws/things/T/shadow/update", Topic{classic, OpUpdate, SuffixNone}},
		{"$aws/things/T/shadow/delete", Topic{classic, OpDelete, SuffixNone}},
		{"$aws/things/T/shadow/get/accepted", Topic{classic, OpGet, SuffixAccepted}},
		{"$aws/things/T/shadow/get/rejected", Topic{classic, OpGet, SuffixRejected}},
		{"$aws/things/T/shadow/update/accepted", Topic{classic, OpUpdate, SuffixAccepted}},
		{"$aws/things/T/shadow/update/rejected", Topic{classic, OpUpdate, SuffixRejected}},
		{"$aws/things/T/shadow/update/delta", Topic{classic, OpUpdate, SuffixDelta}},
		{"$aws/things/T/shadow/update/documents", Topic{classic, OpUpdate, SuffixDocuments}},
		{"$aws/things/T/shadow/delete/accepted", Topic{classic, OpDelete, SuffixAccepted}},
		{"$aws/things/T/shadow/delete/rejected", Topic{classic, OpDelete, SuffixRejected}},
		{"$aws/things/T/shadow/name/S/get", Topic{named, OpGet, SuffixNone}},
		{"$aws/things/T/shadow/name/S/update/delta", Topic{named, OpUpdate, SuffixDelta}},
		{"$aws/things/T/shadow/name/S/update/documents", Topic{named, OpUpdate, SuffixDocuments}},
		{"$aws/things/T/shadow/name/S/delete/rejected", Topic{named, OpDelete, SuffixRejected}},
		// Names that look like levels are just names.
		{"$aws/things/shadow/shadow/name/name/get", Topic{Ref{"shadow", "name"}, OpGet, SuffixNone}},
		{"$aws/things/T/shadow/name/update/update", Topic{Ref{"T", "update"}, OpUpdate, SuffixNone}},
		{"$aws/things/my-Thing_01:x/shadow/name/cfg:v2_a-b/get", Topic{Ref{"my-Thing_01:x", "cfg:v2_a-b"}, OpGet, SuffixNone}},
		// AWS's reserved named shadows start with '$'.
		{"$aws/things/T/shadow/name/$package/get/accepted", Topic{Ref{"T", "$package"}, OpGet, SuffixAccepted}},
		{"$aws/things/" + strings.Repeat("t", 128) + "/shadow/name/" + strings.Repeat("s", 64) + "/update/documents",
			Topic{Ref{strings.Repeat("t", 128), strings.Repeat("s", 64)}, OpUpdate, SuffixDocuments}},
	}
	for _, c := range ok {
		got, valid := ParseTopic(c.topic)
		if !valid || got != c.want {
			t.Errorf("ParseTopic(%q) = %+v, %v; want %+v, true", c.topic, got, valid, c.want)
		}
		if back := got.Ref.Topic(got.Op, got.Suffix); back != c.topic {
			t.Errorf("round trip of %q gave %q", c.topic, back)
		}
	}

	bad := []string{
		"",
		"$aws/things/",
		"$aws/things/T",
		"$aws/things/T/shadow",
		"$aws/things/T/shadow/",
		"$aws/things/T/shadow/foo",                   // unknown stub
		"$aws/things/T/shadow/get/delta",             // delta is update-only
		"$aws/things/T/shadow/delete/documents",      // documents is update-only
		"$aws/things/T/shadow/update/accepted/x",     // extra level
		"$aws/things/T/shadow/update/",               // empty trailing level
		"$aws/things/T/shadow/get/accepted/",         // empty trailing level
		"$aws/things/T/shadow/update/Accepted",       // case-sensitive
		"$aws/things/T/shadow/Update",                // case-sensitive
		"$aws/things/T/Shadow/update",                // case-sensitive
		"$AWS/things/T/shadow/update",                // case-sensitive
		"aws/things/T/shadow/update",                 // no $
		"/$aws/things/T/shadow/update",               // leading slash
		"$aws/things//shadow/update",                 // empty thing
		"$aws/things/+/shadow/update",                // wildcard
		"$aws/things/T/shadow/name/#",                // wildcard
		"$aws/things/T/shadow/name/+/update",         // wildcard
		"$aws/things/T/shadow/#",                     // wildcard
		"$aws/things/T/shadow/name//update",          // empty shadow name
		"$aws/things/T/shadow/name/S",                // no op
		"$aws/things/T/shadow/name/S/",               // empty op
		"$aws/things/T/shadow/name",                  // nothing after name
		"$aws/things/T/shadow/name/get",              // named shadow "get" with no op
		"$aws/things/T x/shadow/update",              // space
		"$aws/things/T\x00/shadow/update",            // NUL
		"$aws/things/T/shadow/name/S\x00/update",     // NUL
		"$aws/things/T/shadow/update\x00",            // NUL
		"$aws/things/$T/shadow/update",               // '$' not allowed in thing names
		"$aws/things/T.x/shadow/update",              // '.' not allowed
		"$aws/things/T/shadow/name/S.x/update",       // '.' not allowed
		"$aws/things/T/shadow/name/é/update",         // non-ASCII
		"$aws/things/T/shadow/name/S/name/S2/update", // nested names
		"$aws/things/" + strings.Repeat("t", 129) + "/shadow/update",
		"$aws/things/T/shadow/name/" + strings.Repeat("s", 65) + "/update",
		"$aws/things/T/jobs/get", // another AWS reserved family
	}
	for _, topic := range bad {
		if got, valid := ParseTopic(topic); valid {
			t.Errorf("ParseTopic(%q) = %+v, true; want false", topic, got)
		}
	}
}

func TestRefTopics(t *testing.T) {
	r := Ref{Thing: "T"}
	for _, c := range []struct{ got, want string }{
		{r.Prefix(), "$aws/things/T/shadow"},
		{r.Topic(OpGet, SuffixNone), "$aws/things/T/shadow/get"},
		{r.Topic(OpUpdate, SuffixDelta), "$aws/things/T/shadow/update/delta"},
		{r.String(), "T"},
		{Ref{"T", "S"}.Prefix(), "$aws/things/T/shadow/name/S"},
		{Ref{"T", "S"}.Topic(OpDelete, SuffixAccepted), "$aws/things/T/shadow/name/S/delete/accepted"},
		{Ref{"T", "S"}.String(), "T/S"},
		{Ref{"T", ""}.NotFound().Message, "No shadow exists with name: 'T'"},
		{Ref{"T", "S"}.NotFound().Message, "No shadow exists with name: 'S'"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct {
		s            string
		thing, named bool
	}{
		{"a", true, true},
		{"A-Z_a-z:0-9", true, true},
		{strings.Repeat("x", 64), true, true},
		{strings.Repeat("x", 65), true, false},
		{strings.Repeat("x", 128), true, false},
		{strings.Repeat("x", 129), false, false},
		{"", false, false},
		{"$package", false, true},
		{"a$b", false, true},
		{"a/b", false, false},
		{"a b", false, false},
		{"a+b", false, false},
		{"a#b", false, false},
		{"a.b", false, false},
		{"a\x00", false, false},
		{"ü", false, false},
	} {
		if got := ValidThingName(c.s); got != c.thing {
			t.Errorf("ValidThingName(%q) = %v", c.s, got)
		}
		if got := ValidShadowName(c.s); got != c.named {
			t.Errorf("ValidShadowName(%q) = %v", c.s, got)
		}
	}
	if !(Ref{Thing: "T"}).Valid() || !(Ref{"T", "S"}).Valid() || (Ref{"", "S"}).Valid() || (Ref{"T", "a/b"}).Valid() {
		t.Error("Ref.Valid disagrees with the name rules")
	}
}
