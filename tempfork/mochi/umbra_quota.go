package mqtt

import "github.com/umbra-iot/umbra/tempfork/mochi/packets"

// UMBRA PATCH (delivery quota): a hook that implements DeliveryQuota can
// refuse to hold one more QoS 1/2 message for a client, for example because
// the bytes the client's session already holds (sent and unacknowledged, or
// queued while offline) reach a quota. Upstream's only limit is the count
// MaximumInflight. A refused message is dropped for that client exactly as
// one over MaximumInflight is (InflightDropped, ErrQuotaExceeded).
type DeliveryQuota interface {
	// AllowDelivery is called with the outbound packet, its packet id
	// assigned, before it is added to the client's inflight messages.
	AllowDelivery(cl *Client, pk packets.Packet) bool
}

// umbraAllowDelivery asks every hook that implements DeliveryQuota.
func (s *Server) umbraAllowDelivery(cl *Client, pk packets.Packet) bool {
	for _, h := range s.hooks.GetAll() {
		if q, ok := h.(DeliveryQuota); ok && !q.AllowDelivery(cl, pk) {
			return false
		}
	}
	return true
}

// UMBRA PATCH (subscription quota): a hook that implements SubscribeQuota
// can refuse a subscription (SUBACK 0x97 Quota exceeded; 0x80 for MQTT
// 3.1.1), for example because the client already has as many as its quota
// allows. It is asked after the ACL check, for each filter of a SUBSCRIBE.
type SubscribeQuota interface {
	AllowSubscribe(cl *Client, sub packets.Subscription) bool
}

// umbraAllowSubscribe asks every hook that implements SubscribeQuota.
func (s *Server) umbraAllowSubscribe(cl *Client, sub packets.Subscription) bool {
	for _, h := range s.hooks.GetAll() {
		if q, ok := h.(SubscribeQuota); ok && !q.AllowSubscribe(cl, sub) {
			return false
		}
	}
	return true
}
