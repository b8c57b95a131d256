package reliability

import (
	"bytes"
	"encoding/json"
	"net/url"
	"sort"

	"github.com/umbra-iot/umbra/shadow"
)

// shadowURL is the HTTP data-plane URL of a shadow (suffix "" or "/history").
func shadowURL(base string, ref shadow.Ref, suffix string, query ...string) string {
	u := base + "/things/" + ref.Thing + "/shadow" + suffix
	q := url.Values{}
	if ref.Name != "" {
		q.Set("name", ref.Name)
	}
	for i := 0; i+1 < len(query); i += 2 {
		q.Set(query[i], query[i+1])
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// historyEntry is one entry of GET /things/{t}/shadow/history.
type historyEntry struct {
	Version   int64           `json:"version"`
	Op        string          `json:"op"`
	Timestamp int64           `json:"timestamp"`
	Principal string          `json:"principal"`
	Origin    string          `json:"origin"`
	Request   json.RawMessage `json:"request"`
	State     json.RawMessage `json:"state"`
}

// kindOrder orders an update before a delete of the same version, as the
// store does.
func (e historyEntry) kindOrder() int {
	if e.Op == string(shadow.OpDelete) {
		return 1
	}
	return 0
}

// sortHistory sorts entries oldest first.
func sortHistory(es []historyEntry) {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Version != es[j].Version {
			return es[i].Version < es[j].Version
		}
		return es[i].kindOrder() < es[j].kindOrder()
	})
}

// canonJSON re-encodes JSON with sorted keys and numbers as written, so two
// documents compare equal when they mean the same. Invalid JSON is returned
// as is, prefixed, so it never equals valid JSON.
func canonJSON(b []byte) string {
	if len(bytes.TrimSpace(b)) == 0 {
		return "<absent>"
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "<invalid>" + string(b)
	}
	out, err := json.Marshal(v)
	if err != nil {
		return "<invalid>" + string(b)
	}
	return string(out)
}

// jsonEqual reports whether a and b are the same JSON value (absent equals
// absent, and absent equals null).
func jsonEqual(a, b []byte) bool {
	norm := func(x []byte) string {
		s := canonJSON(x)
		if s == "null" {
			return "<absent>"
		}
		return s
	}
	return norm(a) == norm(b)
}
