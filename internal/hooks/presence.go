package hooks

import (
	"errors"
	"os"
	"sync"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/registry"
)

// PresenceTracker records connections (registry.Registry does).
type PresenceTracker interface {
	Connected(s registry.Session) registry.Live
	Disconnected(s registry.Session, l registry.Live, reason string)
}

// Presence reports each client's connect and disconnect to the registry,
// which keeps connectivity and publishes AWS lifecycle events.
type Presence struct {
	mqtt.HookBase
	tracker      PresenceTracker
	access       *Access
	shuttingDown func() bool

	mu       sync.Mutex
	sessions map[*mqtt.Client]established
}

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
	return &Presence{tracker: t, access: access, shuttingDown: shuttingDown, sessions: map[*mqtt.Client]established{}}
}

// ID implements mqtt.Hook.
func (h *Presence) ID() string { return "umbra-presence" }

// Provides implements mqtt.Hook.
func (h *Presence) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect
}

func (h *Presence) session(cl *mqtt.Client) registry.Session {
	id := h.access.Identity(cl)
	s := registry.Session{ClientID: cl.ID, Principal: id.Principal(), Address: cl.Net.Remote, ProtocolVersion: cl.Properties.ProtocolVersion}
	if id.IsDevice() {
		s.Thing = id.Name
	}
	return s
}

// OnSessionEstablished implements mqtt.Hook. A client whose id the broker
// made up is not tracked: the id is never seen again, and each connection
// would leave a connectivity record behind. Nor is a service using a
// thing's client id (granted in its client_ids): it is not the thing, and
// rollout health gates read the thing's connectivity.
func (h *Presence) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if assignedClientID(cl) || h.access.ForeignClientID(cl) {
		return
	}
	s := h.session(cl)
	live := h.tracker.Connected(s)
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
