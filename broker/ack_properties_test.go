package broker_test

import (
	"context"
	"testing"

	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// TestAcksDoNotEchoUserProperties is issue 14 item 10: PUBACK, PUBREC and
// PUBCOMP must not repeat the publish's user properties (legal but wasteful
// on constrained links, and it breaks the Eclipse Paho test client).
func TestAcksDoNotEchoUserProperties(t *testing.T) {
	srv := brokertest.Start(t)
	c := connect5(t, srv.MQTTAddr(), "props-1", nil)
	ctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
	defer cancel()
	for _, qos := range []byte{1, 2} {
		resp, err := c.Publish(ctx, &paho5.Publish{Topic: "app/props", QoS: qos, Payload: []byte("x"),
			Properties: &paho5.PublishProperties{User: paho5.UserProperties{{Key: "trace", Value: "abc-123"}}}})
		if err != nil || resp == nil {
			t.Fatalf("QoS %d publish: %v", qos, err)
		}
		if resp.ReasonCode != 0 { // 0x01 (upstream Mochi's PUBACK) is no PUBACK reason code
			t.Fatalf("QoS %d publish: reason 0x%02x", qos, resp.ReasonCode)
		}
		if resp.Properties != nil && len(resp.Properties.User) > 0 {
			t.Errorf("QoS %d acknowledgement echoes user properties %v", qos, resp.Properties.User)
		}
	}
}
