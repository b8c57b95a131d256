package broker_test

import (
	"crypto/tls"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// certProbe is a client TLS config that records whether the server sent a
// CertificateRequest (Go calls GetClientCertificate only then) and answers
// it with cert, or with no certificate.
func (s *secured) certProbe(cert *tls.Certificate, asked *atomic.Bool) func(*paho.ClientOptions) {
	return func(o *paho.ClientOptions) {
		o.SetTLSConfig(&tls.Config{
			RootCAs: s.ca.Pool(), ServerName: "127.0.0.1",
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				asked.Store(true)
				if cert != nil {
					return cert, nil
				}
				return &tls.Certificate{}, nil
			},
		})
	}
}

// Each TLS listener has its own client-certificate mode: "none" sends no
// CertificateRequest (old TLS stacks without a certificate abort on one),
// "required" refuses a client without a certificate, "optional" (the
// default with a client CA) takes both and identifies a certificate client
// by its certificate.
func TestTLSClientCertModesPerListener(t *testing.T) {
	s := startSecured(t, func(o *broker.Options) {
		o.TLS.ClientCerts = broker.ClientCertsRequired // the main MQTT listener (and WebSocket, which follows it)
		o.Listeners = []broker.ListenerOptions{
			{Name: "mqtts-passwords", Addr: "127.0.0.1:0", ClientCerts: broker.ClientCertsNone},
			{Name: "mqtts-optional", Addr: "127.0.0.1:0", ClientCerts: broker.ClientCertsOptional},
			{Name: "wss-passwords", Addr: "127.0.0.1:0", WebSocket: true, ClientCerts: broker.ClientCertsNone},
		}
	})
	none := "ssl://" + s.ListenerAddr("mqtts-passwords")
	wsNone := "wss://" + s.ListenerAddr("wss-passwords") + "/mqtt"
	optional := "ssl://" + s.ListenerAddr("mqtts-optional")
	required, wsRequired := s.tlsMQTTURL, s.tlsWSURL
	// The HTTP API (API keys, no certificates) is not affected by
	// client_certs: s.issue below calls it without a client certificate.
	now := time.Now()
	devCert := s.ca.Client(t, s.dir, "cert-dev", nil, now.Add(-time.Hour), now.Add(time.Hour))

	t.Run("none: a password client is never asked for a certificate", func(t *testing.T) {
		for _, url := range []string{none, wsNone} {
			var asked atomic.Bool
			c := mt.Connect(t, url, "dash-none", s.certProbe(nil, &asked), withSecret("dashboard", s.servicePassword))
			c.Disconnect(50)
			if asked.Load() {
				t.Fatalf("%s: the server sent a CertificateRequest", url)
			}
			secret := s.issue(t, "pw-dev")
			d := mt.Connect(t, url, "pw-dev", s.certProbe(nil, &asked), withSecret("pw-dev", secret))
			acc := d.Subscribe("$aws/things/pw-dev/shadow/update/accepted", 1)
			d.Publish("$aws/things/pw-dev/shadow/update", 1, false, `{"state":{"reported":{"ok":true}}}`)
			mt.Next(t, acc)
			d.Disconnect(50)
			if asked.Load() {
				t.Fatalf("%s: the server sent a CertificateRequest to a device", url)
			}
		}
	})

	t.Run("none: a certificate is not requested, so it identifies nobody", func(t *testing.T) {
		var asked atomic.Bool
		if c, err := mt.TryConnect(none, "cert-dev", s.certProbe(&devCert.TLS, &asked)); err == nil {
			c.Disconnect(0)
			t.Fatal("a certificate device without a secret connected to a listener that does not ask for certificates")
		}
		if asked.Load() {
			t.Fatal("the server sent a CertificateRequest")
		}
	})

	t.Run("optional: asks, takes password clients and certificate clients", func(t *testing.T) {
		var asked atomic.Bool
		c := mt.Connect(t, optional, "dash-opt", s.certProbe(nil, &asked), withSecret("dashboard", s.servicePassword))
		c.Disconnect(50)
		if !asked.Load() {
			t.Fatal("the optional listener sent no CertificateRequest")
		}
		asked.Store(false)
		d := mt.Connect(t, optional, "cert-dev", s.certProbe(&devCert.TLS, &asked))
		if !asked.Load() {
			t.Fatal("no CertificateRequest")
		}
		acc := d.Subscribe("$aws/things/cert-dev/shadow/update/accepted", 1)
		d.Publish("$aws/things/cert-dev/shadow/update", 1, false, `{"state":{"reported":{"via":"optional"}}}`)
		mt.Next(t, acc)
		d.Disconnect(50)
		who := s.api(t, s.admin, "GET", "/things/cert-dev/shadow/history", "", 200)
		if p := gjson.Get(who, "entries.0.principal").String(); !strings.Contains(p, "cert-dev") {
			t.Fatalf("history principal %q (%s)", p, who)
		}
		t.Logf("principal of the certificate client: %s", gjson.Get(who, "entries.0.principal"))
		// The certificate decides: it does not name dev-other.
		if c, err := mt.TryConnect(optional, "dev-other", s.certProbe(&devCert.TLS, &asked)); err == nil {
			c.Disconnect(0)
			t.Fatal("a certificate of another thing was accepted")
		}
	})

	t.Run("required: refuses a client without a certificate", func(t *testing.T) {
		for _, url := range []string{required, wsRequired} {
			var asked atomic.Bool
			if c, err := mt.TryConnect(url, "dash-req", s.certProbe(nil, &asked), withSecret("dashboard", s.servicePassword)); err == nil {
				c.Disconnect(0)
				t.Fatalf("%s: a client without a certificate connected to a listener that requires one", url)
			}
			if !asked.Load() {
				t.Fatalf("%s: no CertificateRequest", url)
			}
			d := mt.Connect(t, url, "cert-dev", s.certProbe(&devCert.TLS, &asked))
			acc := d.Subscribe("$aws/things/cert-dev/shadow/update/accepted", 1)
			d.Publish("$aws/things/cert-dev/shadow/update", 1, false, `{"state":{"reported":{"via":"required"}}}`)
			mt.Next(t, acc)
			d.Disconnect(50)
		}
	})
}

// Impossible modes are refused when the broker is built, with a message
// naming the problem.
func TestTLSClientCertModeValidation(t *testing.T) {
	cases := []struct {
		name, want string
		modify     func(*broker.Options)
	}{
		{"unknown mode", `client_certs "sometimes": want required, optional or none`,
			func(o *broker.Options) { o.TLS.ClientCerts = "sometimes" }},
		{"required without a CA", `client_certs "required" needs a server certificate and client_ca_file`,
			func(o *broker.Options) { o.TLS.ClientCAFile = ""; o.TLS.ClientCerts = broker.ClientCertsRequired }},
		{"optional listener without a CA", `listener x's client_certs "optional" needs`,
			func(o *broker.Options) {
				o.TLS.ClientCAFile = ""
				o.Listeners = []broker.ListenerOptions{{Name: "x", Addr: "127.0.0.1:0", ClientCerts: broker.ClientCertsOptional}}
			}},
		{"require_client_cert clash", `require_client_cert contradicts client_certs "none"`,
			func(o *broker.Options) { o.TLS.RequireClientCert = true; o.TLS.ClientCerts = broker.ClientCertsNone }},
		{"listener without a name", "listener 0: name is required",
			func(o *broker.Options) { o.Listeners = []broker.ListenerOptions{{Addr: "127.0.0.1:0"}} }},
		{"duplicate listener name", `listener "mqtt": name already used`,
			func(o *broker.Options) { o.Listeners = []broker.ListenerOptions{{Name: "mqtt", Addr: "127.0.0.1:0"}} }},
		{"public listener, no auth", "x listener 0.0.0.0:0 is not on loopback",
			func(o *broker.Options) { o.Listeners = []broker.ListenerOptions{{Name: "x", Addr: "0.0.0.0:0"}} }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ca := testpkiCA(t, dir)
			srv := ca.Server(t, dir)
			o := broker.Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", WSAddr: broker.Off, HTTPAddr: broker.Off,
				TLS: broker.TLSOptions{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: ca.File}}
			c.modify(&o)
			_, err := broker.New(o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want an error containing %q", err, c.want)
			}
		})
	}
}
