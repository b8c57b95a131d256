package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/internal/awsjobs"
	"github.com/umbra-iot/umbra/registry/query"
	"github.com/umbra-iot/umbra/shadow"
)

// validate checks a spec and compiles its queries, naming the field at fault.
func validate(s Spec) (parsedSpec, error) {
	var p parsedSpec
	var errs []error
	parse := func(field, q string) *query.Query {
		if q == "" {
			return nil
		}
		pq, err := query.Parse(q)
		if err != nil {
			errs = append(errs, &FieldError{Field: field, Msg: err.Error()})
		}
		return pq
	}
	if strings.TrimSpace(s.Name) == "" {
		errs = append(errs, &FieldError{"name", "a name is required"})
	}
	if s.Target == "" {
		errs = append(errs, &FieldError{"target", "a target query is required (\"*\" for every thing)"})
	}
	p.target = parse("target", s.Target)
	if s.Shadow != "" && !shadow.ValidShadowName(s.Shadow) {
		errs = append(errs, &FieldError{"shadow", fmt.Sprintf("invalid shadow name %q", s.Shadow)})
	}
	jobMode := len(s.JobDocument) > 0
	switch {
	case jobMode && len(s.Patch) > 0:
		errs = append(errs, &FieldError{"jobDocument", "give a patch (desired state) or a jobDocument, not both"})
	case jobMode:
		if err := awsjobs.CheckDocument(s.JobDocument); err != nil {
			errs = append(errs, &FieldError{"jobDocument", strings.TrimPrefix(err.Error(), awsjobs.ErrDocument.Error()+": ")})
		}
	case !gjson.ValidBytes(s.Patch) || !gjson.ParseBytes(s.Patch).IsObject() || len(gjson.ParseBytes(s.Patch).Map()) == 0:
		errs = append(errs, &FieldError{"patch", "the patch must be a non-empty JSON object of desired values (or give a jobDocument)"})
	}
	success := s.Success
	if jobMode {
		p.jobMode = true
		if success == "" {
			p.successText = "job execution SUCCEEDED"
		}
	} else if success == "" {
		tv := gjson.GetBytes(s.Patch, "target_version")
		if !tv.Exists() {
			errs = append(errs, &FieldError{"successCondition", "required when the patch has no target_version"})
		} else {
			success = shadowField(s.Shadow) + "reported.firmware_version:" + quote(tv.String())
		}
	}
	p.success = parse("successCondition", success)
	if success != "" {
		p.successText = success
	}
	p.failure = parse("failureCondition", s.Failure)
	p.healthErr = parse("health.errorCondition", s.Health.ErrorCondition)
	if len(s.Waves) == 0 {
		errs = append(errs, &FieldError{"waves", "at least one wave is required"})
	}
	for i, w := range s.Waves {
		field := fmt.Sprintf("waves[%d]", i)
		switch {
		case w.Query != "" && w.Percent != 0:
			errs = append(errs, &FieldError{field, "give a query or a percent, not both"})
		case w.Query == "" && (w.Percent <= 0 || w.Percent > 100):
			errs = append(errs, &FieldError{field + ".percent", "a wave needs a query or a percent in (0, 100]"})
		}
		if w.SuccessThreshold != nil && (*w.SuccessThreshold < 0 || *w.SuccessThreshold > 100) {
			errs = append(errs, &FieldError{field + ".successThreshold", "must be within 0-100"})
		}
		if w.FailureThreshold < 0 || w.FailureThreshold > 100 {
			errs = append(errs, &FieldError{field + ".failureThreshold", "must be within 0-100"})
		}
		if w.MinFinished < 0 {
			errs = append(errs, &FieldError{field + ".minFinished", "must not be negative"})
		}
		p.waves = append(p.waves, parse(field+".query", w.Query))
	}
	if len(s.RollbackPatch) > 0 && (!gjson.ValidBytes(s.RollbackPatch) || !gjson.ParseBytes(s.RollbackPatch).IsObject()) {
		errs = append(errs, &FieldError{"rollbackPatch", "must be a JSON object of desired values"})
	}
	if s.Plan != nil && s.Plan.Seed == "" {
		errs = append(errs, &FieldError{"plan.seed", "a plan token needs the seed the preview returned"})
	}
	switch s.OnFailure {
	case "", "halt", "rollback":
	default:
		errs = append(errs, &FieldError{"onFailure", fmt.Sprintf("%q: want halt or rollback", s.OnFailure)})
	}
	r := s.Rate
	if r.MaxPerMinute < 0 || r.BasePerMinute < 0 || r.IncreaseEvery < 0 {
		errs = append(errs, &FieldError{"rate", "rates must not be negative"})
	}
	if r.BasePerMinute > 0 && (r.IncrementFactor < 1 || r.IncrementFactor > 5 || r.IncreaseEvery == 0) {
		errs = append(errs, &FieldError{"rate", "exponential rate needs incrementFactor in [1, 5] and increaseEvery > 0"})
	}
	if r.Criteria != "" && r.Criteria != "notified" && r.Criteria != "succeeded" {
		errs = append(errs, &FieldError{"rate.criteria", "want notified or succeeded"})
	}
	return p, errors.Join(errs...)
}

func shadowField(name string) string {
	if name == "" {
		return "shadow."
	}
	return "shadow.name." + name + "."
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// FieldError names the spec field at fault.
type FieldError struct{ Field, Msg string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// rank orders targets deterministically for one rollout: a stable hash of
// the rollout id and the thing name, so waves are a fair sample (not the
// alphabetically first devices) and the same every time they are planned.
func rank(id, thing string) uint64 {
	h := sha256.Sum256([]byte(id + "\x00" + thing))
	return binary.BigEndian.Uint64(h[:8])
}

// plan splits targets into waves: each wave takes, from the targets not yet
// planned, those matching its query, or its percentage (rounded up) in rank
// order. Targets left after the last wave are not part of the rollout.
func plan(id string, targets []string, waves []WaveSpec, queries []*query.Query, matches func(q *query.Query, thing string) bool) [][]string {
	remaining := slices.Clone(targets)
	slices.SortFunc(remaining, func(a, b string) int {
		ra, rb := rank(id, a), rank(id, b)
		switch {
		case ra < rb:
			return -1
		case ra > rb:
			return 1
		}
		return strings.Compare(a, b)
	})
	out := make([][]string, len(waves))
	for i, w := range waves {
		var take, rest []string
		if queries[i] != nil {
			for _, th := range remaining {
				if matches(queries[i], th) {
					take = append(take, th)
				} else {
					rest = append(rest, th)
				}
			}
		} else {
			n := int(math.Ceil(float64(len(remaining)) * w.Percent / 100))
			take, rest = remaining[:n], remaining[n:]
		}
		out[i] = take
		remaining = rest
	}
	return out
}
