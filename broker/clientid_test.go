package broker_test

import (
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/internal/auth"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// withAppServices adds "limited" (apps/{clientid}/# only) and "granted"
// (the same rules, and the client id of thing dev-b).
func withAppServices(o *broker.Options) {
	hash := o.Auth.Services[0].PasswordBcrypt
	rules := auth.Rules{Publish: []string{"apps/{clientid}/#"}, Subscribe: []string{"apps/{clientid}/#"}}
	o.Auth.Services = append(o.Auth.Services,
		auth.ServiceConfig{Name: "limited", PasswordBcrypt: hash, Rules: rules},
		auth.ServiceConfig{Name: "granted", PasswordBcrypt: hash, Rules: rules, ClientIDs: []string{"dev-b"}})
}

func persistent(o *paho.ClientOptions) { o.SetCleanSession(false) }

// Issue 13.4: a service limited to apps/{clientid}/# logging in with a
// thing's name as client id is refused (CONNACK not authorized), does not
// kick the device, is not recorded as the device's connection, and gets
// none of the device's queued messages.
func TestServiceCannotUseAThingsClientID(t *testing.T) {
	s := startSecured(t, withAppServices)
	secret := s.issue(t, "dev-a")
	dash := mt.Connect(t, s.tlsMQTTURL, "dash-1", s.trust(nil), withSecret("dashboard", s.servicePassword))
	dev := mt.Connect(t, s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", secret), persistent)
	cmd := dev.Subscribe("things/dev-a/cmd", 1)

	limited := func() error {
		c, err := mt.TryConnect(s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("limited", s.servicePassword), persistent)
		if err == nil {
			c.Disconnect(0)
		}
		return err
	}
	if err := limited(); err == nil || err.Error() != "not Authorized" {
		t.Fatalf("limited service with client id dev-a: %v, want CONNACK not authorized", err)
	}
	if !dev.IsConnectionOpen() {
		t.Fatal("the device was kicked")
	}
	dash.Publish("things/dev-a/cmd", 1, false, "live")
	if m := mt.Next(t, cmd); string(m.Payload) != "live" {
		t.Fatalf("device got %q", m.Payload)
	}
	conn := s.api(t, s.viewer, "GET", "/api/things/dev-a/connectivity", "", 200)
	if !gjson.Get(conn, "connectivity.connected").Bool() || gjson.Get(conn, "connectivity.versionNumber").Int() != 1 {
		t.Fatalf("connectivity after the refused login: %s", conn)
	}

	// Offline device, queued message: the service still gets nothing.
	dev.Disconnect(100)
	dash.Publish("things/dev-a/cmd", 1, false, "queued")
	if err := limited(); err == nil {
		t.Fatal("limited service took the offline device's session")
	}
	got := make(chan mt.Message, 10)
	dev2 := mt.Connect(t, s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", secret), persistent, func(o *paho.ClientOptions) {
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- mt.Message{Topic: m.Topic(), Payload: m.Payload()} })
	})
	_ = dev2
	if m := mt.Next(t, got); string(m.Payload) != "queued" {
		t.Fatalf("device's queued message: %q", m.Payload)
	}
}

// Issue 13.4: a service granted a thing's client id may take over its
// session, but messages queued in it are checked against the service's own
// rights on delivery: it must not receive what it could not subscribe to.
func TestGrantedServiceInheritsNoForbiddenMessages(t *testing.T) {
	s := startSecured(t, withAppServices)
	secret := s.issue(t, "dev-b")
	dash := mt.Connect(t, s.tlsMQTTURL, "dash-1", s.trust(nil), withSecret("dashboard", s.servicePassword))
	dev := mt.Connect(t, s.tlsMQTTURL, "dev-b", s.trust(nil), withSecret("dev-b", secret), persistent)
	dev.Subscribe("things/dev-b/cmd", 1)
	dev.Disconnect(100)
	dash.Publish("things/dev-b/cmd", 1, false, "device-secret")

	got := make(chan mt.Message, 10)
	svc := mt.Connect(t, s.tlsMQTTURL, "dev-b", s.trust(nil), withSecret("granted", s.servicePassword), persistent, func(o *paho.ClientOptions) {
		o.SetOrderMatters(true)
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- mt.Message{Topic: m.Topic(), Payload: m.Payload()} })
	})
	// A marker on the service's own topic, sent after the session was
	// inherited: anything queued would arrive before it.
	mine := svc.Subscribe("apps/dev-b/#", 1)
	svc.Publish("apps/dev-b/marker", 1, false, "marker")
	mt.Next(t, mine)
	select {
	case m := <-got:
		t.Fatalf("granted service received the device's queued %s %q", m.Topic, m.Payload)
	default:
	}
	conn := s.api(t, s.viewer, "GET", "/api/things/dev-b/connectivity", "", 200)
	if gjson.Get(conn, "connectivity.connected").Bool() {
		t.Fatalf("the service's connection was recorded as the device's: %s", conn)
	}
}

// A connection taken over by the same device still reports its end as the
// device's (its identity is released at the takeover; the lifecycle event
// keeps the one recorded when it connected).
func TestTakenOverConnectionEndsAsTheDevice(t *testing.T) {
	s := startSecured(t, func(o *broker.Options) {
		o.Auth.Services = append(o.Auth.Services, auth.ServiceConfig{Name: "watch", PasswordBcrypt: o.Auth.Services[0].PasswordBcrypt,
			Rules: auth.Rules{Subscribe: []string{"$aws/events/#"}}})
	})
	secret := s.issue(t, "dev-a")
	watch := mt.Connect(t, s.tlsMQTTURL, "watch-1", s.trust(nil), withSecret("watch", s.servicePassword))
	ends := watch.Subscribe("$aws/events/presence/disconnected/dev-a", 1)
	mt.Connect(t, s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", secret), persistent)
	mt.Connect(t, s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", secret), persistent)
	ev := string(mt.Next(t, ends).Payload)
	if gjson.Get(ev, "disconnectReason").String() != "DUPLICATE_CLIENTID" || gjson.Get(ev, "thingName").String() != "dev-a" ||
		gjson.Get(ev, "principalIdentifier").String() != "dev-a" {
		t.Fatalf("end of the taken-over connection: %s", ev)
	}
}
