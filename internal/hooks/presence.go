package hooks

import (
	"errors"
	"os"
	"sync"
	"time"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/internal/keyed"
	"github.com/umbra-iot/umbra/registry"
)

// PresenceTracker records connections (registry.Registry does).
type PresenceTracker interface {
	Reserve(clientID string) int64
	ConnectedAs(s registry.Session, version int64, current bool) registry.Live
	Disconnected(s registry.Session, l registry.Live, reason string)
}

// Presence reports each client's connect and disconnect to the registry,
// which keeps connectivity and publishes AWS lifecycle events.
type Presence struct {
	mqtt.HookBase
	tracker      PresenceTracker
	access       *Access
	shuttingDown func() bool

	// ids serialises, per client id, the check that a connection is still
	// the current one with its report (see OnSessionEstablished).
	ids      keyed.Mutex[string]
	mu       sync.Mutex
	sessions map[*mqtt.Client]established
	reserved map[*mqtt.Client]reservation // session started, not yet established
	pruneAt  int

	// Generation, when set (cluster mode), is a connection's generation
	// across the cluster: higher for a newer connection of the same client
	// id, whichever node it is on. A connection's version is at least its
	// generation, so that the nodes' reports of one client id order as
	// its connections do.
	Generation func(*mqtt.Client) int64
}

// reservation is the version a connection took when its session started,
// and its identity then (a takeover releases it before the connection may
// be reported).
type reservation struct {
	session registry.Session
	version int64
	at      time.Time
}

// reservationTTL: a closed connection's reservation older than this is
// dropped (its CONNACK failed, so its session is never established).
const reservationTTL = time.Minute

// established is a connection as recorded when its session was
// established; its end is reported with the same identity, even when the
// connection's identity has been released by then (a takeover).
type established struct {
	session registry.Session
	live    registry.Live
}

// NewPresence returns the presence hook; access names identities,
// shuttingDown tells server-initiated disconnects from lost connections.
func NewPresence(t PresenceTracker, access *Access, shuttingDown func() bool) *Presence {
	return &Presence{tracker: t, access: access, shuttingDown: shuttingDown, sessions: map[*mqtt.Client]established{},
		reserved: map[*mqtt.Client]reservation{}, pruneAt: 1024}
}

// ID implements mqtt.Hook.
func (h *Presence) ID() string { return "umbra-presence" }

// Provides implements mqtt.Hook.
func (h *Presence) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablish || b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect
}

func (h *Presence) session(cl *mqtt.Client) registry.Session {
	id := h.access.Identity(cl)
	s := registry.Session{ClientID: cl.ID, Principal: id.Principal(), Address: cl.Net.Remote, ProtocolVersion: cl.Properties.ProtocolVersion}
	if id.IsDevice() {
		s.Thing = id.Name
	}
	return s
}

// tracked reports whether a client's connections are reported. A client
// whose id the broker made up is not tracked: the id is never seen again,
// and each connection would leave a connectivity record behind. Nor is a
// service using a thing's client id (granted in its client_ids): it is not
// the thing, and rollout health gates read the thing's connectivity.
func (h *Presence) tracked(cl *mqtt.Client) bool {
	return !assignedClientID(cl) && !h.access.ForeignClientID(cl)
}

// OnSessionEstablish implements mqtt.Hook. Mochi runs it before the
// connection takes over an earlier one with its client id: the version
// reserved here orders the connections as Mochi does, even when their
// OnSessionEstablished hooks run in the other order.
func (h *Presence) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if !h.tracked(cl) {
		return
	}
	r := reservation{session: h.session(cl), version: h.reserve(cl), at: time.Now()}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reserved[cl] = r
	if len(h.reserved) >= h.pruneAt {
		for c, old := range h.reserved {
			if c.Closed() && r.at.Sub(old.at) > reservationTTL {
				delete(h.reserved, c)
			}
		}
		h.pruneAt = max(2*len(h.reserved), 1024)
	}
}

// reserve reserves a connection's version, at least its generation.
func (h *Presence) reserve(cl *mqtt.Client) int64 {
	v := h.tracker.Reserve(cl.ID)
	if h.Generation != nil {
		v = max(v, h.Generation(cl))
	}
	return v
}

// OnSessionEstablished implements mqtt.Hook.
//
// Mochi runs this hook after the CONNACK, so a newer connection with the
// same client id may take this one over first and even be reported before
// it. A connection already stopped here is therefore reported into the
// history only (with the version it reserved): reported as current after
// its successor, its end (DUPLICATE_CLIENTID) would show the client
// disconnected while the successor is up. The check and the report hold
// the client id's lock, and a successor stops this connection before its
// own report takes that lock, so a connection found running here is
// reported before its successor.
func (h *Presence) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	unlock := h.ids.Lock(cl.ID)
	defer unlock()
	h.mu.Lock()
	r, ok := h.reserved[cl]
	delete(h.reserved, cl)
	h.mu.Unlock()
	if !ok {
		// Not seen starting its session (or its reservation was dropped).
		// A takeover may have released the identity since: the client is
		// tracked only if it still names itself.
		if !h.tracked(cl) {
			return
		}
		r.session, r.version = h.session(cl), h.reserve(cl)
	}
	s := r.session
	live := h.tracker.ConnectedAs(s, r.version, !cl.Closed())
	h.mu.Lock()
	h.sessions[cl] = established{session: s, live: live}
	h.mu.Unlock()
}

// OnDisconnect implements mqtt.Hook.
func (h *Presence) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	h.mu.Lock()
	e, ok := h.sessions[cl]
	delete(h.sessions, cl)
	h.mu.Unlock()
	if !ok {
		return // never established (refused at CONNECT)
	}
	unlock := h.ids.Lock(e.session.ClientID)
	defer unlock()
	h.tracker.Disconnected(e.session, e.live, h.reason(cl, err))
}

// reason maps why a connection ended to AWS's disconnectReason values.
func (h *Presence) reason(cl *mqtt.Client, err error) string {
	cause := cl.StopCause()
	switch {
	case errors.Is(cause, packets.CodeDisconnect), errors.Is(cause, packets.CodeDisconnectWillMessage):
		return "CLIENT_INITIATED_DISCONNECT"
	case errors.Is(cause, packets.ErrSessionTakenOver):
		return "DUPLICATE_CLIENTID"
	case errors.Is(cause, packets.ErrNotAuthorized):
		return "AUTH_ERROR"
	case errors.Is(cause, packets.ErrServerShuttingDown), h.shuttingDown():
		return "SERVER_INITIATED_DISCONNECT"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(cause, os.ErrDeadlineExceeded), errors.Is(cause, packets.ErrKeepAliveTimeout):
		return "MQTT_KEEP_ALIVE_TIMEOUT"
	}
	var code packets.Code
	if errors.As(cause, &code) && code.Code >= 0x80 {
		return "CLIENT_ERROR"
	}
	return "CONNECTION_LOST"
}
