package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/hooks"
	"github.com/umbra-iot/umbra/shadow"
)

// TLSOptions turns on TLS for the MQTT (TCP) and WebSocket listeners.
type TLSOptions struct {
	CertFile string // server certificate chain (PEM)
	KeyFile  string // its private key (PEM)
	// ClientCAFile, when set, makes client certificates signed by these CAs
	// a device identity (see auth.Authenticator).
	ClientCAFile string
	// RequireClientCert refuses TLS connections without a valid client
	// certificate (devices with secrets then cannot connect). Same as
	// ClientCerts: ClientCertsRequired.
	RequireClientCert bool
	// ClientCerts is whether the MQTT (TCP) listener asks TLS clients for a
	// certificate: required, optional or none. Default (""): optional when
	// ClientCAFile is set (required with RequireClientCert), none without
	// a client CA. See ClientCertMode. The HTTP listener keeps that
	// default whatever ClientCerts says (the API uses API keys).
	ClientCerts ClientCertMode
	// WSClientCerts is the same for the WebSocket listener; "" means
	// ClientCerts.
	WSClientCerts ClientCertMode
}

func (t TLSOptions) enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// load builds the tls.Config, reading the files.
func (t TLSOptions) load() (*tls.Config, error) {
	if !t.enabled() {
		if t.ClientCAFile != "" || t.RequireClientCert {
			return nil, errors.New("tls: client certificates need a server certificate (cert_file and key_file)")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: server certificate %s / key %s: %w", t.CertFile, t.KeyFile, err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client CA %s holds no PEM certificate", t.ClientCAFile)
		}
		conf.ClientCAs = pool
	} else if t.RequireClientCert {
		return nil, errors.New("tls: require_client_cert needs client_ca_file")
	}
	return withMode(conf, t.legacyMode()), nil
}

// AuthOptions configures authentication and authorization.
type AuthOptions struct {
	// Enabled requires every MQTT client to authenticate (device
	// certificate, device secret, or service password) and every API call
	// (except /healthz and /readyz) to present an API key.
	Enabled bool
	// AllowUnauthenticatedRemote lets a broker with authentication off
	// listen on a non-loopback address. Off by default: anyone who can
	// reach such a broker could read and write every shadow.
	AllowUnauthenticatedRemote bool
	// Services are MQTT principals for apps and backends.
	Services []ServiceConfig
	// APIKeys are the HTTP API's principals.
	APIKeys []APIKeyConfig
	// LoginThrottle limits password guessing per source address and per
	// client id (zero values: auth's defaults).
	LoginThrottle ThrottleConfig
	// DeniedCertificates are revoked client certificates:
	// "serial:<hex>" or "sha256:<hex fingerprint of the DER certificate>".
	DeniedCertificates []string
}

// LimitOptions protect every client from the others.
type LimitOptions struct {
	// ShadowRate is shadow requests per second per thing (AWS: 20); a
	// negative value disables the limit.
	ShadowRate float64
	// ShadowBurst is how many may come at once; 0 means ShadowRate.
	ShadowBurst int
	// ShadowInFlight caps concurrent shadow requests per principal (AWS:
	// 10 per connection); negative disables.
	ShadowInFlight int
	// MaxConnsPerIP caps concurrent connections from one source address
	// over all MQTT listeners; 0 means no cap (fleets behind NAT share
	// addresses).
	MaxConnsPerIP int
}

// Default limits (AWS IoT's).
const (
	DefaultShadowRate     = 20
	DefaultShadowInFlight = 10
)

// checkExposure refuses non-loopback listeners without authentication.
func (o Options) checkExposure() error {
	if o.Auth.Enabled || o.Auth.AllowUnauthenticatedRemote {
		return nil
	}
	var errs []error
	addrs := []struct{ name, addr string }{{"mqtt", o.MQTTAddr}, {"websocket", o.WSAddr}, {"http", o.HTTPAddr}}
	for _, l := range o.Listeners {
		addrs = append(addrs, struct{ name, addr string }{l.Name, l.Addr})
	}
	for _, a := range addrs {
		if a.addr != Off && !IsLoopback(a.addr) {
			errs = append(errs, fmt.Errorf("%s listener %s is not on loopback but authentication is off: enable auth "+
				"(auth.enabled) or, to expose an open broker on purpose, set auth.allow_unauthenticated_remote", a.name, a.addr))
		}
	}
	return errors.Join(errs...)
}

// IsLoopback reports whether a listen address binds only to loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// deviceCredentials issues and revokes device secrets; a rotated or revoked
// secret also ends the device's current connection.
type deviceCredentials struct{ b *Broker }

func (c deviceCredentials) Issue(ctx context.Context, thing string) (string, error) {
	secret := auth.NewSecret()
	hash, err := auth.HashSecret(secret)
	if err != nil {
		return "", err
	}
	if err := c.b.db.PutDeviceSecret(ctx, thing, hash); err != nil {
		return "", err
	}
	c.kick(thing)
	return secret, nil
}

func (c deviceCredentials) Revoke(ctx context.Context, thing string) (bool, error) {
	existed, err := c.b.db.DeleteDeviceSecret(ctx, thing)
	if err == nil {
		c.kick(thing)
	}
	return existed, err
}

func (c deviceCredentials) kick(thing string) {
	if c.b.authn != nil {
		c.b.authn.Forget(thing)
	}
	if cl, ok := c.b.mqtt.Clients.Get(thing); ok && !cl.Closed() {
		_ = c.b.mqtt.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
}

// validThing is the thing-name rule devices' client ids must follow.
func validThing(s string) bool { return shadow.ValidThingName(s) }

// endRevoked ends the open connection of a thing that was disabled or
// deleted (a service granted its client id is left alone).
func (b *Broker) endRevoked(thing string) {
	if b.mqtt == nil || b.access == nil {
		return
	}
	if cl, ok := b.mqtt.Clients.Get(thing); ok && !cl.Closed() && b.access.Identity(cl).IsDevice() {
		_ = b.mqtt.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
}

// wireAccess lets the access hook see the session a connection inherits
// and drop the queued messages of it that the new owner may not receive.
func (b *Broker) wireAccess(sessions *hooks.Sessions) {
	if b.authn != nil {
		b.authn.IsThing = func(name string) bool { _, err := b.registry.Thing(name); return err == nil }
		b.authn.Throttle = auth.NewThrottle(b.opts.Auth.LoginThrottle)
		b.authn.Denied, _ = auth.ParseDenyList(b.opts.Auth.DeniedCertificates) // checked by New
	}
	count := func(f func(*auth.Authenticator) uint64) func() float64 {
		return func() float64 {
			if b.authn == nil {
				return 0
			}
			return float64(f(b.authn))
		}
	}
	b.metrics.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "umbra_mqtt_auth_failures_total",
			Help: "MQTT logins refused: bad or missing credentials, identity mismatch, throttled, revoked."}, count((*auth.Authenticator).Failures)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "umbra_mqtt_auth_throttled_total",
			Help: "MQTT password logins refused without checking, after too many failures from the address or for the client id."}, count((*auth.Authenticator).Throttled)),
	)
	b.access.Existing = b.mqtt.Clients.Get
	b.access.DropInflight = func(cl *mqtt.Client, pk packets.Packet) {
		if cl.State.Inflight.Delete(pk.PacketID) {
			atomic.AddInt64(&b.mqtt.Info.Inflight, -1)
			if !b.opts.EphemeralSessions {
				sessions.OnQosDropped(cl, pk)
			}
		}
	}
}
