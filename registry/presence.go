package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Admit applies the registration policy to a device about to connect:
// strict refuses an unregistered thing; auto registers it, unless it was
// deleted (Config.RecreateDeleted). A disabled thing (DisabledAttribute) is
// refused.
func (r *Registry) Admit(ctx context.Context, thing string) error {
	t, err := r.Thing(thing)
	switch {
	case err == nil:
		if t.Attributes[DisabledAttribute] == "true" {
			return fmt.Errorf("%w: thing %q is disabled (attribute %s)", ErrDisabled, thing, DisabledAttribute)
		}
		return nil
	case !errors.Is(err, ErrNotFound):
		return err
	case r.cfg.Policy == PolicyStrict:
		return fmt.Errorf("thing %q is not registered (registration policy: strict)", thing)
	}
	if !r.cfg.RecreateDeleted {
		var deleted bool
		if err := r.cfg.Store.ViewKV(func(kv KV) error { deleted = kv.Get(bucketDeleted, thing) != nil; return nil }); err != nil {
			return err
		}
		if deleted {
			return fmt.Errorf("%w: thing %q was deleted; create it again to let it connect (registry.recreate_deleted is off)", ErrDisabled, thing)
		}
	}
	_, err = r.CreateThing(ctx, NewThing{Name: thing})
	if errors.Is(err, ErrExists) { // registered concurrently
		return nil
	}
	return err
}

// Session describes a connection for lifecycle events.
type Session struct {
	ClientID        string
	Principal       string
	Address         string
	ProtocolVersion byte
	// Thing is the thing the client is, "" when it is not a device.
	Thing string
}

// lifecycle is the AWS IoT lifecycle event payload.
type lifecycle struct {
	ClientID                  string `json:"clientId"`
	Timestamp                 int64  `json:"timestamp"`
	EventType                 string `json:"eventType"`
	SessionIdentifier         string `json:"sessionIdentifier"`
	PrincipalIdentifier       string `json:"principalIdentifier"`
	ThingName                 string `json:"thingName,omitempty"`
	IPAddress                 string `json:"ipAddress,omitempty"`
	VersionNumber             int64  `json:"versionNumber"`
	ClientInitiatedDisconnect *bool  `json:"clientInitiatedDisconnect,omitempty"`
	DisconnectReason          string `json:"disconnectReason,omitempty"`
}

// Live is a connection Connected recorded, for Disconnected: its session
// id and its connect count.
type Live struct {
	Session string
	Version int64
}

// Connected records a connection and publishes
// $aws/events/presence/connected/{clientId}. Disconnected takes what it
// returns. It is ConnectedAs(s, Reserve(s.ClientID), true).
func (r *Registry) Connected(s Session) Live {
	return r.ConnectedAs(s, r.Reserve(s.ClientID), true)
}

// Reserve takes the version number of a client's next connection. A broker
// reserves it when the connection starts its session, before it takes over
// an earlier connection with the same client id, so versions follow the
// order of the connections even when their Connected reports do not (a
// connection may be taken over before it is reported).
func (r *Registry) Reserve(clientID string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, _ := r.connLocked(clientID)
	v := max(r.reserved[clientID], c.Version) + 1
	r.reserved[clientID] = v
	return v
}

// ConnectedAs records a connection with a version from Reserve and
// publishes $aws/events/presence/connected/{clientId}.
//
// current says the connection is still the client's newest (it runs, no
// later one took it over): it becomes the client's connectivity, under a
// new version if a connection reported before it had a later one (they
// started their sessions concurrently). A connection already taken over
// when it is reported (current false) goes into the history only, like its
// end will: the client's connectivity stays with its successor.
func (r *Registry) ConnectedAs(s Session, version int64, current bool) Live {
	now := r.cfg.Clock().UnixMilli()
	var sid [16]byte
	_, _ = rand.Read(sid[:])
	session := hex.EncodeToString(sid[:])
	// One client id's connects and ends are stored, indexed and published
	// in the order they change its connectivity.
	unlock := r.locks.Lock(connLock(s.ClientID))
	defer unlock()
	r.mu.Lock()
	c, _ := r.connLocked(s.ClientID)
	if current {
		if version <= c.Version {
			version = max(r.reserved[s.ClientID], c.Version) + 1
			r.reserved[s.ClientID] = version
		}
		c.Connected, c.Timestamp, c.LastConnect = true, now, now
		c.DisconnectReason, c.ClientAddress, c.ProtocolVersion = "", s.Address, s.ProtocolVersion
		c.Version = version
		r.conn[s.ClientID] = c
		if r.reserved[s.ClientID] <= version {
			delete(r.reserved, s.ClientID) // no reservation beyond the current one
		}
	}
	r.mu.Unlock()
	if current {
		r.persistConn(s.ClientID, c)
	} else {
		r.stageTransitionOf(s.ClientID, Transition{Connected: true, Timestamp: now, Version: version,
			ClientAddress: s.Address, ProtocolVersion: s.ProtocolVersion})
	}
	r.publish("connected", lifecycle{
		ClientID: s.ClientID, Timestamp: now, EventType: "connected", SessionIdentifier: session,
		PrincipalIdentifier: s.Principal, ThingName: s.Thing, IPAddress: host(s.Address), VersionNumber: version,
	})
	return Live{Session: session, Version: version}
}

// Disconnected records the end of connection l (reason per AWS's
// disconnectReason values) and publishes
// $aws/events/presence/disconnected/{clientId} with l's version number.
//
// A device that reconnects at once (or a second client with its id) may be
// connected again before its old connection's end is reported: the old end
// then goes into the history only, and the client stays connected.
//
// A connection taken over before it was reported (ConnectedAs with
// current false) is never the current one: its end goes into the history.
func (r *Registry) Disconnected(s Session, l Live, reason string) {
	now := r.cfg.Clock().UnixMilli()
	unlock := r.locks.Lock(connLock(s.ClientID))
	defer unlock()
	r.mu.Lock()
	c, _ := r.connLocked(s.ClientID)
	current := c.Version == l.Version
	if current {
		c.Connected, c.Timestamp, c.LastDisconnect, c.DisconnectReason = false, now, now, reason
		r.conn[s.ClientID] = c
	}
	r.mu.Unlock()
	if current {
		r.persistConn(s.ClientID, c)
	} else {
		r.stageTransitionOf(s.ClientID, Transition{Timestamp: now, Version: l.Version, Reason: reason})
	}
	clientInitiated := reason == "CLIENT_INITIATED_DISCONNECT"
	r.publish("disconnected", lifecycle{
		ClientID: s.ClientID, Timestamp: now, EventType: "disconnected", SessionIdentifier: l.Session,
		PrincipalIdentifier: s.Principal, ThingName: s.Thing, VersionNumber: l.Version,
		ClientInitiatedDisconnect: &clientInitiated, DisconnectReason: reason,
	})
}

func connLock(clientID string) string { return "conn:" + clientID }

func (r *Registry) persistConn(clientID string, c Connectivity) {
	b, _ := json.Marshal(c)
	r.cfg.Store.StageKV(bucketConn, clientID, b)
	r.stageTransitionOf(clientID, transition(c))
	r.ix.set(clientID, "connectivity", connValues(c))
	if r.cfg.OnConnectivity != nil {
		r.cfg.OnConnectivity(clientID, c)
	}
}

// Connectivity returns a client's connectivity.
func (r *Registry) Connectivity(clientID string) (Connectivity, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.connLocked(clientID)
}

func (r *Registry) publish(kind string, ev lifecycle) {
	// AWS publishes no lifecycle events for client ids with wildcards.
	if r.cfg.Publisher == nil || strings.ContainsAny(ev.ClientID, "+#/") {
		return
	}
	b, _ := json.Marshal(ev)
	if err := r.cfg.Publisher.Publish("$aws/events/presence/"+kind+"/"+ev.ClientID, b); err != nil {
		r.cfg.Logger.Warn("publish lifecycle event", "client", ev.ClientID, "error", err)
	}
}

func host(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}
