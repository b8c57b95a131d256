package api

import (
	"context"
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

func (a *CredentialsAPI) issue(w http.ResponseWriter, r *http.Request) error {
	thing := r.PathValue("thing")
	if !shadow.ValidThingName(thing) {
		return badRequest("Invalid thing name: %q", thing)
	}
	secret, err := a.Credentials.Issue(r.Context(), thing)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{
		"thing":     thing,
		"secret":    secret,
		"createdAt": time.Now().Unix(),
		"note":      "the secret is shown once; Umbra keeps only its bcrypt hash. Connect with client id = thing name and this secret as the MQTT password.",
	})
	return nil
}

func (a *CredentialsAPI) revoke(w http.ResponseWriter, r *http.Request) error {
	thing := r.PathValue("thing")
	if !shadow.ValidThingName(thing) {
		return badRequest("Invalid thing name: %q", thing)
	}
	existed, err := a.Credentials.Revoke(r.Context(), thing)
	if err != nil {
		return err
	}
	if !existed {
		return Errorf(404, "", "Thing %q has no credentials", thing)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
