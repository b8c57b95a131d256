package shadow

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Golden cases live in testdata/shadow/*.json at the repository root, one rule
// per file. A file holds one case or an array of cases. A case starts from a
// stored document (or none, optionally with a tombstone version) and runs its
// steps in order; each step names every payload it must produce, and any
// payload it does not name must not be produced. After an accepted update the
// next step starts from the new document; after an accepted delete, from a
// tombstone carrying the deleted version (the service's job, emulated here).
type goldenCase struct {
	Name      string          `json:"name"`
	Spec      string          `json:"spec"`
	Ref       *Ref            `json:"ref"`
	Options   goldenOptions   `json:"options"`
	Before    json.RawMessage `json:"before"`
	Tombstone int64           `json:"tombstoneVersion"`
	Steps     []goldenStep    `json:"steps"`
}

type goldenOptions struct {
	Converge            ConvergeMode `json:"converge"`
	Strict              bool         `json:"strict"`
	MaxDocumentBytes    int          `json:"maxDocumentBytes"`
	MaxDepth            int          `json:"maxDepth"`
	MaxClientTokenBytes int          `json:"maxClientTokenBytes"`
	MaxPayloadBytes     int          `json:"maxPayloadBytes"`
}

type goldenStep struct {
	Note          string          `json:"note"`
	Op            string          `json:"op"`
	Request       json.RawMessage `json:"request"`       // payload as JSON text, byte for byte
	RequestString *string         `json:"requestString"` // payload that is not JSON
	RequestBase64 string          `json:"requestBase64"` // payload that is not UTF-8
	Now           int64           `json:"now"`
	After         json.RawMessage `json:"after"` // stored document after an accepted update
	Accepted      json.RawMessage `json:"accepted"`
	Rejected      json.RawMessage `json:"rejected"`
	Delta         json.RawMessage `json:"delta"`
	Documents     json.RawMessage `json:"documents"`
}

func (s goldenStep) payload(t *testing.T) []byte {
	switch {
	case s.RequestString != nil:
		return []byte(*s.RequestString)
	case s.RequestBase64 != "":
		b, err := base64.StdEncoding.DecodeString(s.RequestBase64)
		if err != nil {
			t.Fatalf("requestBase64: %v", err)
		}
		return b
	}
	return s.Request
}

func loadGolden(t *testing.T, path string) []goldenCase {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] != '[' {
		data = append(append([]byte("["), data...), ']')
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var cases []goldenCase
	if err := dec.Decode(&cases); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cases
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "shadow", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 45 {
		t.Errorf("found %d golden files, want at least 45", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			for _, c := range loadGolden(t, file) {
				t.Run(c.Name, func(t *testing.T) { runGolden(t, c) })
			}
		})
	}
}

func runGolden(t *testing.T, c goldenCase) {
	if c.Name == "" || c.Spec == "" || len(c.Steps) == 0 {
		t.Fatal("a case needs a name, a spec reference and steps")
	}
	ref := Ref{Thing: "T"}
	if c.Ref != nil {
		ref = *c.Ref
	}
	o := Options{
		Converge: c.Options.Converge, Strict: c.Options.Strict,
		MaxDocumentBytes: c.Options.MaxDocumentBytes, MaxDepth: c.Options.MaxDepth,
		MaxClientTokenBytes: c.Options.MaxClientTokenBytes, MaxPayloadBytes: c.Options.MaxPayloadBytes,
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	cur := Current{Version: c.Tombstone}
	if len(c.Before) > 0 && string(c.Before) != "null" {
		cur.Doc = compact(c.Before)
	}
	for i, s := range c.Steps {
		what := func(name string) string { return "step " + strconv.Itoa(i) + " (" + s.Op + ") " + name }
		now := time.Unix(s.Now, 0)
		payload := s.payload(t)
		var (
			got     = map[string][]byte{}
			err     *Error
			tok     string
			has     bool
			nextCur = cur
		)
		switch s.Op {
		case "update":
			var req *UpdateRequest
			req, tok, has, err = ParseUpdate(payload, o)
			if err == nil {
				var res UpdateResult
				if res, err = Update(cur, req, now, o); err == nil {
					got["accepted"], got["delta"], got["documents"], got["after"] = res.Accepted, res.Delta, res.Documents, res.Doc
					if res.Version != DocVersion(res.Doc) {
						t.Errorf("%s: Version %d, document says %d", what("result"), res.Version, DocVersion(res.Doc))
					}
					nextCur = Current{Doc: res.Doc}
				}
			}
		case "get", "delete":
			tok, has, err = ParseTokenOnly(payload, o)
			if err == nil {
				op := Get
				if s.Op == "delete" {
					op = Delete
				}
				got["accepted"], err = op(cur, tok, has, now)
				if err == nil && s.Op == "delete" {
					nextCur = Current{Version: DocVersion(cur.Doc)}
				}
			}
		default:
			t.Fatalf("step %d: unknown op %q", i, s.Op)
		}
		if errors.Is(err, ErrNoShadow) {
			err = ref.NotFound()
		}
		if err != nil {
			got["rejected"] = Rejected(err, tok, has, now)
		}
		for _, k := range []struct {
			name string
			want json.RawMessage
		}{{"after", s.After}, {"accepted", s.Accepted}, {"rejected", s.Rejected}, {"delta", s.Delta}, {"documents", s.Documents}} {
			want := []byte(k.want)
			if string(want) == "null" {
				want = nil // "delta": null reads as "no delta"
			}
			checkPayload(t, what(k.name), got[k.name], want)
		}
		cur = nextCur
	}
}
