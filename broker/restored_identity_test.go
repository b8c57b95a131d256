package broker_test

import (
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/internal/auth"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// Persistent sessions of a device and of a service survive a restart with
// authentication on: messages published to them before their owners
// reconnect are delivered (each restored session is checked as the device
// or the service that made it).
func TestSecuredPersistentSessionsSurviveRestart(t *testing.T) {
	s := startSecured(t, func(o *broker.Options) {
		o.Auth.Services = append(o.Auth.Services, auth.ServiceConfig{Name: "pub", PasswordBcrypt: o.Auth.Services[0].PasswordBcrypt,
			Rules: auth.Rules{Publish: []string{"app/#", "things/+/cmd"}}})
	})
	secret := s.issue(t, "dev-a")
	dev := mt.Connect(t, s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", secret), persistent)
	dev.Subscribe("things/dev-a/cmd", 1)
	dash := mt.Connect(t, s.tlsMQTTURL, "dash-1", s.trust(nil), withSecret("dashboard", s.servicePassword), persistent)
	dash.Subscribe("app/dash-1/#", 1)
	dev.Disconnect(100)
	dash.Disconnect(100)
	s.Server = s.Restart(t)
	s.tlsMQTTURL = s.MQTTURL()
	pub := mt.Connect(t, s.tlsMQTTURL, "pub-1", s.trust(nil), withSecret("pub", s.servicePassword))
	pub.Publish("things/dev-a/cmd", 1, false, "for-device")
	pub.Publish("app/dash-1/x", 1, false, "for-service")
	for _, c := range []struct{ id, user, pass, want string }{
		{"dev-a", "dev-a", secret, "for-device"}, {"dash-1", "dashboard", s.servicePassword, "for-service"},
	} {
		got := make(chan mt.Message, 10)
		mt.Connect(t, s.tlsMQTTURL, c.id, s.trust(nil), withSecret(c.user, c.pass), persistent, func(o *paho.ClientOptions) {
			o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- mt.Message{Topic: m.Topic(), Payload: m.Payload()} })
		})
		if m := mt.Next(t, got); string(m.Payload) != c.want {
			t.Fatalf("%s got %q, want %q", c.id, m.Payload, c.want)
		}
	}
}
