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
	Shadows  ShadowService // reads classic shadows for GET /api/search?expand=shadow
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

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors that name the problem.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &ute):
			return Errorf(400, ute.Field, "%s must be %s, not JSON %s", ute.Field, ute.Type, ute.Value)
		case errors.As(err, &mbe):
			return err
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return Errorf(400, name, "unknown field %q", name)
		case errors.Is(err, io.EOF):
			return badRequest("request body is empty; expected a JSON object")
		default:
			return badRequest("malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return badRequest("malformed JSON: data after the object")
	}
	return nil
}

func (a *RegistryAPI) view(t registry.Thing) registry.ThingView {
	v := registry.ThingView{Thing: t, Groups: a.Registry.ThingGroups(t.Name)}
	if v.Groups == nil {
		v.Groups = []string{}
	}
	if c, ok := a.Registry.Connectivity(t.Name); ok {
		v.Connectivity = &c
	}
	return v
}

func (a *RegistryAPI) createThing(w http.ResponseWriter, r *http.Request) error {
	var n registry.NewThing
	if err := decode(w, r, &n); err != nil {
		return err
	}
	t, err := a.Registry.CreateThing(r.Context(), n)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, a.view(t))
	return nil
}

func (a *RegistryAPI) getThing(w http.ResponseWriter, r *http.Request) error {
	t, err := a.Registry.Thing(r.PathValue("thing"))
	if err != nil {
		return fmt.Errorf("thing %q: %w", r.PathValue("thing"), err)
	}
	writeJSON(w, http.StatusOK, a.view(t))
	return nil
}

// connectivity answers a thing's connectivity and its last connects and
// disconnects, newest first.
func (a *RegistryAPI) connectivity(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("thing")
	if _, err := a.Registry.Thing(name); err != nil {
		return fmt.Errorf("thing %q: %w", name, err)
	}
	history, err := a.Registry.ConnectivityHistory(r.Context(), name)
	if err != nil {
		return err
	}
	if history == nil {
		history = []registry.Transition{}
	}
	out := map[string]any{"thingName": name, "connectivity": nil, "history": history}
	if c, ok := a.Registry.Connectivity(name); ok {
		out["connectivity"] = c
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *RegistryAPI) listThings(w http.ResponseWriter, r *http.Request) error {
	limit, err := PageSize(r, "pageSize", 100, 1000)
	if err != nil {
		return err
	}
	things, next, err := a.Registry.ListThings(r.URL.Query().Get("nextToken"), limit)
	if err != nil {
		return err
	}
	if things == nil {
		things = []registry.Thing{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"things": things, "nextToken": next})
	return nil
}

func (a *RegistryAPI) updateThing(w http.ResponseWriter, r *http.Request) error {
	var p registry.ThingPatch
	if err := decode(w, r, &p); err != nil {
		return err
	}
	t, err := a.Registry.UpdateThing(r.Context(), r.PathValue("thing"), p)
	if err != nil {
		return fmt.Errorf("thing %q: %w", r.PathValue("thing"), err)
	}
	writeJSON(w, http.StatusOK, a.view(t))
	return nil
}

func (a *RegistryAPI) deleteThing(w http.ResponseWriter, r *http.Request) error {
	var expected int64
	if raw := r.URL.Query().Get("expectedVersion"); raw != "" {
		v, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || v < 1 {
			return Errorf(400, "expectedVersion", "expectedVersion %q: want a positive integer", raw)
		}
		expected = v
	}
	if err := a.Registry.DeleteThing(r.Context(), r.PathValue("thing"), expected); err != nil {
		return fmt.Errorf("thing %q: %w", r.PathValue("thing"), err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *RegistryAPI) createType(w http.ResponseWriter, r *http.Request) error {
	var t registry.ThingType
	if err := decode(w, r, &t); err != nil {
		return err
	}
	out, err := a.Registry.CreateType(r.Context(), t)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (a *RegistryAPI) listTypes(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"thingTypes": a.Registry.Types()})
	return nil
}

func (a *RegistryAPI) getType(w http.ResponseWriter, r *http.Request) error {
	t, err := a.Registry.Type(r.PathValue("type"))
	if err != nil {
		return fmt.Errorf("thing type %q: %w", r.PathValue("type"), err)
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (a *RegistryAPI) deprecateType(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Deprecated *bool `json:"deprecated"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.Deprecated == nil {
		return Errorf(400, "deprecated", "deprecated (true or false) is required")
	}
	t, err := a.Registry.DeprecateType(r.Context(), r.PathValue("type"), *body.Deprecated)
	if err != nil {
		return fmt.Errorf("thing type %q: %w", r.PathValue("type"), err)
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (a *RegistryAPI) deleteType(w http.ResponseWriter, r *http.Request) error {
	if err := a.Registry.DeleteType(r.Context(), r.PathValue("type")); err != nil {
		return fmt.Errorf("thing type %q: %w", r.PathValue("type"), err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *RegistryAPI) createGroup(w http.ResponseWriter, r *http.Request) error {
	var g registry.Group
	if err := decode(w, r, &g); err != nil {
		return err
	}
	out, err := a.Registry.CreateGroup(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (a *RegistryAPI) listGroups(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"groups": a.Registry.Groups()})
	return nil
}

func (a *RegistryAPI) getGroup(w http.ResponseWriter, r *http.Request) error {
	g, err := a.Registry.Group(r.PathValue("group"))
	if err != nil {
		return fmt.Errorf("group %q: %w", r.PathValue("group"), err)
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

func (a *RegistryAPI) deleteGroup(w http.ResponseWriter, r *http.Request) error {
	if err := a.Registry.DeleteGroup(r.Context(), r.PathValue("group")); err != nil {
		return fmt.Errorf("group %q: %w", r.PathValue("group"), err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *RegistryAPI) groupMembers(w http.ResponseWriter, r *http.Request) error {
	limit, err := PageSize(r, "pageSize", 100, 1000)
	if err != nil {
		return err
	}
	res, err := a.Registry.Members(r.PathValue("group"), r.URL.Query().Get("nextToken"), limit)
	if err != nil {
		return fmt.Errorf("group %q: %w", r.PathValue("group"), err)
	}
	writeSearch(w, res, nil)
	return nil
}

func (a *RegistryAPI) addMember(w http.ResponseWriter, r *http.Request) error {
	if err := a.Registry.AddToGroup(r.Context(), r.PathValue("group"), r.PathValue("thing")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *RegistryAPI) removeMember(w http.ResponseWriter, r *http.Request) error {
	if err := a.Registry.RemoveFromGroup(r.Context(), r.PathValue("group"), r.PathValue("thing")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// parseQuery reads ?query= (default "*": every thing).
func parseQuery(r *http.Request) (*query.Query, error) {
	raw := r.URL.Query().Get("query")
	if raw == "" {
		raw = "*"
	}
	return query.Parse(raw)
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

func (a *RegistryAPI) search(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r)
	if err != nil {
		return err
	}
	limit, err := PageSize(r, "pageSize", 100, 1000)
	if err != nil {
		return err
	}
	e, err := parseExpand(r)
	if err != nil {
		return err
	}
	res := a.Registry.Search(q, r.URL.Query().Get("nextToken"), limit)
	var expanded []expandedThing
	if e.thing || e.shadow {
		expanded = a.expand(r, res.Things, e)
	}
	writeSearch(w, res, expanded)
	return nil
}

func (a *RegistryAPI) count(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": a.Registry.Count(q), "query": q.Source})
	return nil
}

func (a *RegistryAPI) buckets(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r)
	if err != nil {
		return err
	}
	field := r.URL.Query().Get("field")
	if field == "" {
		return Errorf(400, "field", "field is required (e.g. field=shadow.reported.firmware_version)")
	}
	max := 100
	if raw := r.URL.Query().Get("maxBuckets"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 10000 {
			return Errorf(400, "maxBuckets", "maxBuckets %q: want a number from 1 to 10000", raw)
		}
		max = n
	}
	buckets, total := a.Registry.Buckets(q, field, max)
	if buckets == nil {
		buckets = []registry.Bucket{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"totalCount": total, "field": field, "buckets": buckets})
	return nil
}
