package hooks

import (
	"context"
	"strings"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/internal/awsjobs"
)

// JobsHandler answers AWS IoT Jobs device requests (awsjobs.Service does).
type JobsHandler interface {
	HandleMQTT(ctx context.Context, topic string, payload []byte) (handled, accepted bool)
}

// Jobs routes publishes on the AWS IoT Jobs request topics
// ($aws/things/{thing}/jobs/get, start-next, {jobId}/get, {jobId}/update,
// and any other topic in that namespace, answered with InvalidTopic) to the
// jobs service, which commits any change and answers on the /accepted or
// /rejected topic before this hook returns. Like shadow requests, an
// accepted request is forwarded to its own subscribers and a rejected one
// is not (CodeSuccessIgnore: the device still gets its PUBACK); a request
// is never retained. Reply and notification topics pass through untouched.
type Jobs struct {
	mqtt.HookBase
	svc JobsHandler
	ctx context.Context
}

// NewJobs returns the jobs routing hook; ctx bounds the service calls.
func NewJobs(ctx context.Context, svc JobsHandler) *Jobs { return &Jobs{svc: svc, ctx: ctx} }

// ID implements mqtt.Hook.
func (h *Jobs) ID() string { return "umbra-jobs" }

// Provides implements mqtt.Hook.
func (h *Jobs) Provides(b byte) bool { return b == mqtt.OnPublish }

// OnPublish implements mqtt.Hook.
func (h *Jobs) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || !strings.HasPrefix(pk.TopicName, awsjobs.TopicPrefix) || !strings.Contains(pk.TopicName, "/jobs/") {
		return pk, nil
	}
	handled, accepted := h.svc.HandleMQTT(h.ctx, pk.TopicName, pk.Payload)
	if !handled {
		return pk, nil
	}
	pk.FixedHeader.Retain = false
	if !accepted {
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}
