// Package broker assembles Umbra: the bbolt store, the Mochi MQTT server
// with Umbra's hooks, the MQTT (TCP, WebSocket) listeners and the HTTP
// listener that carries the REST API, health checks and metrics.
//
// It is the only package that knows every other one. Embedders (and tests)
// use it directly:
//
//	b, err := broker.New(broker.Options{DataDir: dir, MQTTAddr: "127.0.0.1:0"})
//	if err != nil { ... }
//	if err := b.Start(ctx); err != nil { ... }
//	defer b.Shutdown(ctx)
//	fmt.Println(b.MQTTAddr())
package broker

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/system"

	"github.com/umbra-iot/umbra/internal/artifact"
	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/awsjobs"
	"github.com/umbra-iot/umbra/internal/events"
	"github.com/umbra-iot/umbra/internal/hooks"
	"github.com/umbra-iot/umbra/internal/limits"
	"github.com/umbra-iot/umbra/internal/rollout"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/shadow"
)

// sessionLinger bounds how long MQTT session changes wait in memory before
// their group commit; see README "What a crash can lose".
const sessionLinger = 5 * time.Millisecond

// Broker is one Umbra instance. Create it with New, then Start it.
type Broker struct {
	opts Options
	log  *slog.Logger

	tlsConf *tls.Config
	policy  *auth.Policy
	authn   *auth.Authenticator // nil when authentication is off
	access  *hooks.Access
	conns   *limits.Conns

	db       *store.DB
	mqtt     *mqtt.Server
	shadows  *shadow.Service
	router   *hooks.ShadowRouter // MQTT shadow requests, pipelined per connection
	registry *registry.Registry
	rollouts *rollout.Engine
	jobs     *awsjobs.Service
	events   events.Hub
	// artifacts is the firmware store (artifacts.go).
	artifacts *artifact.Service
	// artifactRefs orders artifact deletion against rollouts and jobs being
	// recorded with an artifact (rollout.ReferenceHolder).
	artifactRefs sync.RWMutex
	// ctx bounds work started by hooks; cancelled after connections close.
	ctx     context.Context
	cancel  context.CancelFunc
	metrics *metrics
	httpSrv *http.Server

	mqttLn, wsLn, httpLn net.Listener
	extra                []extraListener // Options.Listeners

	started      atomic.Bool
	shuttingDown atomic.Bool
	shutdownOnce sync.Once
	shutdownErr  error
	bg           *owner // every background goroutine (owner.go)

	streams     chan struct{} // closed when shutdown starts: ends event streams
	stopStreams func()

	edgeState // listeners' health, readiness, edge metrics (edge.go)

	clusterState // cluster mode (cluster.go); zero on a single node
}

// New validates opts and returns a Broker that has not opened anything yet.
func New(opts Options) (*Broker, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("invalid options: %w", err)
	}
	b := &Broker{opts: o, log: o.Logger, conns: &limits.Conns{Max: o.Limits.MaxConnsPerIP}, streams: make(chan struct{}), bg: newOwner()}
	b.stopStreams = sync.OnceFunc(func() { close(b.streams) })
	var err error
	if b.tlsConf, err = o.TLS.load(); err != nil {
		return nil, fmt.Errorf("invalid options: %w", err)
	}
	if b.policy, err = auth.NewPolicy(o.Auth.Services, o.Auth.APIKeys); err != nil {
		return nil, fmt.Errorf("invalid options: %w", err)
	}
	if _, err = auth.ParseDenyList(o.Auth.DeniedCertificates); err != nil {
		return nil, fmt.Errorf("invalid options: %w", err)
	}
	return b, nil
}

// Start opens the data directory, binds every listener and starts serving.
// It returns once the listeners are bound (so the Addr accessors are valid)
// or with the first error, after undoing what it had done.
func (b *Broker) Start(ctx context.Context) (err error) {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("broker already started")
	}
	defer func() {
		if err != nil {
			b.closeAll()
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	b.metrics = newMetrics(b.info, b.dbSize)
	b.metrics.reg.MustRegister(fleetCollector{b})
	b.metrics.reg.MustRegister(storePagesCounter(b))
	b.startEdge()
	b.db, err = store.Open(b.opts.DataDir, store.Options{
		NoSync:      b.opts.UnsafeNoSync,
		OnCommit:    b.commitOK,
		StageLinger: sessionLinger,
		Logger:      b.log.With("component", "store"),
		// Readiness: /readyz is 503 while commits fail (edge.go).
		OnCommitError: b.commitFailed,
		CommitFault:   b.commitFault,
	})
	if err != nil {
		return err
	}
	if err := b.openCluster(ctx); err != nil {
		return err
	}
	b.mqtt = mqtt.New(b.mochiOptions())
	if err := b.addHooks(); err != nil {
		return err
	}
	if err := b.bind(); err != nil {
		return err
	}
	if err := b.mqtt.Serve(); err != nil {
		return fmt.Errorf("start mqtt: %w", err)
	}
	if err := b.startBridge(ctx); err != nil {
		return err
	}
	if b.clusterSessions != nil {
		b.bg.Go("cluster-sessions", b.clusterSessions.DropForeign)
	}
	b.serveHTTP()
	b.log.Info("umbra started", "data", b.db.Path(), "mqtt", b.MQTTAddr(), "ws", b.WSAddr(), "http", b.HTTPAddr())
	return nil
}

// mochiOptions turns Umbra's options into Mochi's, replacing the Mochi
// defaults that do not suit a fleet broker.
func (b *Broker) mochiOptions() *mqtt.Options {
	o := b.opts
	caps := mqtt.NewDefaultServerCapabilities()
	// Acknowledgements do not repeat the publish's user properties: legal,
	// but bytes on constrained links and it breaks Paho's test client.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	caps.MaximumPacketSize = uint32(o.MaxPacketSize)
	caps.MaximumClientWritesPending = int32(o.ClientQueue)
	caps.MaximumInflight = uint16(o.MaxInflight)
	caps.MaximumMessageExpiryInterval = int64(o.MessageExpiry / time.Second)
	caps.MaximumSessionExpiryInterval = uint32(min(int64(o.SessionExpiry/time.Second), math.MaxUint32))
	if o.MaxClients > 0 {
		caps.MaximumClients = int64(o.MaxClients)
	}
	caps.TopicAliasMaximum = TopicAliasMaximum
	return &mqtt.Options{
		Capabilities:             caps,
		InlineClient:             true,
		SysTopicResendInterval:   int64(o.SysInterval / time.Second),
		Logger:                   quiet(b.log, slog.LevelWarn).With("component", "mqtt"),
		ClientNetReadBufferSize:  1024,
		ClientNetWriteBufferSize: 1024,
	}
}

func (b *Broker) addHooks() error {
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if b.opts.Auth.Enabled {
		b.authn = &auth.Authenticator{Policy: b.policy, Secrets: b.db, ValidThing: validThing}
	}
	b.access = hooks.NewAccess(b.authn, b.log.With("component", "auth"))
	var err error
	b.registry, err = registry.Open(registry.Config{
		Store: b.registryStore(), Shadows: b.indexShadows(), Publisher: mqttPublisher{b.mqtt},
		Policy: b.opts.Registration, RecreateDeleted: b.opts.RecreateDeletedThings, Logger: b.log.With("component", "registry"),
		SnapshotPath: b.indexSnapshotPath(), Shared: b.clusterMeta != nil,
		OnConnectivity: func(id string, c registry.Connectivity) { b.events.PublishJSON("connectivity", id, c) },
		OnRevoked:      b.endRevoked,
	})
	if err != nil {
		return err
	}
	b.access.Admit = b.admit
	b.shadows = b.newShadowService()
	if err := b.openJobs(); err != nil {
		return fmt.Errorf("jobs: %w", err)
	}
	if err := b.openArtifacts(); err != nil {
		return err
	}
	b.rollouts, err = rollout.Open(rollout.Config{
		Executions: b.jobs,
		Artifacts:  rolloutArtifacts{b},
		Fleet:      b.registry, Shadows: b.shadows, Store: b.fenceEngine(b.rolloutStore()), Publisher: mqttPublisher{b.mqtt},
		Logger: b.log.With("component", "rollout"), Clock: b.opts.RolloutClock,
		OnEvent: func(id string, ev rollout.Event) {
			b.events.PublishJSON("rollout", ev.Thing, map[string]any{"rollout": id, "event": ev})
		},
	})
	if err != nil {
		return fmt.Errorf("rollouts: %w", err)
	}
	if err := b.followCluster(b.ctx); err != nil {
		return err
	}
	b.runEngines() // cluster_engine.go: under the engine lease on a cluster node
	sessions := hooks.NewSessions(b.db, hooks.SessionBuckets{
		Clients: store.BucketClients, Subscriptions: store.BucketSubscriptions,
		Retained: store.BucketRetained, Inflight: store.BucketInflight,
	})
	b.wireAccess(sessions)
	presence := hooks.NewPresence(b.registry, b.access, b.shuttingDown.Load)
	b.router = hooks.NewShadowRouter(b.ctx, b.shadows, b.principal)
	// As many requests under way per connection as a principal may have
	// (limits.shadow_in_flight): more would only be refused with 429.
	b.router.Pipeline(b.mqtt, cmp.Or(max(b.opts.Limits.ShadowInFlight, 0), unlimitedPipelineDepth))
	hs := []mqtt.Hook{b.access, b.router, hooks.NewJobs(b.ctx, b.jobs),
		presence,
		hooks.NewProtocol(b.ctx, uint16(min(b.opts.MaxKeepAlive/time.Second, math.MaxUint16)), b.opts.DeniedPublishBackoff)}
	quota, err := b.quotaHook()
	if err != nil {
		return err
	}
	hs = append(hs, quota)
	cs, err := b.clusterSessionHook(!b.opts.EphemeralSessions)
	if err != nil {
		return err
	}
	if cs != nil {
		hs = append([]mqtt.Hook{cs}, hs...)
		presence.Generation = b.clusterSessions.Generation
	}
	if !b.opts.EphemeralSessions {
		hs = append(hs, sessions)
	}
	bridged, err := b.bridgeHooks()
	if err != nil {
		return err
	}
	hs = append(hs, bridged...)
	if cs != nil {
		hs = append(hs, b.clusterSessions.Last())
	}
	for _, h := range hs {
		if err := b.mqtt.AddHook(h, nil); err != nil {
			return fmt.Errorf("add hook %s: %w", h.ID(), err)
		}
	}
	return nil
}

// bind opens every enabled listener so that errors such as a port in use
// are reported by Start, not later from a goroutine.
func (b *Broker) bind() error {
	listen := func(name, addr string) (net.Listener, error) {
		if addr == Off {
			return nil, nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listener on %s: %w", name, addr, err)
		}
		return b.watch(name, ln), nil // survives temporary accept errors
	}
	var err error
	if b.mqttLn, err = listen("mqtt", b.opts.MQTTAddr); err != nil {
		return err
	}
	if b.wsLn, err = listen("websocket", b.opts.WSAddr); err != nil {
		return err
	}
	if b.httpLn, err = listen("http", b.opts.HTTPAddr); err != nil {
		return err
	}
	if b.mqttLn != nil {
		l := &tcpListener{id: "mqtt", ln: b.mqttLn, tls: b.opts.TLS.tlsFor(b.tlsConf, b.opts.TLS.ClientCerts), connectTimeout: b.opts.ConnectTimeout, log: b.log, limit: b.conns, writeTimeout: b.opts.WriteTimeout}
		if err := b.mqtt.AddListener(l); err != nil {
			return err
		}
	}
	if b.wsLn != nil {
		if err := b.mqtt.AddListener(b.newWS("ws", b.wsLn, b.opts.TLS.tlsFor(b.tlsConf, b.opts.TLS.WSClientCerts))); err != nil {
			return err
		}
	}
	return b.bindExtra()
}

// newWS builds an MQTT-over-WebSocket listener with the broker's origin
// policy (web pages of other origins are refused) and limits.
func (b *Broker) newWS(name string, ln net.Listener, conf *tls.Config) *wsListener {
	ws := newWSListener(name, ln, conf, b.opts.ConnectTimeout, b.log, b.conns)
	ws.writeTimeout = b.opts.WriteTimeout
	ws.origins, _ = newOriginPolicy(b.opts.AllowedOrigins) // validated in New
	if b.httpLn != nil {
		_, port, _ := net.SplitHostPort(b.httpLn.Addr().String())
		ws.origins.ownPorts = []string{port}
	}
	ws.refused = func() { b.edge.httpRefused.WithLabelValues("ws_origin").Inc() }
	return ws
}

func addr(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// admit applies the registration policy to a connecting device; with
// authentication off, any client whose id is a thing name counts as one.
func (b *Broker) admit(id auth.Identity) error {
	switch {
	case id.Kind == auth.Device:
		return b.registry.Admit(b.ctx, id.Name)
	case id.Kind == auth.Anonymous && id.ClientIDAssigned:
		// A client that sent no id (mosquitto_sub without -i, a script) is
		// a tool, like one whose id is no thing name: registering its
		// made-up id would leave a thing behind for every connection.
		return nil
	case id.Kind == auth.Anonymous && validThing(id.ClientID):
		return b.registry.Admit(b.ctx, id.ClientID)
	}
	return nil
}

// Events is the live event hub (what GET /api/events streams).
func (b *Broker) Events() *events.Hub { return &b.events }

// Rollouts is the jobs and rollouts engine.
func (b *Broker) Rollouts() *rollout.Engine { return b.rollouts }

// Registry is the device registry and fleet index.
func (b *Broker) Registry() *registry.Registry { return b.registry }

// principal names an MQTT client in shadow history.
func (b *Broker) principal(cl *mqtt.Client) string { return b.access.Identity(cl).Principal() }

// MQTTAddr is the bound MQTT-over-TCP address ("" when disabled or not started).
func (b *Broker) MQTTAddr() string { return addr(b.mqttLn) }

// WSAddr is the bound MQTT-over-WebSocket address.
func (b *Broker) WSAddr() string { return addr(b.wsLn) }

// HTTPAddr is the bound HTTP address.
func (b *Broker) HTTPAddr() string { return addr(b.httpLn) }

// TLS reports whether the MQTT, WebSocket and HTTP listeners use TLS.
func (b *Broker) TLS() bool { return b.tlsConf != nil }

// MQTT is the embedded Mochi server, for in-process publishing and
// subscribing (its inline client is enabled).
func (b *Broker) MQTT() *mqtt.Server { return b.mqtt }

func (b *Broker) info() *system.Info {
	if b.mqtt == nil {
		return &system.Info{}
	}
	return b.mqtt.Info
}

func (b *Broker) dbSize() int64 {
	if b.db == nil {
		return 0
	}
	return b.db.Size()
}

// Shutdown stops accepting connections, closes client connections (their
// session state is written), drains in-flight HTTP requests and shadow
// commits, and closes the database. It honours ctx's deadline, is safe to
// call more than once and on a broker that never started.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.shutdownOnce.Do(func() {
		b.shuttingDown.Store(true)
		if !b.started.Load() {
			return
		}
		b.shutdownErr = b.shutdown(ctx)
	})
	return b.shutdownErr
}

func (b *Broker) shutdown(ctx context.Context) error {
	var errs []error
	if b.httpSrv != nil {
		if err := b.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
	}
	// Background goroutines end (a rollout step under way is finished)
	// while the store is open and devices are still connected.
	bgStopped := true
	if err := b.bg.Stop(ctx); err != nil {
		errs = append(errs, err)
		bgStopped = false
	}
	done := make(chan struct{})
	go func() {
		_ = b.mqtt.Close() // closes listeners and connections, waits for read loops
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("mqtt shutdown: %w", ctx.Err()))
	}
	// Shadow requests still under way finish while the store is open.
	waited := make(chan struct{})
	go func() {
		b.router.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-ctx.Done():
	}
	b.cancel()
	if bgStopped {
		b.saveIndex(ctx) // nothing writes any more
	} else {
		b.log.Warn("fleet index snapshot not written: background work did not stop in time; the next start rebuilds the index")
	}
	if err := b.db.Close(); err != nil {
		errs = append(errs, err)
	}
	b.closeBridge()
	b.closeCluster()
	b.log.Info("umbra stopped")
	return errors.Join(errs...)
}

// unlimitedPipelineDepth is how many shadow requests of one connection are
// worked on at once when limits.shadow_in_flight is off (-1).
const unlimitedPipelineDepth = 32

// closeAll undoes a failed Start.
func (b *Broker) closeAll() {
	for _, ln := range []net.Listener{b.mqttLn, b.wsLn, b.httpLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	for _, l := range b.extra {
		_ = l.ln.Close()
	}
	if b.cancel != nil {
		b.cancel()
	}
	_ = b.bg.Stop(context.Background())
	if b.db != nil {
		_ = b.db.Close()
	}
	b.closeBridge()
	b.closeCluster()
}

// DataPath is the database file ("" before Start).
func (b *Broker) DataPath() string {
	if b.db == nil {
		return ""
	}
	return b.db.Path()
}
