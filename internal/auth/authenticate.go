package auth

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
)

// ConnectInfo is what an MQTT CONNECT offers as proof of identity.
type ConnectInfo struct {
	ClientID string
	Username string
	Password []byte
	// PeerCertificates are the client certificates verified by the TLS
	// handshake (empty without TLS or without a client certificate).
	PeerCertificates []*x509.Certificate
	// Remote is the source address (host:port or host), for throttling.
	Remote string
}

// SecretStore holds the bcrypt hashes of device secrets.
type SecretStore interface {
	DeviceSecret(thing string) (hash []byte, ok bool, err error)
}

// Authenticator turns a CONNECT into an Identity.
type Authenticator struct {
	Policy   *Policy
	Secrets  SecretStore
	verifier Verifier
	failures atomic.Uint64
	// ValidThing reports whether a client id is a well-formed thing name.
	ValidThing func(string) bool
	// Denied, when set, refuses the client certificates it lists.
	Denied *DenyList
	// Throttle, when set, refuses password logins from a source address or
	// for a client id that failed too often, before any bcrypt.
	Throttle *Throttle
	// IsThing, when set, reports whether a thing of that name is
	// registered: its name as a client id belongs to it (and to services
	// granted it, ServiceConfig.ClientIDs).
	IsThing func(string) bool
}

// NamesOtherThing reports whether id uses as client id the name of a
// registered thing it is not: a granted service. Its connection is not the
// thing's (no connectivity is recorded for it under the thing's name).
func (a *Authenticator) NamesOtherThing(id Identity) bool {
	return id.Kind != Device && a.IsThing != nil && a.IsThing(id.ClientID)
}

// Errors of Authenticate; their text is safe to log (no secrets).
var (
	ErrBadCredentials = errors.New("bad credentials")
	ErrIdentity       = errors.New("client id does not match the identity")
	ErrThrottled      = errors.New("too many failed logins, try again later")
)

// Authenticate checks a CONNECT. A client certificate, when present,
// decides: the client id must be a thing name the certificate names (CN or
// DNS SAN), and the username is then ignored (AWS SDKs put metrics there).
// Without one, a username naming a configured service logs in as that
// service with its password; anything else is a device whose client id is
// its thing name and whose password is its secret.
func (a *Authenticator) Authenticate(c ConnectInfo) (Identity, error) {
	id, err := a.authenticate(c)
	if err != nil {
		a.failures.Add(1)
	}
	return id, err
}

// Failures is the number of refused authentications so far (including
// those counted with Refused).
func (a *Authenticator) Failures() uint64 { return a.failures.Load() }

// Refused counts a login refused after authentication (a disabled or
// deleted thing, a will topic not allowed, a client id held by another
// principal).
func (a *Authenticator) Refused() { a.failures.Add(1) }

// Throttled is the number of logins refused unchecked by the throttle.
func (a *Authenticator) Throttled() uint64 {
	if a.Throttle == nil {
		return 0
	}
	return a.Throttle.Throttled()
}

func (a *Authenticator) authenticate(c ConnectInfo) (Identity, error) {
	if len(c.PeerCertificates) > 0 {
		cert := c.PeerCertificates[0]
		if a.Denied.Denies(cert) {
			return Identity{}, fmt.Errorf("%w: serial %s presented for client id %q", ErrRevoked, cert.SerialNumber.Text(16), c.ClientID)
		}
		names := append([]string{cert.Subject.CommonName}, cert.DNSNames...)
		if !a.ValidThing(c.ClientID) || !slices.Contains(names, c.ClientID) {
			return Identity{}, fmt.Errorf("%w: certificate names %q, client id is %q", ErrIdentity, names, c.ClientID)
		}
		return Identity{Kind: Device, Name: c.ClientID, ClientID: c.ClientID, Username: c.Username, Method: "certificate"}, nil
	}
	if _, ok := a.Policy.Service(c.Username); ok && c.Username != "" {
		key := "service:" + c.Username
		if a.Throttle != nil && a.Throttle.Blocked(key, host(c.Remote)) {
			return Identity{}, fmt.Errorf("%w: service %q from %s", ErrThrottled, c.Username, host(c.Remote))
		}
		if !a.Policy.CheckServicePassword(c.Username, c.Password) {
			if a.Throttle != nil {
				a.Throttle.Failed(key, host(c.Remote))
			}
			return Identity{}, fmt.Errorf("%w: service %q", ErrBadCredentials, c.Username)
		}
		if a.Throttle != nil {
			a.Throttle.Succeeded(key)
		}
		if c.ClientID == "" || strings.ContainsRune(c.ClientID, 0) {
			return Identity{}, fmt.Errorf("%w: service %q needs a client id", ErrIdentity, c.Username)
		}
		if svc, _ := a.Policy.Service(c.Username); a.IsThing != nil && a.IsThing(c.ClientID) && !svc.MayUseClientID(c.ClientID) {
			return Identity{}, fmt.Errorf("%w: client id %q names a thing and service %q is not granted it (client_ids)", ErrIdentity, c.ClientID, c.Username)
		}
		return Identity{Kind: Service, Name: c.Username, ClientID: c.ClientID, Username: c.Username, Method: "password"}, nil
	}
	if !a.ValidThing(c.ClientID) {
		return Identity{}, fmt.Errorf("%w: client id %q is not a thing name", ErrIdentity, c.ClientID)
	}
	if c.Username != "" && c.Username != c.ClientID && !strings.HasPrefix(c.Username, "?") {
		return Identity{}, fmt.Errorf("%w: username %q is neither the thing name nor SDK metrics", ErrIdentity, c.Username)
	}
	if len(c.Password) == 0 {
		return Identity{}, fmt.Errorf("%w: device %q sent no secret and no certificate", ErrBadCredentials, c.ClientID)
	}
	hash, ok, err := a.Secrets.DeviceSecret(c.ClientID)
	if err != nil {
		return Identity{}, fmt.Errorf("reading credentials of %q: %w", c.ClientID, err)
	}
	if !ok {
		return Identity{}, fmt.Errorf("%w: device %q has no secret", ErrBadCredentials, c.ClientID)
	}
	if a.Throttle != nil && !a.verifier.Known(c.ClientID, hash, c.Password) && a.Throttle.Blocked(c.ClientID, host(c.Remote)) {
		return Identity{}, fmt.Errorf("%w: device %q from %s", ErrThrottled, c.ClientID, host(c.Remote))
	}
	if !a.verifier.Verify(c.ClientID, hash, c.Password) {
		if a.Throttle != nil {
			a.Throttle.Failed(c.ClientID, host(c.Remote))
		}
		return Identity{}, fmt.Errorf("%w: device %q", ErrBadCredentials, c.ClientID)
	}
	if a.Throttle != nil {
		a.Throttle.Succeeded(c.ClientID)
	}
	return Identity{Kind: Device, Name: c.ClientID, ClientID: c.ClientID, Username: c.Username, Method: "secret"}, nil
}

// MayTakeOver reports whether a connection authenticated as next may take
// over the session of the same client id held by prev (kicking prev's
// connection and inheriting its subscriptions and queued messages): the
// same principal may; so may the thing the client id names, and a service
// granted that thing's client id (Authenticate checked the grant); a
// session without an identity (or restored from storage and guessed to be a
// device that is not registered) may be taken by anyone entitled to the id.
// Anyone else is refused, so one service cannot take another's session.
func (a *Authenticator) MayTakeOver(next, prev Identity) bool {
	switch {
	case prev.Kind == Unauthenticated:
		return true
	case prev.Method == "restored" && prev.Kind == Device && (a.IsThing == nil || !a.IsThing(prev.Name)):
		return true // restored, guessed from a client id that names no thing
	case next.Kind == prev.Kind && next.Name == prev.Name:
		return true
	case next.Kind == Device && next.Name == next.ClientID:
		return true
	case next.Kind == Service && a.IsThing != nil && a.IsThing(next.ClientID):
		return true
	}
	return false
}

// Forget drops cached verification state for a thing whose secret changed.
func (a *Authenticator) Forget(thing string) { a.verifier.Forget(thing) }

// host is the address without its port (throttling is per host).
func host(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
