package broker_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/auth"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/testpki"
)

// colonHex writes b as aa:bb:cc (how openssl prints serials and
// fingerprints).
func colonHex(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02X", c)
	}
	return strings.Join(parts, ":")
}

// Issue 13.8: revoked certificates (by serial, by fingerprint) and disabled
// things are refused at CONNECT; under policy auto a deleted thing's
// certificate does not register it again until it is created explicitly.
func TestRevokedCertificatesDisabledAndDeletedThings(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, dir, "device-ca")
	now := time.Now()
	bySerial := ca.Client(t, dir, "dev-r", nil, now.Add(-time.Hour), now.Add(time.Hour))
	byPrint := ca.Client(t, dir, "dev-f", nil, now.Add(-time.Hour), now.Add(time.Hour))
	good := ca.Client(t, dir, "dev-g", nil, now.Add(-time.Hour), now.Add(time.Hour))
	serial := bySerial.TLS.Leaf
	if serial == nil {
		t.Fatal("testpki pair without a parsed leaf")
	}
	print := sha256.Sum256(byPrint.TLS.Certificate[0])
	s := startSecuredCA(t, dir, ca, func(o *broker.Options) {
		o.Auth.DeniedCertificates = []string{"serial:" + colonHex(serial.SerialNumber.Bytes()), "sha256:" + hex.EncodeToString(print[:])}
	})
	connect := func(id string, pair testpki.Pair) error {
		c, err := mt.TryConnect(s.tlsMQTTURL, id, s.trust(&pair.TLS))
		if err == nil {
			c.Disconnect(0)
		}
		return err
	}
	if err := connect("dev-r", bySerial); err == nil {
		t.Error("certificate denied by serial connected")
	}
	if err := connect("dev-f", byPrint); err == nil {
		t.Error("certificate denied by fingerprint connected")
	}
	if err := connect("dev-g", good); err != nil {
		t.Fatalf("valid certificate refused: %v", err)
	}
	s.api(t, s.viewer, "GET", "/api/things/dev-r", "", 404) // refused before registration

	// Disabled through the registry attribute, enabled again.
	s.api(t, s.admin, "PATCH", "/api/things/dev-g", `{"attributes":{"umbra:disabled":"true"}}`, 200)
	if err := connect("dev-g", good); err == nil {
		t.Error("disabled thing connected")
	}
	s.api(t, s.admin, "PATCH", "/api/things/dev-g", `{"attributes":{"umbra:disabled":null}}`, 200)
	if err := connect("dev-g", good); err != nil {
		t.Fatalf("re-enabled thing refused: %v", err)
	}

	// Deleted: its certificate does not recreate it (policy auto).
	s.api(t, s.admin, "DELETE", "/api/things/dev-g", "", 204)
	if err := connect("dev-g", good); err == nil {
		t.Error("deleted thing's certificate connected")
	}
	s.api(t, s.viewer, "GET", "/api/things/dev-g", "", 404)
	s.api(t, s.admin, "POST", "/api/things", `{"thingName":"dev-g"}`, 201)
	if err := connect("dev-g", good); err != nil {
		t.Fatalf("thing created again is refused: %v", err)
	}
	// The tombstone survives a restart.
	s.api(t, s.admin, "DELETE", "/api/things/dev-g", "", 204)
	s.Server = s.Restart(t)
	s.tlsMQTTURL = s.MQTTURL()
	if err := connect("dev-g", good); err == nil {
		t.Error("deleted thing's certificate connected after a restart")
	}
}

// registry.recreate_deleted: true restores the old behaviour on purpose.
func TestRecreateDeletedThingsWhenConfigured(t *testing.T) {
	s := startSecured(t, func(o *broker.Options) { o.RecreateDeletedThings = true })
	now := time.Now()
	good := s.ca.Client(t, s.dir, "dev-g", nil, now.Add(-time.Hour), now.Add(time.Hour))
	mt.Connect(t, s.tlsMQTTURL, "dev-g", s.trust(&good.TLS)).Disconnect(50)
	s.api(t, s.admin, "DELETE", "/api/things/dev-g", "", 204)
	mt.Connect(t, s.tlsMQTTURL, "dev-g", s.trust(&good.TLS)).Disconnect(50)
	s.api(t, s.viewer, "GET", "/api/things/dev-g", "", 200)
}

// Disabling or deleting a thing also ends its open connection.
func TestDisablingOrDeletingAThingEndsItsConnection(t *testing.T) {
	s := startSecured(t)
	now := time.Now()
	for _, step := range []struct{ thing, method, path, body string }{
		{"dev-d", "PATCH", "/api/things/dev-d", `{"attributes":{"umbra:disabled":"true"}}`},
		{"dev-x", "DELETE", "/api/things/dev-x", ""},
	} {
		pair := s.ca.Client(t, s.dir, step.thing, nil, now.Add(-time.Hour), now.Add(time.Hour))
		lost := make(chan error, 1)
		mt.Connect(t, s.tlsMQTTURL, step.thing, s.trust(&pair.TLS), func(o *paho.ClientOptions) {
			o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
		})
		want := 200
		if step.method == "DELETE" {
			want = 204
		}
		s.api(t, s.admin, step.method, step.path, step.body, want)
		select {
		case <-lost:
		case <-time.After(mt.Wait):
			t.Fatalf("%s %s: the thing's connection stayed open", step.method, step.path)
		}
		if c, err := mt.TryConnect(s.tlsMQTTURL, step.thing, s.trust(&pair.TLS)); err == nil {
			c.Disconnect(0)
			t.Fatalf("%s %s: the thing reconnected", step.method, step.path)
		}
	}
}

// A malformed denied-certificate entry or client id grant fails start-up
// with an error naming it.
func TestBadRevocationAndGrantConfigIsRefused(t *testing.T) {
	for _, c := range []struct {
		modify func(*broker.Options)
		want   string
	}{
		{func(o *broker.Options) { o.Auth.DeniedCertificates = []string{"sha256:abcd"} }, `auth.denied_certificates[0] "sha256:abcd"`},
		{func(o *broker.Options) { o.Auth.DeniedCertificates = []string{"0a1b"} }, `auth.denied_certificates[0] "0a1b"`},
		{func(o *broker.Options) { o.Auth.Services[0].ClientIDs = []string{"a/b"} }, `client_ids entry "a/b"`},
	} {
		opts := brokertest.LoopbackOptions(t.TempDir())
		opts.Auth.Enabled = true
		opts.Auth.Services = []auth.ServiceConfig{{Name: "svc", PasswordBcrypt: "$2a$04$C6UzMDM.H6dfI/f/IKxGhuN3C6I5yxCCfGX5iF9A8GkTpK0X5ZYm."}}
		c.modify(&opts)
		if _, err := broker.New(opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want one naming %s", err, c.want)
		}
	}
}
