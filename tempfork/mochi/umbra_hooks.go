package mqtt

import (
	"errors"

	"github.com/umbra-iot/umbra/tempfork/mochi/hooks/storage"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// Hooks returns the server's hooks, for Umbra code that changes a
// session outside a client's packet flow (cluster mode installs a session
// handed over by another node, or drops one it handed over) and must run
// the same hooks Mochi runs when it does so itself (OnSubscribed,
// OnQosPublish, OnClientExpired, ...). UMBRA PATCH 18.
func (s *Server) Hooks() *Hooks { return s.hooks }

// RestoredClient builds a client, not connected, from its stored record:
// what loadClients does for each session at start, and what cluster mode
// does with a session another node handed over. UMBRA PATCH 18.
func (s *Server) RestoredClient(c storage.Client) *Client {
	cl := s.NewClient(nil, c.Listener, c.ID, false)
	cl.Properties.Username = c.Username
	cl.Properties.Clean = c.Clean
	cl.Properties.ProtocolVersion = c.ProtocolVersion
	cl.Properties.Props = packets.Properties{
		SessionExpiryInterval:     c.Properties.SessionExpiryInterval,
		SessionExpiryIntervalFlag: c.Properties.SessionExpiryIntervalFlag,
		AuthenticationMethod:      c.Properties.AuthenticationMethod,
		AuthenticationData:        c.Properties.AuthenticationData,
		RequestProblemInfoFlag:    c.Properties.RequestProblemInfoFlag,
		RequestProblemInfo:        c.Properties.RequestProblemInfo,
		RequestResponseInfo:       c.Properties.RequestResponseInfo,
		ReceiveMaximum:            c.Properties.ReceiveMaximum,
		TopicAliasMaximum:         c.Properties.TopicAliasMaximum,
		User:                      c.Properties.User,
		MaximumPacketSize:         c.Properties.MaximumPacketSize,
	}
	cl.Properties.Will = Will(c.Will)
	return cl
}

// CancelDelayedWill forgets the delayed will of client id, if one is
// waiting: cluster mode calls it when a new network connection to the
// session was made on another node, which this server cannot see
// [MQTT-3.1.3-9]. UMBRA PATCH 20.
func (s *Server) CancelDelayedWill(id string) { s.loop.willDelayed.Delete(id) }

// ErrAckLater, returned by an OnPublish hook for a client's QoS 1 publish,
// takes the publish over: the server neither acknowledges nor delivers it
// and reads the client's next packet; the hook calls AckPublish when it is
// done with it. Umbra's shadow router uses it to work on several requests
// of one connection at once (each PUBACK still follows its request's
// durable commit). Other packets returning it are handled as before.
// UMBRA PATCH 21.
var ErrAckLater = errors.New("publish to be acknowledged by a hook")

// AckPublish finishes a QoS 1 publish an OnPublish hook took over with
// ErrAckLater, as processPublish would have after its hooks: the PUBACK
// (success), the receive quota back, then, unless ignore, the message
// retained (if flagged) and delivered to subscribers, and OnPublished.
// A hook calls it once per publish, in the order it wants the PUBACKs
// sent; it may be called from any goroutine. UMBRA PATCH 21.
func (s *Server) AckPublish(cl *Client, pk packets.Packet, ignore bool) error {
	pk.Ignore = ignore
	err := cl.WritePacket(s.buildAck(pk.PacketID, packets.Puback, 0, pk.Properties, packets.CodeSuccess))
	cl.State.Inflight.IncreaseReceiveQuota()
	if err != nil {
		return err
	}
	if pk.FixedHeader.Retain {
		s.retainMessage(cl, pk)
	}
	s.publishToSubscribers(pk)
	s.hooks.OnPublished(cl, pk)
	return nil
}

// Buffered is how many bytes the client has sent that the server has read
// from the connection but not yet decoded: more than zero when the next
// packet is already waiting. Only for the client's read loop (hooks it
// calls, such as OnPublish). UMBRA PATCH 21.
func (cl *Client) Buffered() int {
	if cl.Net.bconn == nil {
		return 0
	}
	return cl.Net.bconn.Buffered()
}
