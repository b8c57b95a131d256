package hooks

import (
	"log/slog"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/internal/limits"
)

// Quota kinds, as counted by OnRefuse.
const (
	QuotaRetained      = "retained"       // retained messages (count or bytes) per client
	QuotaInflight      = "inflight_bytes" // bytes held for one session (in flight or queued)
	QuotaSubscriptions = "subscriptions"  // subscriptions of one session
)

// Quota keeps one client from taking unbounded memory and disk: retained
// messages per client (count and bytes) and the bytes of QoS 1/2 messages
// held for one session. Both survive a restart: retained messages are
// accounted from storage before they are restored (see limits.Retained.Load),
// a session's held messages from Mochi's own state on its next delivery.
//
// A retained publish over the quota is refused whole (neither retained nor
// delivered): an MQTT 5 client gets PUBACK or PUBREC with reason 0x97 (Quota
// exceeded); an MQTT 5 QoS 0 publish, which has no acknowledgement, gets
// DISCONNECT 0x97; an MQTT 3.1.1 client, which has no way to be told, is
// disconnected. A QoS 1/2 delivery to a session whose held bytes would go
// over its quota is dropped for that session (the publisher and other
// subscribers are not affected), as Mochi drops one over max_inflight. A
// subscription beyond MaxSubscriptions is refused in the SUBACK.
//
// The delivery and subscription quotas need Umbra's patched Mochi
// (mqtt.DeliveryQuota, mqtt.SubscribeQuota); with upstream Mochi only the
// retained quota applies.
type Quota struct {
	mqtt.HookBase
	server   *mqtt.Server
	retained *limits.Retained
	inflight *limits.Inflight
	log      *slog.Logger
	// OnRefuse, when set, is called once per refusal with its kind.
	OnRefuse func(kind string)
	// MaxSubscriptions caps one session's subscriptions (persisted with
	// it); <= 0 disables. Over it, SUBACK carries 0x97 (0x80 for 3.1.1).
	MaxSubscriptions int
}

// NewQuota returns the quota hook for server; either limit may be nil.
func NewQuota(server *mqtt.Server, retained *limits.Retained, inflight *limits.Inflight, log *slog.Logger) *Quota {
	if retained == nil {
		retained = &limits.Retained{}
	}
	if inflight == nil {
		inflight = &limits.Inflight{}
	}
	return &Quota{server: server, retained: retained, inflight: inflight, log: log}
}

// ID implements mqtt.Hook.
func (h *Quota) ID() string { return "umbra-quota" }

// Provides implements mqtt.Hook.
func (h *Quota) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnWill, mqtt.OnRetainMessage, mqtt.OnRetainedExpired,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnClientExpired:
		return true
	}
	return false
}

// MessageSize is what a message counts against a quota: its topic, payload
// and the variable-length properties a client controls.
func MessageSize(pk packets.Packet) int64 {
	n := len(pk.TopicName) + len(pk.Payload) + len(pk.Properties.ContentType) +
		len(pk.Properties.ResponseTopic) + len(pk.Properties.CorrelationData)
	for _, u := range pk.Properties.User {
		n += len(u.Key) + len(u.Val)
	}
	return int64(n)
}

func (h *Quota) refuse(kind string, cl *mqtt.Client, pk packets.Packet) {
	if h.OnRefuse != nil {
		h.OnRefuse(kind)
	}
	h.log.Debug("mqtt quota exceeded", "quota", kind, "client", cl.ID, "topic", pk.TopicName, "bytes", MessageSize(pk))
}

// OnPublish refuses a retained message that would put its publisher over
// the retained quota.
func (h *Quota) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain || cl.Net.Inline || len(pk.Payload) == 0 {
		return pk, nil
	}
	if h.retained.Allow(cl.ID, pk.TopicName, MessageSize(pk)) {
		return pk, nil
	}
	h.refuse(QuotaRetained, cl, pk)
	code := packets.ErrQuotaExceeded
	ack := func(t byte) {
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: t},
			PacketID:    pk.PacketID,
			ReasonCode:  code.Code,
			Properties:  packets.Properties{ReasonString: "retained message quota exceeded"},
		})
	}
	switch {
	case cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 1:
		ack(packets.Puback)
	case cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos == 2:
		ack(packets.Pubrec) // a PUBREC >= 0x80 ends the flow [MQTT-4.3.3]
	default:
		h.log.Warn("mqtt client disconnected: retained message quota exceeded", "client", cl.ID, "remote", cl.Net.Remote,
			"topic", pk.TopicName, "protocol", cl.Properties.ProtocolVersion, "qos", pk.FixedHeader.Qos)
		_ = h.server.DisconnectClient(cl, code)
	}
	return pk, packets.ErrRejectPacket
}

// OnWill sends a retained will that would put its client over the retained
// quota without retaining it (the will is still delivered): there is no
// one left to tell.
func (h *Quota) OnWill(cl *mqtt.Client, w mqtt.Will) (mqtt.Will, error) {
	if !w.Retain || len(w.Payload) == 0 {
		return w, nil
	}
	pk := packets.Packet{TopicName: w.TopicName, Payload: w.Payload, Properties: packets.Properties{User: w.User}}
	if h.retained.Allow(cl.ID, w.TopicName, MessageSize(pk)) {
		return w, nil
	}
	h.refuse(QuotaRetained, cl, pk)
	w.Retain = false
	return w, nil
}

// OnRetainMessage accounts a message retained (r == 1) or cleared. Mochi's
// own inline client ($SYS topics) is not accounted.
func (h *Quota) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if cl.Net.Inline {
		return
	}
	if r == 1 {
		h.retained.Set(cl.ID, pk.TopicName, MessageSize(pk))
		return
	}
	if len(pk.Payload) == 0 {
		h.retained.Delete(pk.TopicName)
	}
}

// OnRetainedExpired forgets an expired retained message.
func (h *Quota) OnRetainedExpired(topic string) { h.retained.Delete(topic) }

// AllowDelivery implements mqtt.DeliveryQuota (Umbra's Mochi patch): it
// reserves the message's bytes in the session's quota or refuses it.
func (h *Quota) AllowDelivery(cl *mqtt.Client, pk packets.Packet) bool {
	size := MessageSize(pk)
	ok, known := h.inflight.Reserve(cl.ID, pk.PacketID, size)
	if !known || (!ok && h.drifted(cl)) {
		// First delivery since a restart, a new session or a change Mochi
		// made without a hook (a rollback): count from Mochi's own state.
		held := map[uint16]int64{}
		for _, m := range cl.State.Inflight.GetAll(false) {
			held[m.PacketID] = MessageSize(m)
		}
		h.inflight.Reset(cl.ID, held)
		ok, _ = h.inflight.Reserve(cl.ID, pk.PacketID, size)
	}
	if !ok {
		h.refuse(QuotaInflight, cl, pk)
	}
	return ok
}

// drifted reports whether the record of cl's session may be stale.
func (h *Quota) drifted(cl *mqtt.Client) bool {
	_, n := h.inflight.Held(cl.ID)
	return n != cl.State.Inflight.Len()
}

// OnQosPublish records a held message (a resend, or an acknowledgement of
// the client's own QoS 2 publish, is recorded again under its packet id).
func (h *Quota) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	h.inflight.Record(cl.ID, pk.PacketID, MessageSize(pk))
}

// OnQosComplete releases a message whose delivery finished.
func (h *Quota) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	h.inflight.Release(cl.ID, pk.PacketID)
}

// OnQosDropped releases a message Mochi gave up on.
func (h *Quota) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.inflight.Release(cl.ID, pk.PacketID)
}

// OnSessionEstablished drops the record of an earlier session of the same
// id; the next delivery counts the new session's held messages afresh.
func (h *Quota) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { h.inflight.Forget(cl.ID) }

// OnDisconnect forgets a session that ends with its connection.
func (h *Quota) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if expire && cl.StopCause() != packets.ErrSessionTakenOver {
		h.inflight.Forget(cl.ID)
	}
}

// OnClientExpired forgets an expired session.
func (h *Quota) OnClientExpired(cl *mqtt.Client) { h.inflight.Forget(cl.ID) }

// AllowSubscribe implements mqtt.SubscribeQuota (Umbra's Mochi patch):
// a new filter is refused once the session has MaxSubscriptions; replacing
// an existing one is always allowed.
func (h *Quota) AllowSubscribe(cl *mqtt.Client, sub packets.Subscription) bool {
	if h.MaxSubscriptions <= 0 {
		return true
	}
	if _, ok := cl.State.Subscriptions.Get(sub.Filter); ok {
		return true
	}
	if cl.State.Subscriptions.Len() < h.MaxSubscriptions {
		return true
	}
	if h.OnRefuse != nil {
		h.OnRefuse(QuotaSubscriptions)
	}
	h.log.Debug("mqtt quota exceeded", "quota", QuotaSubscriptions, "client", cl.ID, "filter", sub.Filter)
	return false
}
