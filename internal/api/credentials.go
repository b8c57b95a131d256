package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/shadow"
)

// Credentials manages device secrets.
type Credentials interface {
	// Issue creates or rotates the secret of thing and returns it; only its
	// hash is kept.
	Issue(ctx context.Context, thing string) (secret string, err error)
	// Revoke deletes the secret of thing; it reports whether there was one.
	Revoke(ctx context.Context, thing string) (bool, error)
}

// CredentialsAPI serves /api/things/{thing}/credentials (admin only).
type CredentialsAPI struct {
	Credentials Credentials
	Guard       *Guard
}

// Register adds the routes to mux.
func (a *CredentialsAPI) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/things/{thing}/credentials", a.Guard.Require(auth.RoleAdmin, a.issue))
	mux.HandleFunc("DELETE /api/things/{thing}/credentials", a.Guard.Require(auth.RoleAdmin, a.revoke))
}

func (a *CredentialsAPI) issue(w http.ResponseWriter, r *http.Request) {
	thing := r.PathValue("thing")
	if !shadow.ValidThingName(thing) {
		writeError(w, badRequest(fmt.Sprintf("Invalid thing name: %q", thing)))
		return
	}
	secret, err := a.Credentials.Issue(r.Context(), thing)
	if err != nil {
		writeError(w, &shadow.Error{Code: 500, Message: "Internal service failure"})
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{
		"thing":     thing,
		"secret":    secret,
		"createdAt": time.Now().Unix(),
		"note":      "the secret is shown once; Umbra keeps only its bcrypt hash. Connect with client id = thing name and this secret as the MQTT password.",
	})
}

func (a *CredentialsAPI) revoke(w http.ResponseWriter, r *http.Request) {
	thing := r.PathValue("thing")
	if !shadow.ValidThingName(thing) {
		writeError(w, badRequest(fmt.Sprintf("Invalid thing name: %q", thing)))
		return
	}
	existed, err := a.Credentials.Revoke(r.Context(), thing)
	if err != nil {
		writeError(w, &shadow.Error{Code: 500, Message: "Internal service failure"})
		return
	}
	if !existed {
		writeError(w, &shadow.Error{Code: 404, Message: fmt.Sprintf("Thing %q has no credentials", thing)})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
