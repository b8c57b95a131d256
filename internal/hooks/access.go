package hooks

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/internal/auth"
)

// Access is Umbra's only authentication and ACL hook (Mochi ORs the answers
// of every hook that provides these events, so a second provider would
// silently widen access).
//
// With an Authenticator it authenticates every CONNECT and enforces the
// auth.Policy at publish, subscribe and delivery; without one (auth off) it
// lets every well-formed client do anything.
type Access struct {
	mqtt.HookBase
	authn  *auth.Authenticator // nil: authentication off
	policy *auth.Policy
	log    *slog.Logger

	// Admit, when set, applies the registration policy to devices (and,
	// with authentication off, to clients whose id is a thing name).
	Admit func(id auth.Identity) error

	// Existing, when set, returns the session a new connection with this
	// client id is about to inherit (Mochi's Clients.Get).
	Existing func(clientID string) (*mqtt.Client, bool)
	// Holder, when set (cluster mode), returns who holds the session of
	// a client id on another node; a connect is checked against it as
	// against a session found by Existing.
	Holder func(clientID string) (auth.Identity, bool)
	// DropInflight, when set, removes a queued message from a session
	// that a connection with fewer rights inherits.
	DropInflight func(cl *mqtt.Client, pk packets.Packet)

	identities auth.Connections[*mqtt.Client] // by connection, never by client id
	mu         sync.Mutex
	aliases    map[*mqtt.Client]map[uint16]string
}

// NewAccess returns the access hook; authn nil means authentication off.
func NewAccess(authn *auth.Authenticator, log *slog.Logger) *Access {
	a := &Access{authn: authn, log: log, aliases: map[*mqtt.Client]map[uint16]string{}}
	if authn != nil {
		a.policy = authn.Policy
	}
	return a
}

// ID implements mqtt.Hook.
func (h *Access) ID() string { return "umbra-access" }

// Provides implements mqtt.Hook.
func (h *Access) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablish, mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnDisconnect, mqtt.OnClientExpired:
		return true
	}
	return false
}

// OnConnectAuthenticate implements mqtt.Hook.
func (h *Access) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	// NUL is forbidden in MQTT strings and is Umbra's storage key separator.
	if strings.ContainsRune(cl.ID, 0) {
		return false
	}
	assigned := assignedClientID(cl)
	if h.authn == nil {
		id := auth.Identity{Kind: auth.Anonymous, ClientID: cl.ID, Username: string(pk.Connect.Username), Method: "none", ClientIDAssigned: assigned}
		if !h.admit(cl, id) {
			return false
		}
		h.identities.Bind(cl, id)
		return true
	}
	id, err := h.authn.Authenticate(auth.ConnectInfo{
		ClientID:         cl.ID,
		Username:         string(pk.Connect.Username),
		Password:         pk.Connect.Password,
		PeerCertificates: peerCertificates(cl),
		Remote:           cl.Net.Remote,
	})
	if err != nil {
		// The error text never contains the password or secret.
		h.log.Warn("mqtt authentication failed", "client", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener, "reason", err.Error())
		return false
	}
	id.ClientIDAssigned = assigned
	// Mochi publishes a will without an ACL check, so the will topic is
	// checked here, when it is set (AWS refuses such a connection too).
	if pk.Connect.WillFlag && !h.policy.CanPublish(id, pk.Connect.WillTopic) {
		h.log.Warn("mqtt connection refused: will topic not allowed", "client", cl.ID, "remote", cl.Net.Remote, "will_topic", pk.Connect.WillTopic)
		h.authn.Refused()
		return false
	}
	if holder, ok := h.holder(cl); ok && !h.authn.MayTakeOver(id, holder) {
		h.log.Warn("mqtt connection refused: client id in use by another principal", "client", cl.ID, "remote", cl.Net.Remote,
			"principal", id.Principal(), "holder", holder.Principal())
		h.authn.Refused()
		return false
	}
	if !h.admit(cl, id) {
		h.authn.Refused()
		return false
	}
	// The session keeps (and persists) a username only for a service, so
	// a restored session never names a service it was not created by.
	cl.Properties.Username = id.SessionUsername()
	h.identities.Bind(cl, id)
	return true
}

// holder is who holds the session cl's client id names, if anyone does:
// on this node (Existing), or else on another cluster node (Holder).
func (h *Access) holder(cl *mqtt.Client) (auth.Identity, bool) {
	if h.Existing != nil {
		if prev, ok := h.Existing(cl.ID); ok && prev != cl {
			return h.Identity(prev), true
		}
	}
	if h.Holder != nil {
		return h.Holder(cl.ID)
	}
	return auth.Identity{}, false
}

// assignedClientID reports whether Mochi made up the client's id because its
// CONNECT carried none.
func assignedClientID(cl *mqtt.Client) bool { return cl.Properties.Props.AssignedClientID != "" }

func (h *Access) admit(cl *mqtt.Client, id auth.Identity) bool {
	if h.Admit == nil {
		return true
	}
	if err := h.Admit(id); err != nil {
		h.log.Warn("mqtt connection refused by registration policy", "client", cl.ID, "remote", cl.Net.Remote, "reason", err.Error())
		return false
	}
	return true
}

// Identity is who the connection cl authenticated as. A connection that
// holds no identity (released, or never authenticated) is auth.Nobody; a
// persistent session restored from storage, which has no connection yet,
// gets auth's RestoredIdentity.
func (h *Access) Identity(cl *mqtt.Client) auth.Identity {
	if id, ok := h.identities.Lookup(cl); ok {
		return id
	}
	if h.authn == nil {
		return auth.Identity{Kind: auth.Anonymous, ClientID: cl.ID}
	}
	if cl.Net.Conn == nil && !cl.Net.Inline {
		return h.authn.RestoredIdentity(cl.ID, string(cl.Properties.Username))
	}
	return auth.Nobody(cl.ID)
}

// ForeignClientID reports whether cl uses the client id of a registered
// thing it is not (a service granted that id): its connection is not the
// thing's.
func (h *Access) ForeignClientID(cl *mqtt.Client) bool {
	return h.authn != nil && h.authn.NamesOtherThing(h.Identity(cl))
}

// OnSessionEstablish implements mqtt.Hook. It runs after authentication and
// before Mochi hands the session of an earlier connection with the same
// client id to cl: messages queued in that session that cl may not receive
// are dropped, and the earlier connection object loses its identity.
func (h *Access) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if h.Existing == nil {
		return
	}
	old, ok := h.Existing(cl.ID)
	if !ok || old == cl {
		return
	}
	if h.authn != nil && h.DropInflight != nil {
		id := h.Identity(cl)
		for _, pk := range old.State.Inflight.GetAll(false) {
			if pk.FixedHeader.Type == packets.Publish && !h.policy.CanReceive(id, pk.TopicName) {
				h.DropInflight(old, pk)
			}
		}
	}
	h.identities.Release(old)
}

// OnACLCheck implements mqtt.Hook for its three call sites: publish
// (write), subscribe (topic is the filter) and delivery (topic is a name).
func (h *Access) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if h.authn == nil {
		return true
	}
	id := h.Identity(cl)
	if write {
		return topic != "" && h.policy.CanPublish(id, topic)
	}
	return h.policy.CanReceive(id, topic)
}

// OnPacketRead resolves MQTT 5 topic aliases before Mochi's ACL check,
// which otherwise sees an empty topic for a publish that uses an alias.
func (h *Access) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || !pk.Properties.TopicAliasFlag || pk.Properties.TopicAlias == 0 {
		return pk, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.aliases[cl]
	if pk.TopicName != "" {
		if m == nil {
			m = map[uint16]string{}
			h.aliases[cl] = m
		}
		m[pk.Properties.TopicAlias] = pk.TopicName
		return pk, nil
	}
	pk.TopicName = m[pk.Properties.TopicAlias] // "" if unknown: the ACL denies
	return pk, nil
}

// OnDisconnect forgets the connection's aliases and, when its session ends
// with it or has moved to a newer connection, its identity. Identities are
// keyed by connection object, so this never touches another connection's.
// A persistent session keeps its identity while offline: messages queued
// for it are checked against it.
func (h *Access) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	h.mu.Lock()
	delete(h.aliases, cl)
	h.mu.Unlock()
	if expire || cl.IsTakenOver() || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		h.identities.Release(cl)
	}
}

// OnClientExpired forgets the identity of an expired session.
func (h *Access) OnClientExpired(cl *mqtt.Client) { h.identities.Release(cl) }

// tlsState is implemented by *tls.Conn and by Umbra's WebSocket connection.
type tlsState interface {
	ConnectionState() tls.ConnectionState
}

type wsTLSState interface {
	ConnectionState() (tls.ConnectionState, bool)
}

func peerCertificates(cl *mqtt.Client) []*x509.Certificate {
	switch c := cl.Net.Conn.(type) {
	case tlsState:
		return c.ConnectionState().PeerCertificates
	case wsTLSState:
		if st, ok := c.ConnectionState(); ok {
			return st.PeerCertificates
		}
	}
	return nil
}
