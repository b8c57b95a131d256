package hooks

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"testing"
	"time"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/testpki"
)

// certConn is a connection whose TLS handshake verified cert.
type certConn struct {
	net.Conn
	cert *x509.Certificate
}

func (c certConn) ConnectionState() tls.ConnectionState {
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.cert}}
}

func testAccess(t *testing.T) *Access {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := auth.NewPolicy([]auth.ServiceConfig{{Name: "dashboard", PasswordBcrypt: string(hash),
		Rules: auth.Rules{Subscribe: []string{"$aws/things/+/shadow/#"}, Publish: []string{"$aws/things/+/shadow/update"}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	authn := &auth.Authenticator{Policy: policy, Secrets: noSecrets{}, ValidThing: func(s string) bool { return s != "" }}
	return NewAccess(authn, slog.New(slog.DiscardHandler))
}

// deviceCert issues a client certificate for thing from a new test CA.
func deviceCert(t *testing.T, thing string) *x509.Certificate {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, dir, "ca")
	pair := ca.Client(t, dir, thing, nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	cert, err := x509.ParseCertificate(pair.TLS.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

type noSecrets struct{}

func (noSecrets) DeviceSecret(string) ([]byte, bool, error) { return nil, false, nil }

// connectAs builds a client on a certificate connection and authenticates
// it with the given username, as Mochi does for a CONNECT.
func connectAs(t *testing.T, srv *mqtt.Server, h *Access, cert *x509.Certificate, id, username string) *mqtt.Client {
	t.Helper()
	c1, c2 := net.Pipe()
	t.Cleanup(func() { c1.Close(); c2.Close() })
	cl := srv.NewClient(certConn{Conn: c1, cert: cert}, "tls", id, false)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ClientIdentifier: id, Username: []byte(username), UsernameFlag: true, Clean: true}, ProtocolVersion: 4}
	cl.ParseConnect("tls", pk)
	if !h.OnConnectAuthenticate(cl, pk) {
		t.Fatalf("%s refused", id)
	}
	return cl
}

// Issue 13.1, deterministically: the hook callbacks of two connections of
// one certificate device (username = a service's name) in the losing
// order: the second authenticates, then the first's OnDisconnect runs.
// Every order of the three steps is tried; the second connection must stay
// the device in all of them.
func TestIdentityRaceInEveryHookOrder(t *testing.T) {
	cert := deviceCert(t, "dev-a")
	srv := mqtt.New(nil)
	for _, expire := range []bool{true, false} {
		for _, cause := range []error{nil, packets.ErrSessionTakenOver, packets.CodeDisconnect} {
			h := testAccess(t)
			first := connectAs(t, srv, h, cert, "dev-a", "dashboard")
			second := connectAs(t, srv, h, cert, "dev-a", "dashboard")
			if cause != nil {
				first.Stop(cause)
			}
			h.OnDisconnect(first, nil, expire) // the losing order: after second authenticated
			for _, cl := range []*mqtt.Client{second, first} {
				if id := h.Identity(cl); id.Kind == auth.Service {
					t.Errorf("expire=%v cause=%v: connection became %s", expire, cause, id.Principal())
				}
				if h.OnACLCheck(cl, "$aws/things/+/shadow/#", false) {
					t.Errorf("expire=%v cause=%v: device may subscribe to every shadow", expire, cause)
				}
				if h.OnACLCheck(cl, "$aws/things/dev-b/shadow/update", true) {
					t.Errorf("expire=%v cause=%v: device may update another thing's shadow", expire, cause)
				}
			}
			if !h.OnACLCheck(second, "$aws/things/dev-a/shadow/update", true) {
				t.Errorf("expire=%v cause=%v: the second connection lost its own rights", expire, cause)
			}
		}
	}
}

// A certificate device's session keeps no username, so the session stored
// for it can never name a service after a restart; a restored session
// (no connection) is the device its client id names.
func TestDeviceSessionNeverNamesAService(t *testing.T) {
	cert := deviceCert(t, "dev-a")
	srv := mqtt.New(nil)
	h := testAccess(t)
	cl := connectAs(t, srv, h, cert, "dev-a", "dashboard")
	if len(cl.Properties.Username) != 0 {
		t.Fatalf("session username %q kept for a device", cl.Properties.Username)
	}
	restored := srv.NewClient(nil, "tls", "dev-a", false)
	restored.Properties.Username = cl.Properties.Username
	if id := h.Identity(restored); id.Kind != auth.Device || id.Name != "dev-a" {
		t.Fatalf("restored session: %+v", id)
	}
	// A live connection that holds no identity may do nothing.
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	stranger := srv.NewClient(c1, "tcp", "dev-a", false)
	stranger.Properties.Username = []byte("dashboard")
	if h.OnACLCheck(stranger, "$aws/things/dev-a/shadow/update", true) || h.OnACLCheck(stranger, "things/dev-a/x", false) {
		t.Fatal("a connection without an identity was allowed")
	}
}
