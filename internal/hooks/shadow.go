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
//
// With Pipeline set, a connection's QoS 1 requests are worked on several
// at once (shadow_pipeline.go); otherwise each is answered before the
// connection's next packet is read.
type ShadowRouter struct {
	mqtt.HookBase
	svc       shadow.Handler
	ctx       context.Context
	principal func(*mqtt.Client) string
	pipe      *pipelines // nil: one request at a time per connection
}

// NewShadowRouter returns the shadow routing hook. ctx bounds the service calls
// (cancel it on shutdown); principal names a client in shadow history.
func NewShadowRouter(ctx context.Context, svc shadow.Handler, principal func(*mqtt.Client) string) *ShadowRouter {
	return &ShadowRouter{svc: svc, ctx: ctx, principal: principal}
}

// ID implements mqtt.Hook.
func (h *ShadowRouter) ID() string { return "umbra-shadows" }

// Provides implements mqtt.Hook.
func (h *ShadowRouter) Provides(b byte) bool {
	return b == mqtt.OnPublish || (h.pipe != nil && b == mqtt.OnDisconnect)
}

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
	req := shadow.Request{Ref: t.Ref, Op: t.Op, Payload: pk.Payload, Origin: shadow.OriginMQTT, Principal: h.principal(cl)}
	if h.pipe != nil {
		// A QoS 1 request is worked on in the background when the
		// connection has more to read already, or requests under way (its
		// PUBACK must follow theirs). A device with one request at a time
		// is answered here, as without pipelining, at no extra cost.
		if pk.FixedHeader.Qos == 1 && (cl.Buffered() > 0 || h.pipe.busy(cl)) {
			h.pipe.start(cl, pk, req, h.handle)
			return pk, mqtt.ErrAckLater
		}
		// QoS 0 and 2 are answered here, after this connection's requests
		// for the same shadow that came before.
		h.pipe.waitFor(cl, req.Ref)
	}
	if !h.handle(req) {
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}

// handle runs one request; it reports whether it was accepted.
func (h *ShadowRouter) handle(req shadow.Request) bool {
	return h.svc.Handle(h.ctx, req).Err == nil
}

// OnDisconnect implements mqtt.Hook: a pipelined connection's state goes
// (its requests still under way finish; their PUBACKs are not sent).
func (h *ShadowRouter) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.pipe.forget(cl) }

// Pipeline lets each connection have up to depth QoS 1 requests under way
// at once, acknowledged through server (which must be the one the hook is
// added to). Call it before the server starts.
func (h *ShadowRouter) Pipeline(server *mqtt.Server, depth int) {
	h.pipe = newPipelines(server, depth)
}

// Wait returns once every pipelined request has finished (shutdown: after
// the connections closed, before the store does).
func (h *ShadowRouter) Wait() {
	if h != nil && h.pipe != nil {
		h.pipe.wg.Wait()
	}
}
