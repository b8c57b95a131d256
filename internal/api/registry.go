package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/registry/query"
)

// RegistryAPI serves things, thing types, groups, fleet search and
// aggregations under /api/.
type RegistryAPI struct {
	Registry *registry.Registry
	Shadows  Shadows // reads classic shadows for GET /api/search?expand=shadow
	Guard    *Guard
}

// Register adds the routes to mux.
func (a *RegistryAPI) Register(mux *http.ServeMux) {
	g := a.Guard
	mux.HandleFunc("POST /api/things", g.Require(auth.RoleAdmin, a.createThing))
	mux.HandleFunc("GET /api/things", g.Require(auth.RoleViewer, a.listThings))
	mux.HandleFunc("GET /api/things/{thing}", g.Require(auth.RoleViewer, a.getThing))
	mux.HandleFunc("PATCH /api/things/{thing}", g.Require(auth.RoleAdmin, a.updateThing))
	mux.HandleFunc("DELETE /api/things/{thing}", g.Require(auth.RoleAdmin, a.deleteThing))
	mux.HandleFunc("GET /api/things/{thing}/connectivity", g.Require(auth.RoleViewer, a.connectivity))

	mux.HandleFunc("POST /api/thing-types", g.Require(auth.RoleAdmin, a.createType))
	mux.HandleFunc("GET /api/thing-types", g.Require(auth.RoleViewer, a.listTypes))
	mux.HandleFunc("GET /api/thing-types/{type}", g.Require(auth.RoleViewer, a.getType))
	mux.HandleFunc("PATCH /api/thing-types/{type}", g.Require(auth.RoleAdmin, a.deprecateType))
	mux.HandleFunc("DELETE /api/thing-types/{type}", g.Require(auth.RoleAdmin, a.deleteType))

	mux.HandleFunc("POST /api/groups", g.Require(auth.RoleAdmin, a.createGroup))
	mux.HandleFunc("GET /api/groups", g.Require(auth.RoleViewer, a.listGroups))
	mux.HandleFunc("GET /api/groups/{group}", g.Require(auth.RoleViewer, a.getGroup))
	mux.HandleFunc("DELETE /api/groups/{group}", g.Require(auth.RoleAdmin, a.deleteGroup))
	mux.HandleFunc("GET /api/groups/{group}/things", g.Require(auth.RoleViewer, a.groupMembers))
	mux.HandleFunc("PUT /api/groups/{group}/things/{thing}", g.Require(auth.RoleAdmin, a.addMember))
	mux.HandleFunc("DELETE /api/groups/{group}/things/{thing}", g.Require(auth.RoleAdmin, a.removeMember))

	mux.HandleFunc("GET /api/search", g.Require(auth.RoleViewer, a.search))
	mux.HandleFunc("GET /api/aggregations/count", g.Require(auth.RoleViewer, a.count))
	mux.HandleFunc("GET /api/aggregations/buckets", g.Require(auth.RoleViewer, a.buckets))
}

// apiError is the registry API's error body: the HTTP status, a message,
// and the offending field when one is to blame.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func fail(w http.ResponseWriter, status int, field, format string, args ...any) {
	writeJSON(w, status, apiError{Code: status, Message: fmt.Sprintf(format, args...), Field: field})
}

// failErr maps registry errors to statuses.
func failErr(w http.ResponseWriter, err error) {
	var fe *registry.FieldError
	var se *query.SyntaxError
	switch {
	case errors.As(err, &fe):
		fail(w, 400, fe.Field, "%s", fe.Msg)
	case errors.As(err, &se):
		fail(w, 400, "query", "%s", se.Error())
	case errors.Is(err, registry.ErrNotFound):
		fail(w, 404, "", "%s", err.Error())
	case errors.Is(err, registry.ErrExists), errors.Is(err, registry.ErrVersionConflict), errors.Is(err, registry.ErrInUse):
		fail(w, 409, "", "%s", err.Error())
	default:
		fail(w, 500, "", "internal error")
	}
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors that name the problem.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &ute):
			fail(w, 400, ute.Field, "%s must be %s, not JSON %s", ute.Field, ute.Type, ute.Value)
		case errors.As(err, &mbe):
			fail(w, 413, "", "request body larger than %d bytes", mbe.Limit)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			fail(w, 400, name, "unknown field %q", name)
		case errors.Is(err, io.EOF):
			fail(w, 400, "", "request body is empty; expected a JSON object")
		default:
			fail(w, 400, "", "malformed JSON: %v", err)
		}
		return false
	}
	if dec.More() {
		fail(w, 400, "", "malformed JSON: data after the object")
		return false
	}
	return true
}

func limitParam(w http.ResponseWriter, r *http.Request, def, max int) (int, bool) {
	raw := r.URL.Query().Get("pageSize")
	if raw == "" {
		return def, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > max {
		fail(w, 400, "pageSize", "pageSize %q: want a number from 1 to %d", raw, max)
		return 0, false
	}
	return n, true
}

// thingView is a thing with its live state, as GET returns it.
type thingView struct {
	registry.Thing
	Groups       []string               `json:"thingGroupNames"`
	Connectivity *registry.Connectivity `json:"connectivity,omitempty"`
}

func (a *RegistryAPI) view(t registry.Thing) thingView {
	v := thingView{Thing: t, Groups: a.Registry.ThingGroups(t.Name)}
	if v.Groups == nil {
		v.Groups = []string{}
	}
	if c, ok := a.Registry.Connectivity(t.Name); ok {
		v.Connectivity = &c
	}
	return v
}

func (a *RegistryAPI) createThing(w http.ResponseWriter, r *http.Request) {
	var n registry.NewThing
	if !decode(w, r, &n) {
		return
	}
	t, err := a.Registry.CreateThing(r.Context(), n)
	if err != nil {
		failErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, a.view(t))
}

func (a *RegistryAPI) getThing(w http.ResponseWriter, r *http.Request) {
	t, err := a.Registry.Thing(r.PathValue("thing"))
	if err != nil {
		failErr(w, fmt.Errorf("thing %q: %w", r.PathValue("thing"), err))
		return
	}
	writeJSON(w, http.StatusOK, a.view(t))
}

// connectivity answers a thing's connectivity and its last connects and
// disconnects, newest first.
func (a *RegistryAPI) connectivity(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("thing")
	if _, err := a.Registry.Thing(name); err != nil {
		failErr(w, fmt.Errorf("thing %q: %w", name, err))
		return
	}
	history, err := a.Registry.ConnectivityHistory(r.Context(), name)
	if err != nil {
		failErr(w, err)
		return
	}
	if history == nil {
		history = []registry.Transition{}
	}
	out := map[string]any{"thingName": name, "connectivity": nil, "history": history}
	if c, ok := a.Registry.Connectivity(name); ok {
		out["connectivity"] = c
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *RegistryAPI) listThings(w http.ResponseWriter, r *http.Request) {
	limit, ok := limitParam(w, r, 100, 1000)
	if !ok {
		return
	}
	things, next, err := a.Registry.ListThings(r.URL.Query().Get("nextToken"), limit)
	if err != nil {
		failErr(w, err)
		return
	}
	if things == nil {
		things = []registry.Thing{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"things": things, "nextToken": next})
}

func (a *RegistryAPI) updateThing(w http.ResponseWriter, r *http.Request) {
	var p registry.ThingPatch
	if !decode(w, r, &p) {
		return
	}
	t, err := a.Registry.UpdateThing(r.Context(), r.PathValue("thing"), p)
	if err != nil {
		failErr(w, fmt.Errorf("thing %q: %w", r.PathValue("thing"), err))
		return
	}
	writeJSON(w, http.StatusOK, a.view(t))
}

func (a *RegistryAPI) deleteThing(w http.ResponseWriter, r *http.Request) {
	var expected int64
	if raw := r.URL.Query().Get("expectedVersion"); raw != "" {
		v, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || v < 1 {
			fail(w, 400, "expectedVersion", "expectedVersion %q: want a positive integer", raw)
			return
		}
		expected = v
	}
	if err := a.Registry.DeleteThing(r.Context(), r.PathValue("thing"), expected); err != nil {
		failErr(w, fmt.Errorf("thing %q: %w", r.PathValue("thing"), err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *RegistryAPI) createType(w http.ResponseWriter, r *http.Request) {
	var t registry.ThingType
	if !decode(w, r, &t) {
		return
	}
	out, err := a.Registry.CreateType(r.Context(), t)
	if err != nil {
		failErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (a *RegistryAPI) listTypes(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"thingTypes": a.Registry.Types()})
}

func (a *RegistryAPI) getType(w http.ResponseWriter, r *http.Request) {
	t, err := a.Registry.Type(r.PathValue("type"))
	if err != nil {
		failErr(w, fmt.Errorf("thing type %q: %w", r.PathValue("type"), err))
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (a *RegistryAPI) deprecateType(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Deprecated *bool `json:"deprecated"`
	}
	if !decode(w, r, &body) {
		return
	}
	if body.Deprecated == nil {
		fail(w, 400, "deprecated", "deprecated (true or false) is required")
		return
	}
	t, err := a.Registry.DeprecateType(r.Context(), r.PathValue("type"), *body.Deprecated)
	if err != nil {
		failErr(w, fmt.Errorf("thing type %q: %w", r.PathValue("type"), err))
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (a *RegistryAPI) deleteType(w http.ResponseWriter, r *http.Request) {
	if err := a.Registry.DeleteType(r.Context(), r.PathValue("type")); err != nil {
		failErr(w, fmt.Errorf("thing type %q: %w", r.PathValue("type"), err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *RegistryAPI) createGroup(w http.ResponseWriter, r *http.Request) {
	var g registry.Group
	if !decode(w, r, &g) {
		return
	}
	out, err := a.Registry.CreateGroup(r.Context(), g)
	if err != nil {
		failErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (a *RegistryAPI) listGroups(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"groups": a.Registry.Groups()})
}

func (a *RegistryAPI) getGroup(w http.ResponseWriter, r *http.Request) {
	g, err := a.Registry.Group(r.PathValue("group"))
	if err != nil {
		failErr(w, fmt.Errorf("group %q: %w", r.PathValue("group"), err))
		return
	}
	writeJSON(w, http.StatusOK, g)
}

func (a *RegistryAPI) deleteGroup(w http.ResponseWriter, r *http.Request) {
	if err := a.Registry.DeleteGroup(r.Context(), r.PathValue("group")); err != nil {
		failErr(w, fmt.Errorf("group %q: %w", r.PathValue("group"), err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *RegistryAPI) groupMembers(w http.ResponseWriter, r *http.Request) {
	limit, ok := limitParam(w, r, 100, 1000)
	if !ok {
		return
	}
	res, err := a.Registry.Members(r.PathValue("group"), r.URL.Query().Get("nextToken"), limit)
	if err != nil {
		failErr(w, fmt.Errorf("group %q: %w", r.PathValue("group"), err))
		return
	}
	writeSearch(w, res, nil)
}

func (a *RegistryAPI) addMember(w http.ResponseWriter, r *http.Request) {
	if err := a.Registry.AddToGroup(r.Context(), r.PathValue("group"), r.PathValue("thing")); err != nil {
		failErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *RegistryAPI) removeMember(w http.ResponseWriter, r *http.Request) {
	if err := a.Registry.RemoveFromGroup(r.Context(), r.PathValue("group"), r.PathValue("thing")); err != nil {
		failErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// parseQuery reads ?query= (default "*": every thing).
func parseQuery(w http.ResponseWriter, r *http.Request) (*query.Query, bool) {
	raw := r.URL.Query().Get("query")
	if raw == "" {
		raw = "*"
	}
	q, err := query.Parse(raw)
	if err != nil {
		failErr(w, err)
		return nil, false
	}
	return q, true
}

// writeSearch answers a page of names; expanded, when not nil, carries the
// names' details in the same order.
func writeSearch(w http.ResponseWriter, res registry.SearchResult, expanded []expandedThing) {
	things := res.Things
	if things == nil {
		things = []string{}
	}
	out := map[string]any{"things": things, "total": res.Total}
	if res.NextToken != "" {
		out["nextToken"] = res.NextToken
	}
	if expanded != nil {
		out["expanded"] = expanded
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *RegistryAPI) search(w http.ResponseWriter, r *http.Request) {
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	limit, ok := limitParam(w, r, 100, 1000)
	if !ok {
		return
	}
	e, ok := parseExpand(w, r)
	if !ok {
		return
	}
	res := a.Registry.Search(q, r.URL.Query().Get("nextToken"), limit)
	var expanded []expandedThing
	if e.thing || e.shadow {
		expanded = a.expand(r, res.Things, e)
	}
	writeSearch(w, res, expanded)
}

func (a *RegistryAPI) count(w http.ResponseWriter, r *http.Request) {
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": a.Registry.Count(q), "query": q.Source})
}

func (a *RegistryAPI) buckets(w http.ResponseWriter, r *http.Request) {
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	field := r.URL.Query().Get("field")
	if field == "" {
		fail(w, 400, "field", "field is required (e.g. field=shadow.reported.firmware_version)")
		return
	}
	max := 100
	if raw := r.URL.Query().Get("maxBuckets"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 10000 {
			fail(w, 400, "maxBuckets", "maxBuckets %q: want a number from 1 to 10000", raw)
			return
		}
		max = n
	}
	buckets, total := a.Registry.Buckets(q, field, max)
	if buckets == nil {
		buckets = []registry.Bucket{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"totalCount": total, "field": field, "buckets": buckets})
}
