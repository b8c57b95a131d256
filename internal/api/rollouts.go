package api

import (
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
	// Forward, when set, sees each request after its authentication and
	// may answer it itself (true): cluster mode sends the request to the
	// node that runs the engine. Nil serves every request here.
	Forward func(w http.ResponseWriter, r *http.Request) bool
}

// fwd lets Forward answer a request before h does.
func (a *RolloutAPI) fwd(h HandlerFunc) HandlerFunc {
	if a.Forward == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) error {
		if a.Forward(w, r) {
			return nil
		}
		return h(w, r)
	}
}

// Register adds the routes to mux.
func (a *RolloutAPI) Register(mux *http.ServeMux) {
	g := a.Guard
	mux.HandleFunc("POST /api/rollouts", g.Require(auth.RoleOperator, a.fwd(a.create)))
	mux.HandleFunc("POST /api/rollouts/preview", g.Require(auth.RoleViewer, a.fwd(a.previewSpec)))
	mux.HandleFunc("GET /api/rollouts", g.Require(auth.RoleViewer, a.fwd(a.list)))
	mux.HandleFunc("GET /api/rollouts/{id}", g.Require(auth.RoleViewer, a.fwd(a.get)))
	mux.HandleFunc("GET /api/rollouts/{id}/preview", g.Require(auth.RoleViewer, a.fwd(a.preview)))
	mux.HandleFunc("GET /api/rollouts/{id}/devices", g.Require(auth.RoleViewer, a.fwd(a.devices)))
	for _, act := range []string{"start", "pause", "resume", "cancel", "rollback", "approve"} {
		mux.HandleFunc("POST /api/rollouts/{id}/"+act, g.Require(auth.RoleOperator, a.fwd(a.act(act))))
	}
	mux.HandleFunc("POST /api/jobs", g.Require(auth.RoleOperator, a.fwd(a.createJob)))
	mux.HandleFunc("GET /api/jobs", g.Require(auth.RoleViewer, a.fwd(a.listJobs)))
	mux.HandleFunc("GET /api/jobs/{id}", g.Require(auth.RoleViewer, a.fwd(a.getJob)))
	mux.HandleFunc("POST /api/jobs/{id}/cancel", g.Require(auth.RoleOperator, a.fwd(a.cancelJob)))
	a.registerJobDocuments(mux)
}

func (a *RolloutAPI) create(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		rollout.Spec
		Start bool `json:"start"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	v, err := a.Engine.Create(r.Context(), body.Spec)
	if err != nil {
		return err
	}
	if body.Start {
		if v, err = a.Engine.Start(r.Context(), v.ID); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (a *RolloutAPI) previewSpec(w http.ResponseWriter, r *http.Request) error {
	var s rollout.Spec
	if err := decode(w, r, &s); err != nil {
		return err
	}
	pv, err := a.Engine.Preview(s)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pv)
	return nil
}

func (a *RolloutAPI) preview(w http.ResponseWriter, r *http.Request) error {
	waves, err := a.Engine.PreviewID(r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("rollout %q: %w", r.PathValue("id"), err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"waves": waves})
	return nil
}

func (a *RolloutAPI) list(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"rollouts": a.Engine.List()})
	return nil
}

func (a *RolloutAPI) get(w http.ResponseWriter, r *http.Request) error {
	v, err := a.Engine.Get(r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("rollout %q: %w", r.PathValue("id"), err)
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *RolloutAPI) devices(w http.ResponseWriter, r *http.Request) error {
	wave := -1
	if raw := r.URL.Query().Get("wave"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			return Errorf(400, "wave", "wave %q: want a wave index from 0", raw)
		}
		wave = n
	}
	devs, err := a.Engine.Devices(r.PathValue("id"), wave, rollout.DeviceState(r.URL.Query().Get("state")))
	if err != nil {
		return fmt.Errorf("rollout %q: %w", r.PathValue("id"), err)
	}
	if devs == nil {
		devs = []rollout.Device{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": devs})
	return nil
}

func (a *RolloutAPI) act(action string) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
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
					return Errorf(400, "wave", "wave %q: want a wave index from 0", raw)
				}
			}
			v, err = a.Engine.Approve(r.Context(), id, wave)
		}
		if err != nil {
			return fmt.Errorf("rollout %q: %w", id, err)
		}
		writeJSON(w, http.StatusOK, v)
		return nil
	}
}

func (a *RolloutAPI) createJob(w http.ResponseWriter, r *http.Request) error {
	var s rollout.JobSpec
	if err := decode(w, r, &s); err != nil {
		return err
	}
	v, err := a.Engine.CreateJob(r.Context(), s)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (a *RolloutAPI) listJobs(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"jobs": a.Engine.Jobs()})
	return nil
}

func (a *RolloutAPI) getJob(w http.ResponseWriter, r *http.Request) error {
	v, err := a.Engine.Job(r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("job %q: %w", r.PathValue("id"), err)
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *RolloutAPI) cancelJob(w http.ResponseWriter, r *http.Request) error {
	force, err := forceParam(r)
	if err != nil {
		return err
	}
	v, err := a.Engine.AbortJob(r.Context(), r.PathValue("id"), force)
	if err != nil {
		return fmt.Errorf("job %q: %w", r.PathValue("id"), err)
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
