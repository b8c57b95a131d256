package hooks

import (
	"context"
	"testing"
	"time"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// TestProtocolPacketProcessedNoAlloc pins that the per-packet hook costs no
// allocation for the common case (a packet processed without error), and
// still counts a denied publish as an offence.
func TestProtocolPacketProcessedNoAlloc(t *testing.T) {
	h := NewProtocol(context.Background(), 0, time.Second)
	cl := &mqtt.Client{ID: "dev-1"}
	pk := packets.Packet{TopicName: "a/b", Payload: []byte("x")}
	if n := testing.AllocsPerRun(100, func() { h.OnPacketProcessed(cl, pk, nil) }); n != 0 {
		t.Fatalf("OnPacketProcessed(nil error): %v allocs per packet, want 0", n)
	}
	if d := h.penalty("dev-1"); d != 0 {
		t.Fatalf("penalty after clean packets = %v, want 0", d)
	}
	h.OnPacketProcessed(cl, pk, packets.ErrPacketTooLarge)
	if d := h.penalty("dev-1"); d != 0 {
		t.Fatalf("penalty after another error = %v, want 0", d)
	}
	h.OnPacketProcessed(cl, pk, mqtt.ErrPublishNotAuthorized)
	if d := h.penalty("dev-1"); d != time.Second {
		t.Fatalf("penalty after a denied publish = %v, want 1s", d)
	}
}

// BenchmarkProtocolPacketProcessed is the hook's cost per processed packet.
func BenchmarkProtocolPacketProcessed(b *testing.B) {
	h := NewProtocol(context.Background(), 0, time.Second)
	cl := &mqtt.Client{ID: "dev-1"}
	pk := packets.Packet{TopicName: "a/b", Payload: []byte("x")}
	b.ReportAllocs()
	for b.Loop() {
		h.OnPacketProcessed(cl, pk, nil)
	}
}
