package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/internal/awsjobs"
	"github.com/umbra-iot/umbra/shadow"
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

// ReferenceHolder is an optional Artifacts interface. HoldReferences keeps
// every artifact from being deleted until release is called: Create and
// CreateJob hold it from resolving a spec's artifact until the new rollout
// or job is visible to ArtifactRefs. Otherwise a delete could pass its
// reference check in between and leave a rollout whose devices are sent a
// download URL for an image that no longer exists.
type ReferenceHolder interface {
	HoldReferences() (release func())
}

// holdArtifacts holds the artifact store's references while a spec naming
// an artifact is being recorded (see ReferenceHolder).
func (e *Engine) holdArtifacts(ref string) (release func()) {
	if h, ok := e.cfg.Artifacts.(ReferenceHolder); ok && ref != "" {
		return h.HoldReferences()
	}
	return func() {}
}

// URLLifetime is an optional Artifacts interface: how long a download URL
// that URL returns stays valid.
type URLLifetime interface {
	URLLifetime() time.Duration
}

// refreshURL writes a new ota_url into the desired state of a device that
// has not installed the artifact once half of its URL's lifetime has
// passed, so that a device offline (or slow) for longer than the lifetime
// is not refused its download (403) when it comes back within its
// deviceTimeout. A failed write is tried again at the next step.
func (e *Engine) refreshURL(ctx context.Context, r *Rollout, th string, d *Device, now time.Time) {
	if r.Spec.Artifact == "" || r.parsed.jobMode || d.NotifiedAt == 0 {
		return
	}
	l, ok := e.cfg.Artifacts.(URLLifetime)
	if !ok || l.URLLifetime() <= 0 {
		return
	}
	if now.UnixMilli()-max(d.NotifiedAt, d.URLAt) < (l.URLLifetime() / 2).Milliseconds() {
		return
	}
	u, _ := json.Marshal(e.cfg.Artifacts.URL(r.Spec.Artifact, th))
	payload := fmt.Appendf(nil, `{"state":{"desired":{"ota_url":%s}}}`, u)
	resp := e.cfg.Shadows.Handle(ctx, shadow.Request{Ref: shadow.Ref{Thing: th, Name: r.Spec.Shadow}, Op: shadow.OpUpdate,
		Payload: payload, Origin: shadow.OriginInternal, Principal: "rollout:" + r.ID})
	if resp.Err != nil {
		return
	}
	d.URLAt = now.UnixMilli()
	r.dirty[th] = true
}

// resolveArtifact resolves a spec's artifact reference for the way the
// spec delivers: as placeholders of its job document (docField names it in
// errors), or into its desired patch.
func (e *Engine) resolveArtifact(docField string, doc, patch json.RawMessage, ref string) (string, json.RawMessage, error) {
	if len(doc) > 0 {
		id, err := e.documentArtifact(docField, doc, ref)
		return id, patch, err
	}
	return e.withArtifact(ref, patch)
}

// withArtifact resolves spec's artifact reference: the canonical id
// replaces the reference and the artifact's fields join the patch (a patch
// key that contradicts the artifact is refused).
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

// documentArtifact checks a job document's artifact placeholders
// (${umbra:artifact.url}, ...; see awsjobs.RenderDocument) against the
// spec's artifact reference and returns the artifact's id ("" without
// one). field names the document in errors ("document" or "jobDocument").
// A document that is not a JSON object is left to the document check.
func (e *Engine) documentArtifact(field string, doc json.RawMessage, ref string) (string, error) {
	if awsjobs.CheckDocument(doc) != nil {
		return ref, nil
	}
	names, err := awsjobs.Placeholders(doc)
	if err != nil {
		return "", &FieldError{field, err.Error()}
	}
	if ref == "" {
		if len(names) > 0 {
			return "", &FieldError{"artifact", fmt.Sprintf("the %s uses %s%s}; give the artifact it refers to (\"artifact\": \"esp32@1.2.0\")",
				field, awsjobs.PlaceholderPrefix, names[0])}
		}
		return "", nil
	}
	if e.cfg.Artifacts == nil {
		return "", &FieldError{"artifact", "this server has no artifact store"}
	}
	id, fields, err := e.cfg.Artifacts.Resolve(ref)
	if err != nil {
		return "", &FieldError{"artifact", err.Error()}
	}
	if len(names) == 0 {
		return "", &FieldError{field, fmt.Sprintf("the %s does not refer to artifact %s: a job document is the same for every device, so put placeholders where the image belongs, e.g. {\"url\": \"%s%s}\", \"sha256\": \"%s%s}\"}; each device reads its own download URL (placeholders: %s)",
			field, ref, awsjobs.PlaceholderPrefix, awsjobs.PlaceURL, awsjobs.PlaceholderPrefix, awsjobs.PlaceSHA256, strings.Join(placeholderList(), ", "))}
	}
	if _, signed := fields["ota_signature"]; !signed && slices.Contains(names, awsjobs.PlaceSignature) {
		return "", &FieldError{field, fmt.Sprintf("artifact %s is not signed; remove %s%s}", id, awsjobs.PlaceholderPrefix, awsjobs.PlaceSignature)}
	}
	return id, nil
}

func placeholderList() []string {
	var out []string
	for _, n := range []string{awsjobs.PlaceURL, awsjobs.PlaceSHA256, awsjobs.PlaceSize, awsjobs.PlaceVersion, awsjobs.PlaceSignature} {
		out = append(out, awsjobs.PlaceholderPrefix+n+"}")
	}
	return out
}

// ArtifactValues are thing's values for the artifact placeholders of job
// jobID's document (a job document or a rollout delivered through one):
// a download URL minted now, with its own token, and the image's fields.
// It is false when the job names no artifact or the artifact is gone. It
// never takes the engine's lock (executions are queued while it is held).
func (e *Engine) ArtifactValues(jobID, thing string) (awsjobs.ArtifactValues, bool) {
	v, ok := e.docArtifacts.Load(jobID)
	if !ok || e.cfg.Artifacts == nil {
		return awsjobs.ArtifactValues{}, false
	}
	id := v.(string)
	_, f, err := e.cfg.Artifacts.Resolve(id)
	if err != nil {
		return awsjobs.ArtifactValues{}, false
	}
	out := awsjobs.ArtifactValues{URL: e.cfg.Artifacts.URL(id, thing)}
	out.SHA256, _ = f["ota_sha256"].(string)
	out.Version, _ = f["target_version"].(string)
	out.Signature, _ = f["ota_signature"].(string)
	switch n := f["ota_size"].(type) {
	case int64:
		out.Size = n
	case int:
		out.Size = int64(n)
	}
	return out, true
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
// id, and the job documents (of jobs and rollouts) that reference it with
// executions still QUEUED or IN_PROGRESS (their devices will read the
// document, with its download URL): what artifact deletion must wait for.
func (e *Engine) ArtifactRefs(id string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, r := range e.rollouts {
		if r.Spec.Artifact != id {
			continue
		}
		if r.State == StateCompleted || r.State == StateCancelled || r.State == StateRolledBack {
			// A job-delivered rollout's executions still pending (in
			// progress after a cancel) read the document, and its URL.
			if n := e.pendingExecutions(r.parsed.jobMode, r.ID); n > 0 {
				out = append(out, fmt.Sprintf("rollout %s (%s, %s, %d job executions pending)", r.ID, r.Spec.Name, r.State, n))
			}
			continue
		}
		out = append(out, fmt.Sprintf("rollout %s (%s, %s)", r.ID, r.Spec.Name, r.State))
	}
	for _, j := range e.jobs {
		if j.Spec.Artifact != id {
			continue
		}
		if j.State == JobRunning {
			out = append(out, fmt.Sprintf("job %s (%s, running)", j.ID, j.Spec.Name))
		} else if n := e.pendingExecutions(len(j.Spec.Document) > 0, j.ID); n > 0 {
			out = append(out, fmt.Sprintf("job %s (%s, %s, %d job executions pending)", j.ID, j.Spec.Name, j.State, n))
		}
	}
	sort.Strings(out)
	return out
}

// pendingExecutions counts a job document's QUEUED and IN_PROGRESS
// executions (0 when it is not delivered through one).
func (e *Engine) pendingExecutions(document bool, jobID string) int {
	if !document || e.cfg.Executions == nil {
		return 0
	}
	execs, err := e.cfg.Executions.Executions(jobID)
	if err != nil {
		return 1 // cannot tell: keep the artifact
	}
	n := 0
	for _, x := range execs {
		if !x.Status.Terminal() {
			n++
		}
	}
	return n
}
