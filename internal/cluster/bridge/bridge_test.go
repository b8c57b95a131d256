package bridge

import (
	"reflect"
	"testing"

	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// A device must not reach NATS's or Umbra's own subjects through the
// bridge (the JetStream API, the shadow bucket, reply inboxes, the
// retained stream), and such subjects are never delivered to MQTT.
func TestReservedSubjectsAreNotBridged(t *testing.T) {
	b := &Bridge{}
	for topic, want := range map[string]bool{
		"$aws/things/lamp/shadow/update":     true,
		"devices/x/cmd":                      true,
		"/leading":                           true,
		"$JS/API/STREAM/DELETE/UMBRA_SHADOW": false,
		"$KV/umbra_shadows/abc":              false,
		"_INBOX/abc":                         false,
		"$UMBRA/retained/x":                  false,
		"$SYS/broker/uptime":                 false,
		"$MQTT/sess/x":                       false,
		"has space":                          false,
	} {
		if got := b.bridged(topic); got != want {
			t.Errorf("bridged(%q) = %v; want %v", topic, got, want)
		}
	}
}

// What the bridge writes in NATS headers is what it reads back.
func TestHeaderRoundTrip(t *testing.T) {
	b := &Bridge{cfg: Config{Node: "n1"}}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Retain: true}, TopicName: "a/b", Payload: []byte("p")}
	pk.Properties = packets.Properties{
		ContentType: "text/plain", ResponseTopic: "r/t", CorrelationData: []byte{0, 9},
		PayloadFormat: 1, PayloadFormatFlag: true, MessageExpiryInterval: 60,
		User: []packets.UserProperty{{Key: "a", Val: "1"}, {Key: "a", Val: "2"}, {Key: "é", Val: "=,\n"}},
	}
	h := b.header(pk)
	if h.Get(HdrNode) != "n1" || h.Get(HdrQoS) != "2" {
		t.Fatalf("headers %v", h)
	}
	got := packet(h, "a/b", []byte("p"))
	if got.FixedHeader.Qos != 2 || !got.FixedHeader.Retain || got.Origin != origin {
		t.Fatalf("fixed header %+v origin %q", got.FixedHeader, got.Origin)
	}
	if !reflect.DeepEqual(got.Properties, pk.Properties) {
		t.Fatalf("properties\n got %+v\nwant %+v", got.Properties, pk.Properties)
	}
	// A NATS-native message has no headers: QoS 0, no retain.
	plain := packet(nil, "a/b", nil)
	if plain.FixedHeader.Qos != 0 || plain.FixedHeader.Retain {
		t.Fatalf("plain NATS message: %+v", plain.FixedHeader)
	}
}
