package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/shadow"
)

// Off disables a listener when used as its address.
const Off = "off"

// Defaults of the zero Options.
const (
	DefaultDataDir         = "umbra-data"
	DefaultMQTTAddr        = "127.0.0.1:1883"
	DefaultWSAddr          = "127.0.0.1:8083"
	DefaultHTTPAddr        = "127.0.0.1:8080"
	DefaultConnectTimeout  = 10 * time.Second
	DefaultWriteTimeout    = 5 * time.Second
	DefaultMaxPacketSize   = 128 * 1024
	DefaultClientQueue     = 256
	DefaultMaxInflight     = 8192
	DefaultSessionExpiry   = 7 * 24 * time.Hour
	DefaultSysInterval     = time.Minute
	DefaultHistoryVersions = 100
	DefaultTombstoneTTL    = 48 * time.Hour
	DefaultShutdownGrace   = 10 * time.Second
)

// Options configures a Broker. It is taken by value: New never changes the
// caller's copy, and the zero value is a working broker listening on
// loopback with its data in ./umbra-data.
type Options struct {
	// DataDir holds the database file. Default "umbra-data".
	DataDir string

	// Listener addresses, host:port. "" means the default, Off disables the
	// listener, port 0 picks a free port (see the Addr accessors).
	MQTTAddr string // MQTT over TCP; default 127.0.0.1:1883
	WSAddr   string // MQTT over WebSocket; default 127.0.0.1:8083
	HTTPAddr string // REST API, /healthz, /readyz, /metrics; default 127.0.0.1:8080

	// Logger receives the broker's structured logs; nil discards them.
	Logger *slog.Logger

	// MQTT hardening (Mochi's defaults are tuned for a handful of clients).

	// ConnectTimeout closes a connection that has not completed its TLS
	// handshake and sent CONNECT in time. Default 10s.
	ConnectTimeout time.Duration
	// WriteTimeout disconnects a client that has not accepted a write for
	// this long (its socket buffers full: it stopped reading), so that it
	// cannot hold up the devices whose messages reach it. Default 5s.
	WriteTimeout time.Duration
	// MaxPacketSize is the largest MQTT packet accepted; larger ones
	// disconnect the client (as AWS IoT does). Default 128 KiB, at most
	// MaxMQTTPacket.
	MaxPacketSize int
	// ClientQueue is the per-client outbound queue length; a message for a
	// client whose queue is full is dropped for that client (and counted).
	// Mochi preallocates it: 8 bytes per slot per connection. Default 256,
	// at most 2147483647.
	ClientQueue int
	// MaxInflight is the number of QoS 1/2 messages kept per client, online
	// or offline. Default 8192 (DefaultMaxInflight), at most 65535.
	MaxInflight int
	// MessageExpiry, when > 0, drops retained and queued messages older than
	// this. Default 0: kept until delivered or their session expires.
	MessageExpiry time.Duration
	// SessionExpiry caps how long a disconnected persistent session is kept.
	// Default 7 days (the AWS IoT maximum).
	SessionExpiry time.Duration
	// SysInterval is how often $SYS topics are published. Default 1 minute.
	SysInterval time.Duration
	// MaxClients caps concurrent connections; 0 means no cap.
	MaxClients int

	// TLS secures the MQTT and WebSocket listeners.
	TLS TLSOptions
	// Auth configures who may connect and what they may do.
	Auth AuthOptions
	// Limits protect clients from each other.
	Limits LimitOptions

	// Registration is the registry's registration policy: "auto" (default:
	// a device is registered on its first connection) or "strict" (only
	// registered things may connect as devices).
	Registration registry.Policy
	// RecreateDeletedThings lets a deleted thing re-register itself by
	// connecting under policy auto (off: it stays deleted until created
	// again through the API or CLI).
	RecreateDeletedThings bool

	// RolloutInterval is how often the rollout engine advances rollouts and
	// jobs (checks devices, timers, rate limits). Default 1s.
	RolloutInterval time.Duration
	// RolloutClock, when set, is the rollout engine's clock (bake times,
	// device timeouts, offline windows): tests drive it with a fake clock.
	RolloutClock func() time.Time

	// Shadow holds the document rules (limits, converge mode, strict mode).
	Shadow shadow.Options
	// HistoryVersions is how many versions of history are kept per shadow.
	// Default 100; negative keeps none.
	HistoryVersions int
	// TombstoneTTL is how long a deleted shadow's version survives so that
	// a recreated shadow continues from it. Default 48h.
	TombstoneTTL time.Duration

	// EphemeralSessions keeps MQTT session state (persistent sessions,
	// subscriptions, retained and queued messages) in memory only, as a
	// plain Mochi does. Shadows stay durable. For CI brokers and benchmarks.
	EphemeralSessions bool

	// Listeners are further MQTT listeners (TCP or WebSocket, TLS when TLS
	// is configured), each with its own client-certificate mode: e.g. a
	// second TLS port that sends no CertificateRequest, for password
	// clients on old TLS stacks.
	Listeners []ListenerOptions
	// Quotas bound the memory and disk one client can take (retained
	// messages, bytes held for its session); see QuotaOptions.
	Quotas QuotaOptions

	// UnsafeNoSync skips fsync. It exists only so benchmarks can show what
	// durability costs; acknowledged writes can be lost on a crash.
	UnsafeNoSync bool

	// AllowedOrigins are web origins ("https://app.example.com") whose
	// pages may, besides the broker's own, open MQTT over WebSocket and
	// write through the API. "*" allows every page (not advised). See
	// README "Browsers".
	AllowedOrigins []string
	// HTTP hardens the HTTP listener: timeouts, header size, connections
	// per address.
	HTTP HTTPOptions
	// Artifacts configures the firmware artifact store (artifacts.go).
	Artifacts ArtifactOptions
	// MaxKeepAlive, when > 0, caps the keep alive an MQTT 5 client may ask
	// for: one asking for more, or for none (0), is given this value in the
	// CONNACK's Server Keep Alive and held to it. MQTT 3.1.1 has no way to
	// tell a client, so 3.1.1 clients keep what they asked for. Default 0:
	// no cap.
	MaxKeepAlive time.Duration
	// DeniedPublishBackoff is the first back-off for a client whose publish
	// was denied and whose connection was therefore closed (MQTT 3.1.1,
	// which has no PUBACK reason code): its next CONNACK is held back this
	// long, doubling with each further offence up to a minute, so a device
	// that replays the denied publish after every reconnect cannot loop at
	// full speed. Default 1s; negative disables.
	DeniedPublishBackoff time.Duration
	// Cluster turns on cluster mode: shared state on a NATS JetStream
	// cluster (cluster_options.go). Zero: one node on bbolt.
	Cluster ClusterOptions
}

// DefaultDeniedPublishBackoff is Options.DeniedPublishBackoff's default.
const DefaultDeniedPublishBackoff = time.Second

// TopicAliasMaximum is the highest topic alias an MQTT 5 client may use
// towards Umbra (announced in CONNACK; a higher one ends the connection
// with DISCONNECT 0x94). Eight, as AWS IoT Core.
const TopicAliasMaximum = 8

// withDefaults returns a copy with every zero field set to its default.
func (o Options) withDefaults() Options {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.DataDir, DefaultDataDir)
	def(&o.MQTTAddr, DefaultMQTTAddr)
	def(&o.WSAddr, DefaultWSAddr)
	def(&o.HTTPAddr, DefaultHTTPAddr)
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = DefaultMaxPacketSize
	}
	if o.DeniedPublishBackoff == 0 {
		o.DeniedPublishBackoff = DefaultDeniedPublishBackoff
	}
	if o.ClientQueue == 0 {
		o.ClientQueue = DefaultClientQueue
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.SessionExpiry == 0 {
		o.SessionExpiry = DefaultSessionExpiry
	}
	if o.SysInterval == 0 {
		o.SysInterval = DefaultSysInterval
	}
	if o.HistoryVersions == 0 {
		o.HistoryVersions = DefaultHistoryVersions
	}
	if o.TombstoneTTL == 0 {
		o.TombstoneTTL = DefaultTombstoneTTL
	}
	if o.Limits.ShadowRate == 0 {
		o.Limits.ShadowRate = DefaultShadowRate
	}
	if o.Limits.ShadowInFlight == 0 {
		o.Limits.ShadowInFlight = DefaultShadowInFlight
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Shadow = o.Shadow.Normalize()
	if o.RolloutInterval == 0 {
		o.RolloutInterval = time.Second
	}
	if o.Registration == "" {
		o.Registration = registry.PolicyAuto
	}
	o.HTTP = o.HTTP.withDefaults()
	o.Cluster = o.Cluster.withDefaults()
	return o
}

// validate reports every problem with o (already defaulted) at once.
func (o Options) validate() error {
	var errs []error
	for _, a := range []struct{ name, addr string }{{"mqtt address", o.MQTTAddr}, {"websocket address", o.WSAddr}, {"http address", o.HTTPAddr}} {
		if a.addr == Off {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.name, a.addr, err))
		}
	}
	positive := func(name string, v int64) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (got %d)", name, v))
		}
	}
	positive("connect timeout", int64(o.ConnectTimeout))
	positive("write timeout", int64(o.WriteTimeout))
	positive("max packet size", int64(o.MaxPacketSize))
	positive("client queue", int64(o.ClientQueue))
	positive("max inflight", int64(o.MaxInflight))
	positive("message expiry", int64(o.MessageExpiry))
	positive("session expiry", int64(o.SessionExpiry))
	positive("sys interval", int64(o.SysInterval))
	positive("max clients", int64(o.MaxClients))
	positive("tombstone ttl", int64(o.TombstoneTTL))
	if o.MaxInflight > 65535 {
		errs = append(errs, fmt.Errorf("max inflight must be at most 65535 (got %d)", o.MaxInflight))
	}
	if o.SysInterval > 0 && o.SysInterval < time.Second {
		errs = append(errs, fmt.Errorf("sys interval must be at least 1s (got %s)", o.SysInterval))
	}
	if err := o.Shadow.Validate(); err != nil {
		errs = append(errs, err)
	}
	positive("max connections per ip", int64(o.Limits.MaxConnsPerIP))
	if q := o.Quotas.withDefaults(o.MaxPacketSize); q.RetainedBytes > 0 && q.RetainedBytes < int64(o.MaxPacketSize) {
		errs = append(errs, fmt.Errorf("retained bytes quota (%d) is below max packet size (%d): a single retained message could never fit", q.RetainedBytes, o.MaxPacketSize))
	}
	if o.Registration != registry.PolicyAuto && o.Registration != registry.PolicyStrict {
		errs = append(errs, fmt.Errorf("registration policy %q: want auto or strict", o.Registration))
	}
	if err := checkListeners(o.Listeners); err != nil {
		errs = append(errs, err)
	}
	if err := o.TLS.checkModes(o.Listeners); err != nil {
		errs = append(errs, err)
	}
	if err := o.checkExposure(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.validateEdge()...)
	errs = append(errs, o.checkBounds()...)
	errs = append(errs, o.Cluster.validate()...)
	if !o.Auth.Enabled && (len(o.Auth.Services) > 0 || len(o.Auth.APIKeys) > 0) {
		errs = append(errs, errors.New("auth: services and api_keys are configured but auth.enabled is false"))
	}
	return errors.Join(errs...)
}
