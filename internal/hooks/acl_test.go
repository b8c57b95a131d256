package hooks

import (
	"net"
	"testing"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// The access hook's ACL: a certificate device may use its own shadows'
// topics (classic and named) and nothing of another thing, nor connect as
// another thing.
func TestAccessACL(t *testing.T) {
	cert := deviceCert(t, "dev-a")
	srv := mqtt.New(nil)
	h := testAccess(t)
	dev := connectAs(t, srv, h, cert, "dev-a", "")
	for _, c := range []struct {
		topic string
		write bool
		want  bool
	}{
		{"$aws/things/dev-a/shadow/update", true, true},
		{"$aws/things/dev-a/shadow/name/cfg/get", true, true},
		{"$aws/things/dev-a/shadow/update/delta", false, true},
		{"$aws/things/dev-a/shadow/name/cfg/update/accepted", false, true},
		{"$aws/things/dev-b/shadow/update", true, false},
		{"$aws/things/dev-b/shadow/update/delta", false, false},
		{"$aws/things/+/shadow/#", false, false},
		{"#", false, false},
	} {
		if got := h.OnACLCheck(dev, c.topic, c.write); got != c.want {
			t.Errorf("device dev-a, %s write=%v: allowed %v, want %v", c.topic, c.write, got, c.want)
		}
	}
	// A certificate whose name is not the client id is refused.
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	other := srv.NewClient(certConn{Conn: c1, cert: cert}, "tls", "dev-b", false)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ClientIdentifier: "dev-b", Clean: true}, ProtocolVersion: 4}
	other.ParseConnect("tls", pk)
	if h.OnConnectAuthenticate(other, pk) {
		t.Fatal("certificate dev-a connected as client id dev-b")
	}
}
