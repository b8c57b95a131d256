package client

import (
	"github.com/umbra-iot/umbra/internal/rollout"
	"github.com/umbra-iot/umbra/registry"
)

// The API's wire types: the server's own definitions, so a client (the CLI
// among them) never keeps a copy that drifts from what the server writes.
type (
	// Thing is a thing with its groups and connectivity.
	Thing = registry.ThingView
	// Rollout is a rollout with its waves' progress.
	Rollout = rollout.View
	// Wave is one wave's progress (also a rollout's totals).
	Wave = rollout.WaveProgress
	// Job is a bulk configuration job with its progress.
	Job = rollout.JobView
)
