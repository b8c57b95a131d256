package query

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Golden cases live in testdata/query/ at the repository root:
//   - fleet.json: 30 things (registry, attributes, groups, connectivity,
//     classic and named shadows with delta and drift age);
//   - valid.json: queries with the exact, sorted set of matching names;
//   - invalid.json: bad queries with the error's byte position and a
//     substring of its message.
//
// The expected sets were computed by an oracle independent of this package
// (a separate rendering of the semantics in doc.go, the boolean structure of
// each case written by hand), not by running this code.

type validCase struct {
	Query   string   `json:"query"`
	Matches []string `json:"matches"`
	Note    string   `json:"note"`
}

type invalidCase struct {
	Query string `json:"query"`
	Pos   int    `json:"pos"`
	Msg   string `json:"msg"`
	Note  string `json:"note"`
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "query", name))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func TestGoldenValid(t *testing.T) {
	fleet := loadFleet(t)
	var cases []validCase
	readJSON(t, "valid.json", &cases)
	if len(cases) < 60 {
		t.Fatalf("valid.json has %d cases, want at least 60", len(cases))
	}
	for _, c := range cases {
		q, err := Parse(c.Query)
		if err != nil {
			t.Errorf("%s: %v", c.Query, err)
			continue
		}
		if got := matching(q, fleet); !reflect.DeepEqual(got, c.Matches) {
			t.Errorf("%s (%s):\n got  %q\n want %q", c.Query, c.Note, got, c.Matches)
		}
		// The canonical form means the same.
		q2, err := Parse(q.String())
		if err != nil {
			t.Errorf("%s: canonical %q does not parse: %v", c.Query, q.String(), err)
			continue
		}
		if !q.Equal(q2) || q2.String() != q.String() {
			t.Errorf("%s: canonical %q re-parses as %q", c.Query, q.String(), q2.String())
		}
		if got := matching(q2, fleet); !reflect.DeepEqual(got, c.Matches) {
			t.Errorf("%s: canonical %q matches %q", c.Query, q.String(), got)
		}
	}
}

func TestGoldenInvalid(t *testing.T) {
	var cases []invalidCase
	readJSON(t, "invalid.json", &cases)
	if len(cases) < 25 {
		t.Fatalf("invalid.json has %d cases, want at least 25", len(cases))
	}
	for _, c := range cases {
		q, err := Parse(c.Query)
		if se, ok := err.(*SyntaxError); ok && (se.Pos < 0 || se.Pos > len(c.Query)) {
			t.Errorf("%.100q: position %d outside the query", c.Query, se.Pos)
		}
		if len(c.Query) > 100 {
			c.Query = c.Query[:100] + "…" // for messages
		}
		if err == nil {
			t.Errorf("%q (%s): parsed as %q, want an error", c.Query, c.Note, q.String())
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: error %T is not a *SyntaxError", c.Query, err)
			continue
		}
		if se.Pos != c.Pos || !strings.Contains(se.Msg, c.Msg) {
			t.Errorf("%q (%s):\n got  pos %d %q\n want pos %d, message containing %q", c.Query, c.Note, se.Pos, se.Msg, c.Pos, c.Msg)
		}
	}
}
