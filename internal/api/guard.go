package api

import (
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/umbra-iot/umbra/internal/auth"
)

// KeyChecker resolves API keys.
type KeyChecker interface {
	APIKey(key string) (auth.APIPrincipal, bool)
}

// Guard authenticates API requests and enforces roles. With Keys nil,
// authentication is off and every caller is an anonymous admin (the broker
// then listens on loopback only).
type Guard struct {
	Keys KeyChecker
}

type principalKey struct{}

// Require wraps h so that only callers whose role includes need reach it.
// The key comes from "Authorization: Bearer <key>" or "X-API-Key: <key>".
// A failure h returns is written by WriteError.
func (g *Guard) Require(need auth.Role, h HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := auth.APIPrincipal{Name: "anonymous", Role: auth.RoleAdmin}
		if g != nil && g.Keys != nil {
			key := r.Header.Get("X-API-Key")
			if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
				key = strings.TrimSpace(bearer)
			}
			if key == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="umbra"`)
				WriteError(w, Errorf(401, "", "Unauthorized: send an API key as 'Authorization: Bearer <key>'"))
				return
			}
			var ok bool
			if p, ok = g.Keys.APIKey(key); !ok {
				WriteError(w, Errorf(401, "", "Unauthorized: unknown API key"))
				return
			}
			if !p.Role.Allows(need) {
				WriteError(w, Errorf(403, "", "Forbidden: API key %s has role %s, this needs %s", p.Name, p.Role, need))
				return
			}
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

// Principal names the caller of r for shadow history: the API key's name,
// or the remote address when authentication is off.
func Principal(r *http.Request) string {
	p, _ := r.Context().Value(principalKey{}).(auth.APIPrincipal)
	if p.Name != "" && p.Name != "anonymous" {
		return "apikey:" + p.Name
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "http:" + host
}

// whoAmI answers GET /api/whoami: the caller's API key name and role, so
// that a client (the dashboard) can check a key and offer only what the role
// allows. With authentication off every caller is an anonymous admin.
func (g *Guard) whoAmI(w http.ResponseWriter, r *http.Request) error {
	p, _ := r.Context().Value(principalKey{}).(auth.APIPrincipal)
	writeJSON(w, http.StatusOK, map[string]any{
		"name":           p.Name,
		"role":           p.Role,
		"authentication": g != nil && g.Keys != nil,
	})
	return nil
}

// Register adds GET /api/whoami to mux.
func (g *Guard) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/whoami", g.Require(auth.RoleViewer, g.whoAmI))
}
