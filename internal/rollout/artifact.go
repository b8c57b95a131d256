package rollout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/tidwall/gjson"
)

// Artifacts resolves the firmware artifacts rollouts and jobs may
// reference instead of a raw URL (the artifact service, through the
// broker).
type Artifacts interface {
	// Resolve finds an artifact by id, id prefix or type@version and
	// returns its id and the desired fields every device gets:
	// target_version, ota_sha256, ota_size and, when signed, ota_signature.
	Resolve(ref string) (id string, fields map[string]any, err error)
	// URL is thing's download URL for artifact id, with its own
	// short-lived token.
	URL(id, thing string) string
}

// withArtifact resolves spec's artifact reference: the canonical id
// replaces the reference and the artifact's fields join the patch (a patch
// key that contradicts the artifact is refused).
// errArtifactWithDocument refuses an artifact reference together with a job
// document: the artifact's per-device URL is written into desired state,
// which a job-document delivery does not use. Put the image's URL (umbra
// artifacts url) in the job document instead.
const errArtifactWithDocument = "an artifact is delivered through desired state; with a job document, put the image's download URL (umbra artifacts url) in the document instead"

func (e *Engine) withArtifact(ref string, patch json.RawMessage) (string, json.RawMessage, error) {
	if ref == "" {
		return ref, patch, nil
	}
	if e.cfg.Artifacts == nil {
		return "", nil, &FieldError{"artifact", "this server has no artifact store"}
	}
	id, fields, err := e.cfg.Artifacts.Resolve(ref)
	if err != nil {
		return "", nil, &FieldError{"artifact", err.Error()}
	}
	merged := map[string]json.RawMessage{}
	if len(patch) > 0 && string(patch) != "null" {
		if !gjson.ValidBytes(patch) || !gjson.ParseBytes(patch).IsObject() {
			return "", nil, &FieldError{"patch", "the patch must be a JSON object of desired values"}
		}
		if err := json.Unmarshal(patch, &merged); err != nil {
			return "", nil, &FieldError{"patch", err.Error()}
		}
	}
	if _, ok := merged["ota_url"]; ok {
		return "", nil, &FieldError{"patch", "ota_url is set per device from the artifact; remove it from the patch"}
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, _ := json.Marshal(fields[k])
		if old, ok := merged[k]; ok && !jsonEqual(old, v) {
			return "", nil, &FieldError{"patch", fmt.Sprintf("%s is %s in the patch but %s in artifact %s", k, old, v, id)}
		}
		merged[k] = v
	}
	out, _ := json.Marshal(merged)
	return id, out, nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// devicePatch is the desired patch for one device: the spec's patch plus,
// when it references an artifact, the device's own download URL.
func (e *Engine) devicePatch(patch json.RawMessage, artifactID, thing string) json.RawMessage {
	if artifactID == "" || e.cfg.Artifacts == nil {
		return patch
	}
	u, _ := json.Marshal(e.cfg.Artifacts.URL(artifactID, thing))
	p := make([]byte, 0, len(patch)+len(u)+12)
	p = append(p, `{"ota_url":`...)
	p = append(p, u...)
	if body := bytes.TrimSpace(patch); len(gjson.ParseBytes(body).Map()) > 0 {
		p = append(p, ',')
		return append(p, body[1:]...) // the rest of the object after its '{'
	}
	return append(p, '}')
}

// ArtifactRefs names the rollouts (not yet completed, cancelled or rolled
// back: a halted one may resume) and running jobs that reference artifact
// id: what artifact deletion must wait for.
func (e *Engine) ArtifactRefs(id string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, r := range e.rollouts {
		if r.Spec.Artifact != id {
			continue
		}
		switch r.State {
		case StateCompleted, StateCancelled, StateRolledBack:
			continue
		}
		out = append(out, fmt.Sprintf("rollout %s (%s, %s)", r.ID, r.Spec.Name, r.State))
	}
	for _, j := range e.jobs {
		if j.Spec.Artifact == id && j.State == JobRunning {
			out = append(out, fmt.Sprintf("job %s (%s, running)", j.ID, j.Spec.Name))
		}
	}
	sort.Strings(out)
	return out
}
