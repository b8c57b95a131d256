package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/umbra-iot/umbra/internal/auth"
)

// registerJobDocuments adds the AWS IoT Jobs routes of job documents.
func (a *RolloutAPI) registerJobDocuments(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/jobs/{id}/executions", a.Guard.Require(auth.RoleViewer, a.fwd(a.jobExecutions)))
}

func (a *RolloutAPI) jobExecutions(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	execs, err := a.Engine.JobExecutions(id)
	if err != nil {
		return fmt.Errorf("job %q: %w", id, err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"executions": execs})
	return nil
}

// forceParam reads the optional force=true|false query parameter.
func forceParam(r *http.Request) (bool, error) {
	raw := r.URL.Query().Get("force")
	if raw == "" {
		return false, nil
	}
	v, err := strconv.ParseBool(raw)
	if err != nil {
		return false, Errorf(400, "force", "force %q: want true or false", raw)
	}
	return v, nil
}
