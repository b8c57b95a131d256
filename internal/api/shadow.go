package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/shadow"
)

// ShadowService is what the shadow routes need: the shadow service and its
// limits.
type ShadowService interface {
	shadow.Handler
	Options() shadow.Options
}

// ShadowLister lists named shadows and reads history (read-only paths that
// do not change shadows and so need not go through the service).
type ShadowLister interface {
	ListNamedShadows(thing, after string, limit int) (names []string, next string, err error)
	History(ref shadow.Ref, before int64, limit int) ([]json.RawMessage, error)
}

// ShadowAPI serves the AWS data-plane shadow paths plus history.
type ShadowAPI struct {
	Shadows ShadowService
	Lister  ShadowLister
	Guard   *Guard
}

// Register adds the routes to mux.
func (a *ShadowAPI) Register(mux *http.ServeMux) {
	g := a.Guard
	mux.HandleFunc("GET /things/{thing}/shadow", g.Require(auth.RoleViewer, a.op(shadow.OpGet)))
	mux.HandleFunc("POST /things/{thing}/shadow", g.Require(auth.RoleOperator, a.op(shadow.OpUpdate)))
	mux.HandleFunc("DELETE /things/{thing}/shadow", g.Require(auth.RoleOperator, a.op(shadow.OpDelete)))
	mux.HandleFunc("GET /things/{thing}/shadow/history", g.Require(auth.RoleViewer, a.history))
	mux.HandleFunc("GET /api/things/shadow/ListNamedShadowsForThing/{thing}", g.Require(auth.RoleViewer, a.listNamed))
}

// ref reads the thing from the path and the shadow from ?name=.
func ref(r *http.Request) (shadow.Ref, error) {
	ref := shadow.Ref{Thing: r.PathValue("thing"), Name: r.URL.Query().Get("name")}
	if !shadow.ValidThingName(ref.Thing) {
		return ref, badRequest("Invalid thing name: %q (1-128 characters of a-z A-Z 0-9 : _ -)", ref.Thing)
	}
	if r.URL.Query().Has("name") && !shadow.ValidShadowName(ref.Name) {
		return ref, badRequest("Invalid shadow name: %q (1-64 characters of a-z A-Z 0-9 : _ -)", ref.Name)
	}
	return ref, nil
}

func (a *ShadowAPI) op(op shadow.Op) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ref, err := ref(r)
		if err != nil {
			return err
		}
		var body []byte
		if op == shadow.OpUpdate {
			limit := int64(a.Shadows.Options().MaxPayloadBytes)
			body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return &shadow.Error{Code: 413, Message: "The payload exceeds the maximum size allowed"}
			}
			if err != nil {
				return badRequest("reading request body: %v", err)
			}
		}
		resp := a.Shadows.Handle(r.Context(), shadow.Request{
			Ref: ref, Op: op, Payload: body, Origin: shadow.OriginHTTP, Principal: Principal(r),
		})
		if resp.Err != nil {
			return &rejection{err: resp.Err, doc: resp.Payload}
		}
		writeRaw(w, http.StatusOK, resp.Payload)
		return nil
	}
}

// PageSize reads the page size parameter key of r (?pageSize=, ?limit=):
// def when absent, else a number within [1, max] or a 400 naming key.
func PageSize(r *http.Request, key string, def, max int) (int, error) {
	raw := r.URL.Query().Get(key)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > max {
		return 0, Errorf(400, key, "Invalid %s: %q (want a number from 1 to %d)", key, raw, max)
	}
	return n, nil
}

func (a *ShadowAPI) listNamed(w http.ResponseWriter, r *http.Request) error {
	thing := r.PathValue("thing")
	if !shadow.ValidThingName(thing) {
		return badRequest("Invalid thing name: %q", thing)
	}
	size, err := PageSize(r, "pageSize", 25, 100)
	if err != nil {
		return err
	}
	after := r.URL.Query().Get("nextToken")
	if after != "" && !shadow.ValidShadowName(after) {
		return Errorf(400, "nextToken", "Invalid nextToken: %q", after)
	}
	names, next, err := a.Lister.ListNamedShadows(thing, after, size)
	if err != nil {
		return err
	}
	out := struct {
		Results   []string `json:"results"`
		NextToken string   `json:"nextToken,omitempty"`
		Timestamp int64    `json:"timestamp"`
	}{Results: names, NextToken: next, Timestamp: nowUnix()}
	if out.Results == nil {
		out.Results = []string{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *ShadowAPI) history(w http.ResponseWriter, r *http.Request) error {
	ref, err := ref(r)
	if err != nil {
		return err
	}
	limit, err := PageSize(r, "limit", 100, 1000)
	if err != nil {
		return err
	}
	var before int64
	if raw := r.URL.Query().Get("before"); raw != "" {
		v, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || v < 1 {
			return Errorf(400, "before", "Invalid before: %q (want a version number)", raw)
		}
		before = v
	}
	entries, err := a.Lister.History(ref, before, limit)
	if err != nil {
		return err
	}
	out := struct {
		Thing   string            `json:"thing"`
		Shadow  string            `json:"shadow,omitempty"`
		Entries []json.RawMessage `json:"entries"`
	}{Thing: ref.Thing, Shadow: ref.Name, Entries: entries}
	if out.Entries == nil {
		out.Entries = []json.RawMessage{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
