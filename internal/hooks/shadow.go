package hooks

import (
	"context"
	"strings"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/shadow"
)

// ShadowRouter routes publishes on shadow request topics
// ($aws/things/{thing}/shadow[/name/{name}]/{get,update,delete}) to the
// shadow service, which answers on the reply topics before this hook
// returns.
//
// An accepted request is then forwarded to its own subscribers, as AWS IoT
// does; a rejected one is not (CodeSuccessIgnore: the publisher still gets
// its PUBACK, so a QoS 1 device does not retransmit forever). A request is
// never retained. Will messages never reach this hook (Mochi publishes them
// straight to subscribers), so a last will on a shadow topic is not taken
// as an update, matching AWS.
type ShadowRouter struct {
	mqtt.HookBase
	svc       shadow.Handler
	ctx       context.Context
	principal func(*mqtt.Client) string
}

// NewShadowRouter returns the shadow routing hook. ctx bounds the service calls
// (cancel it on shutdown); principal names a client in shadow history.
func NewShadowRouter(ctx context.Context, svc shadow.Handler, principal func(*mqtt.Client) string) *ShadowRouter {
	return &ShadowRouter{svc: svc, ctx: ctx, principal: principal}
}

// ID implements mqtt.Hook.
func (h *ShadowRouter) ID() string { return "umbra-shadows" }

// Provides implements mqtt.Hook.
func (h *ShadowRouter) Provides(b byte) bool { return b == mqtt.OnPublish }

// OnPublish implements mqtt.Hook.
func (h *ShadowRouter) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	// The service's own replies come back through here as inline publishes.
	if cl.Net.Inline || !strings.HasPrefix(pk.TopicName, shadow.TopicPrefix) {
		return pk, nil
	}
	t, ok := shadow.ParseTopic(pk.TopicName)
	if !ok || t.Suffix != shadow.SuffixNone {
		return pk, nil
	}
	pk.FixedHeader.Retain = false
	resp := h.svc.Handle(h.ctx, shadow.Request{
		Ref: t.Ref, Op: t.Op, Payload: pk.Payload, Origin: shadow.OriginMQTT, Principal: h.principal(cl),
	})
	if resp.Err != nil {
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}
