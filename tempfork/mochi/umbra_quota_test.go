// UMBRA PATCH: tests for the delivery and subscription quota hooks
// (umbra_quota.go, UMBRA-PATCHES.md).

package mqtt

import (
	"io"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// quotaHook refuses deliveries and subscriptions once allow reaches zero.
type quotaHook struct {
	HookBase
	allow    atomic.Int32
	qosSeen  atomic.Int32
	refusals atomic.Int32
}

func (h *quotaHook) ID() string { return "quota-test" }

func (h *quotaHook) Provides(b byte) bool { return b == OnQosPublish }

func (h *quotaHook) OnQosPublish(*Client, packets.Packet, int64, int) { h.qosSeen.Add(1) }

func (h *quotaHook) take() bool {
	if h.allow.Add(-1) >= 0 {
		return true
	}
	h.refusals.Add(1)
	return false
}

func (h *quotaHook) AllowDelivery(*Client, packets.Packet) bool { return h.take() }

func (h *quotaHook) AllowSubscribe(*Client, packets.Subscription) bool { return h.take() }

func TestUmbraDeliveryQuotaRefusesBeforeInflight(t *testing.T) {
	s := newServer()
	h := new(quotaHook)
	h.allow.Store(1)
	require.NoError(t, s.AddHook(h, nil))
	cl, r, _ := newTestClient()
	go func() { _, _ = io.Copy(io.Discard, r) }()
	defer cl.Stop(errClientStop)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", Payload: []byte("x")}

	_, err := s.publishToClient(cl, packets.Subscription{Filter: "a/b", Qos: 1}, pk)
	require.NoError(t, err)
	require.Equal(t, 1, cl.State.Inflight.Len())

	_, err = s.publishToClient(cl, packets.Subscription{Filter: "a/b", Qos: 1}, pk)
	require.ErrorIs(t, err, packets.ErrQuotaExceeded)
	require.Equal(t, 1, cl.State.Inflight.Len(), "a refused message must not enter inflight")
	require.Equal(t, int32(1), h.qosSeen.Load(), "no OnQosPublish (so no persistence) for a refused message")
	require.Equal(t, int64(1), atomic.LoadInt64(&s.Info.InflightDropped))

	// QoS 0 is not held, so it is not asked about.
	pk.FixedHeader.Qos = 0
	_, err = s.publishToClient(cl, packets.Subscription{Filter: "a/b"}, pk)
	require.NoError(t, err)
	require.Equal(t, int32(1), h.refusals.Load())
}

func TestUmbraSubscribeQuotaRefusesWith0x97(t *testing.T) {
	for _, v := range []byte{5, 4} {
		s := newServer()
		h := new(quotaHook)
		h.allow.Store(1)
		require.NoError(t, s.AddHook(h, nil))
		cl, r, _ := newTestClient()
		go func() { _, _ = io.Copy(io.Discard, r) }() // the SUBACK
		cl.Properties.ProtocolVersion = v
		var got []byte
		require.NoError(t, s.AddHook(&subackSpy{codes: &got}, nil))
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 7,
			Filters: packets.Subscriptions{{Filter: "a/1", Qos: 1}, {Filter: "a/2", Qos: 1}}}
		_ = s.processSubscribe(cl, pk)
		want := []byte{1, packets.ErrQuotaExceeded.Code}
		if v == 4 {
			want[1] = packets.ErrUnspecifiedError.Code
		}
		require.Equal(t, want, got, "protocol %d", v)
		require.Equal(t, 1, cl.State.Subscriptions.Len())
		cl.Stop(errClientStop)
	}
}

// subackSpy records the reason codes OnSubscribed reports.
type subackSpy struct {
	HookBase
	codes *[]byte
}

func (h *subackSpy) ID() string { return "suback-spy" }

func (h *subackSpy) Provides(b byte) bool { return b == OnSubscribed }

func (h *subackSpy) OnSubscribed(_ *Client, _ packets.Packet, codes []byte) {
	*h.codes = append([]byte(nil), codes...)
}
