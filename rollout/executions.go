package rollout

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/umbra-iot/umbra/awsjobs"
)

// Executions queues and reads AWS IoT Jobs executions (awsjobs.Service):
// how a job or rollout with a job document reaches its devices.
type Executions interface {
	PutJob(ctx context.Context, jobID string, doc json.RawMessage) error
	Queue(ctx context.Context, jobID, thing string) (bool, error)
	Cancel(ctx context.Context, jobID string, force bool) (int, error)
	Get(thing, jobID string) (awsjobs.Execution, bool)
	Executions(jobID string) ([]awsjobs.Execution, error)
}

// ExecutionChanged marks a thing whose job execution changed for
// re-evaluation at the next step (like ShadowChanged; never blocks).
func (e *Engine) ExecutionChanged(thing string) { e.ShadowChanged(thing) }

// detailsText renders statusDetails as "k=v, k=v" in key order.
func detailsText(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := ""
	for i, k := range keys {
		if i > 0 {
			out += ", "
		}
		out += k + "=" + m[k]
	}
	return out
}
