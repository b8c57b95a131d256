package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/rollout"
)

// RolloutAPI serves bulk configuration jobs (/api/jobs) and phased
// rollouts (/api/rollouts).
type RolloutAPI struct {
	Engine *rollout.Engine
	Guard  *Guard
}

// Register adds the routes to mux.
func (a *RolloutAPI) Register(mux *http.ServeMux) {
	g := a.Guard
	mux.HandleFunc("POST /api/rollouts", g.Require(auth.RoleOperator, a.create))
	mux.HandleFunc("POST /api/rollouts/preview", g.Require(auth.RoleViewer, a.previewSpec))
	mux.HandleFunc("GET /api/rollouts", g.Require(auth.RoleViewer, a.list))
	mux.HandleFunc("GET /api/rollouts/{id}", g.Require(auth.RoleViewer, a.get))
	mux.HandleFunc("GET /api/rollouts/{id}/preview", g.Require(auth.RoleViewer, a.preview))
	mux.HandleFunc("GET /api/rollouts/{id}/devices", g.Require(auth.RoleViewer, a.devices))
	for _, act := range []string{"start", "pause", "resume", "cancel", "rollback", "approve"} {
		mux.HandleFunc("POST /api/rollouts/{id}/"+act, g.Require(auth.RoleOperator, a.act(act)))
	}
	mux.HandleFunc("POST /api/jobs", g.Require(auth.RoleOperator, a.createJob))
	mux.HandleFunc("GET /api/jobs", g.Require(auth.RoleViewer, a.listJobs))
	mux.HandleFunc("GET /api/jobs/{id}", g.Require(auth.RoleViewer, a.getJob))
	mux.HandleFunc("POST /api/jobs/{id}/cancel", g.Require(auth.RoleOperator, a.cancelJob))
	a.registerJobDocuments(mux)
}

func rolloutErr(w http.ResponseWriter, err error) {
	var fe *rollout.FieldError
	switch {
	case errors.As(err, &fe):
		fail(w, 400, fe.Field, "%s", fe.Msg)
	case errors.Is(err, rollout.ErrNotFound):
		fail(w, 404, "", "%s", err.Error())
	case errors.Is(err, rollout.ErrPlanChanged):
		fail(w, 409, "plan", "%s", err.Error())
	case errors.Is(err, rollout.ErrState):
		fail(w, 409, "", "%s", err.Error())
	default:
		// errors.Join of several field errors: report the first field.
		if u, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range u.Unwrap() {
				if errors.As(e, &fe) {
					fail(w, 400, fe.Field, "%s", err.Error())
					return
				}
			}
		}
		fail(w, 500, "", "internal error")
	}
}

func (a *RolloutAPI) create(w http.ResponseWriter, r *http.Request) {
	var body struct {
		rollout.Spec
		Start bool `json:"start"`
	}
	if !decode(w, r, &body) {
		return
	}
	v, err := a.Engine.Create(r.Context(), body.Spec)
	if err != nil {
		rolloutErr(w, err)
		return
	}
	if body.Start {
		if v, err = a.Engine.Start(r.Context(), v.ID); err != nil {
			rolloutErr(w, err)
			return
		}
	}
	writeJSON(w, http.StatusCreated, v)
}

func (a *RolloutAPI) previewSpec(w http.ResponseWriter, r *http.Request) {
	var s rollout.Spec
	if !decode(w, r, &s) {
		return
	}
	pv, err := a.Engine.Preview(s)
	if err != nil {
		rolloutErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, pv)
}

func (a *RolloutAPI) preview(w http.ResponseWriter, r *http.Request) {
	waves, err := a.Engine.PreviewID(r.PathValue("id"))
	if err != nil {
		rolloutErr(w, fmt.Errorf("rollout %q: %w", r.PathValue("id"), err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"waves": waves})
}

func (a *RolloutAPI) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"rollouts": a.Engine.List()})
}

func (a *RolloutAPI) get(w http.ResponseWriter, r *http.Request) {
	v, err := a.Engine.Get(r.PathValue("id"))
	if err != nil {
		rolloutErr(w, fmt.Errorf("rollout %q: %w", r.PathValue("id"), err))
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *RolloutAPI) devices(w http.ResponseWriter, r *http.Request) {
	wave := -1
	if raw := r.URL.Query().Get("wave"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			fail(w, 400, "wave", "wave %q: want a wave index from 0", raw)
			return
		}
		wave = n
	}
	devs, err := a.Engine.Devices(r.PathValue("id"), wave, rollout.DeviceState(r.URL.Query().Get("state")))
	if err != nil {
		rolloutErr(w, fmt.Errorf("rollout %q: %w", r.PathValue("id"), err))
		return
	}
	if devs == nil {
		devs = []rollout.Device{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": devs})
}

func (a *RolloutAPI) act(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var v rollout.View
		var err error
		switch action {
		case "start":
			v, err = a.Engine.Start(r.Context(), id)
		case "pause":
			v, err = a.Engine.Pause(r.Context(), id)
		case "resume":
			v, err = a.Engine.Resume(r.Context(), id)
		case "cancel":
			v, err = a.Engine.Cancel(r.Context(), id)
		case "rollback":
			v, err = a.Engine.Rollback(r.Context(), id)
		case "approve":
			wave := -1
			if raw := r.URL.Query().Get("wave"); raw != "" {
				if wave, err = strconv.Atoi(raw); err != nil || wave < 0 {
					fail(w, 400, "wave", "wave %q: want a wave index from 0", raw)
					return
				}
			}
			v, err = a.Engine.Approve(r.Context(), id, wave)
		}
		if err != nil {
			rolloutErr(w, fmt.Errorf("rollout %q: %w", id, err))
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (a *RolloutAPI) createJob(w http.ResponseWriter, r *http.Request) {
	var s rollout.JobSpec
	if !decode(w, r, &s) {
		return
	}
	v, err := a.Engine.CreateJob(r.Context(), s)
	if err != nil {
		rolloutErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func (a *RolloutAPI) listJobs(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"jobs": a.Engine.Jobs()})
}

func (a *RolloutAPI) getJob(w http.ResponseWriter, r *http.Request) {
	v, err := a.Engine.Job(r.PathValue("id"))
	if err != nil {
		rolloutErr(w, fmt.Errorf("job %q: %w", r.PathValue("id"), err))
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *RolloutAPI) cancelJob(w http.ResponseWriter, r *http.Request) {
	force, ok := forceParam(w, r)
	if !ok {
		return
	}
	v, err := a.Engine.AbortJob(r.Context(), r.PathValue("id"), force)
	if err != nil {
		rolloutErr(w, fmt.Errorf("job %q: %w", r.PathValue("id"), err))
		return
	}
	writeJSON(w, http.StatusOK, v)
}
