package hooks

import (
	"os"
	"testing"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/registry"
)

// recordingTracker records connects and disconnects.
type recordingTracker struct {
	connected    []registry.Session
	disconnected []string // reason per disconnect
	live         []registry.Live
	reserved     int64
}

func (r *recordingTracker) Reserve(string) int64 { r.reserved++; return r.reserved }

func (r *recordingTracker) ConnectedAs(s registry.Session, version int64, _ bool) registry.Live {
	r.connected = append(r.connected, s)
	return registry.Live{Session: s.ClientID, Version: version}
}

func (r *recordingTracker) Disconnected(s registry.Session, l registry.Live, reason string) {
	r.disconnected = append(r.disconnected, reason)
	r.live = append(r.live, l)
}

// A device's connection is reported with its identity, and its end with
// the reason AWS names for how it ended; a connection that never
// established a session, or whose client id the broker made up, is not.
func TestPresenceReportsConnectionsAndWhyTheyEnded(t *testing.T) {
	cert := deviceCert(t, "dev-a")
	srv := mqtt.New(nil)
	cases := []struct {
		name     string
		cause    error // the connection's stop cause
		err      error // the error OnDisconnect gets
		shutdown bool
		want     string
	}{
		{"DISCONNECT packet", packets.CodeDisconnect, nil, false, "CLIENT_INITIATED_DISCONNECT"},
		{"DISCONNECT with will", packets.CodeDisconnectWillMessage, nil, false, "CLIENT_INITIATED_DISCONNECT"},
		{"taken over", packets.ErrSessionTakenOver, nil, false, "DUPLICATE_CLIENTID"},
		{"not authorized", packets.ErrNotAuthorized, nil, false, "AUTH_ERROR"},
		{"server shutting down", packets.ErrServerShuttingDown, nil, false, "SERVER_INITIATED_DISCONNECT"},
		{"lost while shutting down", nil, nil, true, "SERVER_INITIATED_DISCONNECT"},
		{"keep-alive timeout", packets.ErrKeepAliveTimeout, nil, false, "MQTT_KEEP_ALIVE_TIMEOUT"},
		{"read deadline", nil, os.ErrDeadlineExceeded, false, "MQTT_KEEP_ALIVE_TIMEOUT"},
		{"protocol error", packets.ErrProtocolViolation, nil, false, "CLIENT_ERROR"},
		{"connection lost", nil, nil, false, "CONNECTION_LOST"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			access := testAccess(t)
			tr := &recordingTracker{}
			h := NewPresence(tr, access, func() bool { return c.shutdown })
			cl := connectAs(t, srv, access, cert, "dev-a", "")
			h.OnSessionEstablished(cl, packets.Packet{})
			if len(tr.connected) != 1 {
				t.Fatalf("%d connects reported, want 1", len(tr.connected))
			}
			if s := tr.connected[0]; s.Thing != "dev-a" || s.ClientID != "dev-a" || s.ProtocolVersion != 4 {
				t.Fatalf("session %+v, want thing dev-a, client dev-a, MQTT 3.1.1", s)
			}
			if c.cause != nil {
				cl.Stop(c.cause)
			}
			h.OnDisconnect(cl, c.err, false)
			if len(tr.disconnected) != 1 || tr.disconnected[0] != c.want {
				t.Fatalf("disconnects %v, want [%s]", tr.disconnected, c.want)
			}
			if tr.live[0].Version != 1 {
				t.Fatalf("disconnect reported with %+v, not what Connected returned", tr.live[0])
			}
			h.OnDisconnect(cl, nil, false) // a second end is not reported again
			if len(tr.disconnected) != 1 {
				t.Fatalf("%d disconnects reported, want 1", len(tr.disconnected))
			}
		})
	}

	t.Run("never established", func(t *testing.T) {
		tr := &recordingTracker{}
		h := NewPresence(tr, testAccess(t), func() bool { return false })
		h.OnDisconnect(netClient(t, srv, "dev-b"), nil, false)
		if len(tr.disconnected) != 0 {
			t.Fatalf("a connection refused at CONNECT was reported: %v", tr.disconnected)
		}
	})
	t.Run("assigned client id", func(t *testing.T) {
		tr := &recordingTracker{}
		access := testAccess(t)
		h := NewPresence(tr, access, func() bool { return false })
		cl := connectAs(t, srv, access, cert, "dev-a", "")
		cl.Properties.Props.AssignedClientID = "auto-1234"
		h.OnSessionEstablished(cl, packets.Packet{})
		h.OnDisconnect(cl, nil, false)
		if len(tr.connected)+len(tr.disconnected) != 0 {
			t.Fatalf("a made-up client id was tracked: %v %v", tr.connected, tr.disconnected)
		}
	})
}
