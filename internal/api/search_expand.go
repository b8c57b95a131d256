package api

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/umbra-iot/umbra/shadow"
)

// A search can carry, beside each matching name, the thing's registry record
// and its classic shadow (?expand=thing,shadow), so that a fleet table is one
// request rather than two more per row.

// expansion is what ?expand= asks for.
type expansion struct{ thing, shadow bool }

func parseExpand(r *http.Request) (expansion, error) {
	var e expansion
	raw := r.URL.Query().Get("expand")
	if raw == "" {
		return e, nil
	}
	for _, part := range strings.Split(raw, ",") {
		switch strings.TrimSpace(part) {
		case "thing":
			e.thing = true
		case "shadow":
			e.shadow = true
		default:
			return e, Errorf(400, "expand", "expand %q: want thing, shadow or both (expand=thing,shadow)", part)
		}
	}
	return e, nil
}

// expandedThing is one search result in detail. A field asked for is null
// when there is nothing to show (the thing was deleted since the search, or
// it has no classic shadow); ShadowError says why a shadow could not be read.
type expandedThing struct {
	Name        string          `json:"thingName"`
	Thing       json.RawMessage `json:"thing,omitempty"`
	Shadow      json.RawMessage `json:"shadow,omitempty"`
	ShadowError *Error          `json:"shadowError,omitempty"`
}

var jsonNull = json.RawMessage("null")

// expand reads the details of names. Shadows are read through the shadow
// service, like GET /things/{thing}/shadow, so the document, its delta and
// the limits are the same.
func (a *RegistryAPI) expand(r *http.Request, names []string, e expansion) []expandedThing {
	out := make([]expandedThing, len(names))
	for i, name := range names {
		x := expandedThing{Name: name}
		if e.thing {
			x.Thing = jsonNull
			if t, err := a.Registry.Thing(name); err == nil {
				x.Thing, _ = json.Marshal(a.view(t))
			}
		}
		if e.shadow {
			x.Shadow = jsonNull
			resp := a.Shadows.Handle(r.Context(), shadow.Request{
				Ref: shadow.Ref{Thing: name}, Op: shadow.OpGet, Origin: shadow.OriginHTTP, Principal: Principal(r),
			})
			switch {
			case resp.Err == nil:
				x.Shadow = resp.Payload
			case resp.Err.Code != http.StatusNotFound:
				x.ShadowError = &Error{Code: resp.Err.Code, Message: resp.Err.Message}
			}
		}
		out[i] = x
	}
	return out
}
