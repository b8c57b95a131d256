package shadow_test

import (
	"context"
	"testing"

	"github.com/umbra-iot/umbra/shadow"
)

// quietPublisher has no subscriber for anything.
type quietPublisher struct{}

func (quietPublisher) Publish(string, []byte) error { return nil }
func (quietPublisher) HasSubscribers(string) bool   { return false }

// BenchmarkServiceReportedUpdate is a device's reported-state update through
// the service (parse, load, update, history entry, commit to memory,
// replies), nobody subscribed to /update/documents.
func BenchmarkServiceReportedUpdate(b *testing.B) {
	svc := shadow.NewService(shadow.Config{Store: &memStore{}, Publisher: quietPublisher{}})
	ctx := context.Background()
	req := shadow.Request{Ref: shadow.Ref{Thing: "esp32-0000001"}, Op: shadow.OpUpdate, Origin: shadow.OriginMQTT, Principal: "esp32-0000001",
		Payload: []byte(`{"state":{"reported":{"seq":1,"temp":21.5,"led_is_on":true,"firmware_version":"1.4.2","rssi":-61,"battery":87}}}`)}
	for range 50 { // a document with some history of its own
		svc.Handle(ctx, req)
	}
	b.ReportAllocs()
	for b.Loop() {
		if resp := svc.Handle(ctx, req); resp.Err != nil {
			b.Fatal(resp.Err)
		}
	}
}

// BenchmarkDocDeltaReportedOnly is the delta of a stored document with no
// desired state (the registry computes it for every update and, at start,
// for every shadow).
func BenchmarkDocDeltaReportedOnly(b *testing.B) {
	doc := []byte(`{"state":{"reported":{"seq":1,"temp":21.5,"led_is_on":true,"firmware_version":"1.4.2","rssi":-61,"battery":87}},` +
		`"metadata":{"reported":{"seq":{"timestamp":1},"temp":{"timestamp":1},"led_is_on":{"timestamp":1},"firmware_version":{"timestamp":1},` +
		`"rssi":{"timestamp":1},"battery":{"timestamp":1}}},"version":51,"timestamp":1}`)
	b.ReportAllocs()
	for b.Loop() {
		shadow.DocDelta(doc)
	}
}
