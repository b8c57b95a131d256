package broker

import (
	"golang.org/x/time/rate"

	"github.com/umbra-iot/umbra/internal/awsjobs"
)

// openJobs opens the AWS IoT Jobs service (job executions and the device
// MQTT API). Its requests share the shadow request limits per thing; its
// step timers run on the rollout clock.
func (b *Broker) openJobs() error {
	cfg := awsjobs.Config{
		Store: b.registryStore(), Publisher: mqttPublisher{b.mqtt}, Clock: b.opts.RolloutClock,
		Logger: b.log.With("component", "jobs"),
		OnChange: func(e awsjobs.Execution) {
			if b.rollouts != nil {
				b.rollouts.ExecutionChanged(e.Thing)
			}
			if b.events.Subscribers() > 0 {
				// The live stream's "job" events: a job execution changed.
				b.events.PublishJSON("job", e.Thing, map[string]any{"execution": e})
			}
		},
	}
	// A job document's artifact placeholders: each device reads its own
	// download URL, minted when it reads the document.
	cfg.Artifact = func(jobID, thing string) (awsjobs.ArtifactValues, bool) {
		if b.rollouts == nil {
			return awsjobs.ArtifactValues{}, false
		}
		return b.rollouts.ArtifactValues(jobID, thing)
	}
	if b.opts.Limits.ShadowRate > 0 {
		cfg.Rate, cfg.Burst = rate.Limit(b.opts.Limits.ShadowRate), b.opts.Limits.ShadowBurst
		if cfg.Burst == 0 {
			cfg.Burst = max(int(b.opts.Limits.ShadowRate), 1)
		}
	}
	var err error
	b.jobs, err = awsjobs.Open(cfg)
	return err
}

// Jobs is the AWS IoT Jobs service.
func (b *Broker) Jobs() *awsjobs.Service { return b.jobs }
