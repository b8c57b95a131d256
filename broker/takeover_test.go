package broker_test

import (
	"testing"

	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// Issue 13.4, takeovers checked by identity: a service may not take over
// the session another service holds under the same client id; the holder
// keeps its connection. The same service may (a reconnect).
func TestServiceCannotTakeOverAnotherServicesSession(t *testing.T) {
	s := startSecured(t, withAppServices)
	holder := mt.Connect(t, s.tlsMQTTURL, "shared-1", s.trust(nil), withSecret("limited", s.servicePassword), persistent)
	mine := holder.Subscribe("apps/shared-1/#", 1)
	c, err := mt.TryConnect(s.tlsMQTTURL, "shared-1", s.trust(nil), withSecret("dashboard", s.servicePassword), persistent)
	if err == nil {
		c.Disconnect(0)
		t.Fatal("another service took over the session")
	}
	holder.Publish("apps/shared-1/x", 1, false, "still here")
	if m := mt.Next(t, mine); string(m.Payload) != "still here" || !holder.IsConnectionOpen() {
		t.Fatalf("holder lost its connection: %q", m.Payload)
	}
	again := mt.Connect(t, s.tlsMQTTURL, "shared-1", s.trust(nil), withSecret("limited", s.servicePassword), persistent)
	if !again.IsConnectionOpen() {
		t.Fatal("the same service could not reconnect")
	}
}
