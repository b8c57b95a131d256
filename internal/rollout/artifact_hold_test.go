package rollout_test

import (
	"strings"
	"testing"

	"github.com/umbra-iot/umbra/internal/rollout"
)

// holdingArtifacts is an artifact store that records, at the moment each
// hold is released, what ArtifactRefs names for its one artifact.
type holdingArtifacts struct {
	eng       func() *rollout.Engine
	holds     int
	atRelease [][]string
}

func (a *holdingArtifacts) Resolve(string) (string, map[string]any, error) {
	return "a1", map[string]any{"target_version": "2.0.0", "ota_sha256": "00", "ota_size": 1}, nil
}

func (a *holdingArtifacts) URL(id, thing string) string {
	return "http://umbra.test/firmware/" + id + "?thing=" + thing
}

func (a *holdingArtifacts) HoldReferences() func() {
	a.holds++
	return func() { a.atRelease = append(a.atRelease, a.eng().ArtifactRefs("a1")) }
}

// A rollout or job naming an artifact is visible to the artifact's
// reference check before the hold that keeps deletes out is released: a
// delete cannot pass its check between the spec's resolution and the
// record, leaving devices a URL for a deleted image.
func TestArtifactHeldUntilTheReferenceIsRecorded(t *testing.T) {
	w := newWorld(t)
	art := &holdingArtifacts{eng: func() *rollout.Engine { return w.eng }}
	w.artifacts = art
	w.restart()
	w.fleet(3, nil)

	if _, err := w.eng.Create(ctx, rollout.Spec{Name: "fw", Target: "*", Artifact: "esp32@2.0.0",
		Waves: []rollout.WaveSpec{{Name: "all", Percent: 100}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.eng.CreateJob(ctx, rollout.JobSpec{Name: "fw job", Target: "*", Artifact: "esp32@2.0.0", RatePerSecond: 1}); err != nil {
		t.Fatal(err)
	}
	if art.holds != 2 || len(art.atRelease) != 2 {
		t.Fatalf("%d holds, %d released; want the rollout and the job each held", art.holds, len(art.atRelease))
	}
	if refs := strings.Join(art.atRelease[0], "; "); !strings.Contains(refs, "rollout ") {
		t.Fatalf("when the rollout's hold was released the artifact's references were %q", refs)
	}
	if refs := strings.Join(art.atRelease[1], "; "); !strings.Contains(refs, "job ") {
		t.Fatalf("when the job's hold was released the artifact's references were %q", refs)
	}
	// A spec without an artifact takes no hold.
	if _, err := w.eng.Create(ctx, rollout.Spec{Name: "cfg", Target: "*", Patch: []byte(`{"interval":5}`),
		Success: "shadow.reported.interval:5", Waves: []rollout.WaveSpec{{Name: "all", Percent: 100}}}); err != nil {
		t.Fatal(err)
	}
	if art.holds != 2 {
		t.Fatalf("a spec without an artifact took a hold (%d)", art.holds)
	}
}
