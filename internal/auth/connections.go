package auth

import "sync"

// Connections binds identities to connection objects. An identity belongs to
// the connection that proved it, never to a client id string: two
// connections with one client id (a takeover, a reconnect racing the end of
// the previous connection) each keep their own, and the end of one can
// never remove or replace the identity of the other.
//
// K is the broker's connection type (hooks use *mqtt.Client); auth knows no
// MQTT.
type Connections[K comparable] struct {
	mu sync.RWMutex
	m  map[K]Identity
}

// Bind records that conn authenticated as id.
func (c *Connections[K]) Bind(conn K, id Identity) {
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[K]Identity)
	}
	c.m[conn] = id
	c.mu.Unlock()
}

// Lookup returns the identity conn authenticated as.
func (c *Connections[K]) Lookup(conn K) (Identity, bool) {
	c.mu.RLock()
	id, ok := c.m[conn]
	c.mu.RUnlock()
	return id, ok
}

// Release forgets conn's identity (its session ended or moved to another
// connection object).
func (c *Connections[K]) Release(conn K) {
	c.mu.Lock()
	delete(c.m, conn)
	c.mu.Unlock()
}

// Len is the number of bound connections.
func (c *Connections[K]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// Nobody is the identity of a connection that holds no proven identity (its
// identity was released, or it never authenticated): it may do nothing.
func Nobody(clientID string) Identity {
	return Identity{Kind: Unauthenticated, ClientID: clientID, Method: "none"}
}

// RestoredIdentity is the identity of a persistent session restored from
// storage after a restart, before its owner reconnects (messages queued for
// it are checked against it). Sessions are stored with the username only
// for services (SessionUsername), so a stored username naming a service
// means a service created the session; otherwise a client id that is a
// thing name is that device's; anything else gets nothing.
func (a *Authenticator) RestoredIdentity(clientID, username string) Identity {
	if _, ok := a.Policy.Service(username); ok && username != "" {
		return Identity{Kind: Service, Name: username, ClientID: clientID, Username: username, Method: "restored"}
	}
	if a.ValidThing(clientID) {
		return Identity{Kind: Device, Name: clientID, ClientID: clientID, Method: "restored"}
	}
	return Nobody(clientID)
}

// SessionUsername is the username kept with the identity's session (and
// stored with a persistent session): a service's name, nothing for a device
// (whose username is ignored, or is SDK metrics), so that a stored session
// can never name a service it was not created by.
func (id Identity) SessionUsername() []byte {
	switch id.Kind {
	case Service, Anonymous:
		return []byte(id.Username)
	}
	return nil
}
