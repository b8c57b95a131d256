package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/events"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/registry/query"
)

// StreamAPI serves GET /api/events: a server-sent-events stream of shadow
// changes, connectivity changes and rollout events, filterable by thing
// (?thing=, repeatable), group (?group=), fleet query (?query=) and type
// (?types=shadow,connectivity,rollout,job).
type StreamAPI struct {
	Hub      *events.Hub
	Registry *registry.Registry
	Guard    *Guard
	// Stop, when closed, ends every open stream (the server is shutting down).
	Stop <-chan struct{}
	// Heartbeat is how often an idle stream sends a comment line so proxies
	// keep it open; zero means 15 s.
	Heartbeat time.Duration
	// WriteTimeout bounds each write of a stream (a reader that stopped
	// reading is cut off); zero means no bound. The server's own read and
	// write timeouts, which would end every stream, are lifted for it.
	WriteTimeout time.Duration
}

// Register adds the route to mux.
func (a *StreamAPI) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/events", a.Guard.Require(auth.RoleViewer, a.stream))
}

func (a *StreamAPI) stream(w http.ResponseWriter, r *http.Request) error {
	flusher, ok := w.(http.Flusher)
	if !ok {
		return Errorf(500, "", "streaming unsupported")
	}
	accept, err := a.filter(r)
	if err != nil {
		return err
	}
	sub := a.Hub.Subscribe(1024, accept)
	defer sub.Close()
	// A stream lives longer than http.read_timeout and write_timeout allow
	// a request: lift the read bound (the request has no body) and bound
	// each write instead.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	extend := func() {
		var d time.Time
		if a.WriteTimeout > 0 {
			d = time.Now().Add(a.WriteTimeout)
		}
		_ = rc.SetWriteDeadline(d)
	}
	extend()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": umbra event stream\n\n")
	flusher.Flush()
	hb := a.Heartbeat
	if hb == 0 {
		hb = 15 * time.Second
	}
	ticker := time.NewTicker(hb)
	defer ticker.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-a.Stop:
			return nil
		case <-ticker.C:
			extend()
			if n := sub.Dropped(); n > 0 {
				fmt.Fprintf(w, "event: dropped\ndata: {\"dropped\":%d}\n\n", n)
			} else {
				fmt.Fprint(w, ": keepalive\n\n")
			}
			flusher.Flush()
		case e := <-sub.C:
			extend()
			if n := sub.Dropped(); n > 0 {
				fmt.Fprintf(w, "event: dropped\ndata: {\"dropped\":%d}\n\n", n)
			}
			b, _ := json.Marshal(e)
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Type, b)
			flusher.Flush()
		}
	}
}

// filter builds the subscription filter from the query parameters.
func (a *StreamAPI) filter(r *http.Request) (func(events.Event) bool, error) {
	v := r.URL.Query()
	things := v["thing"]
	var types []string
	if raw := v.Get("types"); raw != "" {
		types = strings.Split(raw, ",")
		for _, t := range types {
			if !slices.Contains([]string{"shadow", "connectivity", "rollout", "job"}, t) {
				return nil, Errorf(400, "types", "unknown event type %q: want shadow, connectivity, rollout or job", t)
			}
		}
	}
	var q *query.Query
	if raw := v.Get("query"); raw != "" {
		var err error
		if q, err = query.Parse(raw); err != nil {
			return nil, err
		}
	}
	if g := v.Get("group"); g != "" {
		if _, err := a.Registry.Group(g); err != nil {
			return nil, Errorf(404, "group", "group %q does not exist", g)
		}
		gq, err := query.Parse("thingGroupNames:" + quoteValue(g))
		if err != nil {
			return nil, err
		}
		if q == nil {
			q = gq
		} else {
			q = &query.Query{Root: &query.And{Left: q.Root, Right: gq.Root}, Source: q.Source + " AND " + gq.Source}
		}
	}
	return func(e events.Event) bool {
		if len(types) > 0 && !slices.Contains(types, e.Type) {
			return false
		}
		if len(things) > 0 && !slices.Contains(things, e.Thing) {
			return false
		}
		if q != nil && (e.Thing == "" || !a.Registry.MatchThing(q, e.Thing)) {
			return false
		}
		return true
	}, nil
}

func quoteValue(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
