package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/umbra-iot/umbra/internal/api"
	"github.com/umbra-iot/umbra/internal/artifact"
	"github.com/umbra-iot/umbra/internal/cluster"
	"github.com/umbra-iot/umbra/internal/cluster/bridge"
	"github.com/umbra-iot/umbra/internal/clusterkv"
	"github.com/umbra-iot/umbra/internal/clustersession"
	"github.com/umbra-iot/umbra/internal/clusterstore"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/shadow"
	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
)

// clusterState is the Broker's share of cluster mode (Options.Cluster):
// embedded in Broker, all zero on a single node.
type clusterState struct {
	cluster *cluster.Conn // nil on a single node
	// clusterShadows is the shadow store engine on JetStream KV.
	clusterShadows *clusterstore.ShadowStore
	// clusterSessions makes client ids and persistent sessions
	// cluster-wide (internal/clustersession).
	clusterSessions *clustersession.Hook
	// clusterMeta is the shared transactional store of the registry,
	// artifact metadata, job executions, rollouts and jobs.
	clusterMeta *clusterkv.Store
	// clusterBlobs holds the artifact images (JetStream object store).
	clusterBlobs jetstream.ObjectStore
	// metaFollow forwards other nodes' transactions to the registry
	// (StoreChanged); until the registry is open it keeps them.
	metaFollow struct {
		sync.Mutex
		opened  bool // the store has caught up at Open: what it applied until then, the registry reads at its Open
		reg     *registry.Registry
		pending []clusterkv.Change
	}
	// jsErr is the last JetStream probe's failure (nil: reachable).
	jsErr    atomic.Pointer[error]
	jsRTT    prometheus.Histogram
	jsProbes *prometheus.CounterVec
	engineState
	// bridge carries MQTT messages between the nodes (cluster_bridge.go).
	bridge *bridge.Bridge
}

// clusterProbeInterval is how often a cluster node checks that JetStream
// answers, for /readyz and the round-trip metric.
const clusterProbeInterval = time.Second

// openCluster connects to the NATS cluster and opens the shared stores.
// It runs in Start before the hooks are built, so that they use the
// shared stores.
func (b *Broker) openCluster(ctx context.Context) error {
	c := b.opts.Cluster
	if !c.Enabled() {
		return nil
	}
	name := c.Name
	if name == "" {
		host, _ := os.Hostname()
		_, port, _ := net.SplitHostPort(b.opts.MQTTAddr)
		name = fmt.Sprintf("%s-%s", host, port)
	}
	conn, err := cluster.Connect(ctx, cluster.Config{
		URLs: c.URLs, Name: name, CredsFile: c.CredsFile,
		CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile,
		Timeout: c.Timeout, Logger: b.log.With("component", "cluster"),
	})
	if err != nil {
		return err
	}
	b.cluster = conn
	b.clusterShadows, err = clusterstore.Open(ctx, conn.JS, clusterstore.Config{
		Replicas: c.Replicas, TombstoneTTL: b.opts.TombstoneTTL, Timeout: c.Timeout,
		History: max(b.opts.HistoryVersions, 0),
	})
	if err != nil {
		return err
	}
	b.clusterMeta, err = clusterkv.Open(ctx, conn.JS, clusterkv.Config{
		Replicas: c.Replicas, Node: name, Timeout: c.Timeout,
		Dir:     filepath.Join(b.opts.DataDir, "cluster"),
		OnApply: b.metaApplied,
	})
	if err != nil {
		return err
	}
	b.metaFollow.Lock()
	b.metaFollow.opened = true
	b.metaFollow.Unlock()
	err = cluster.Retry(ctx, func(ctx context.Context) (err error) {
		b.clusterBlobs, err = conn.JS.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket: ArtifactObjectStore, Description: "Umbra firmware artifacts (images by SHA-256)",
			Storage: jetstream.FileStorage, Replicas: c.Replicas,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("cluster: artifact object store: %w", err)
	}
	b.jsRTT = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "umbra_cluster_jetstream_rtt_seconds",
		Help:    "Round trip of the periodic JetStream probe (account info) from this node.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	b.jsProbes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "umbra_cluster_jetstream_probes_total",
		Help: "JetStream probes by result (ok, error); /readyz is 503 while the last one failed.",
	}, []string{"result"})
	b.metrics.reg.MustRegister(b.jsRTT, b.jsProbes, clusterConnCollector{b.cluster.NC})
	if err := b.openEngineLease(ctx); err != nil {
		return err
	}
	b.bg.Go("cluster-probe", b.probeJetStream)
	b.log.Info("cluster mode", "node", name, "nats", conn.NC.ConnectedUrlRedacted(), "replicas", c.Replicas)
	return nil
}

// probeJetStream checks JetStream every clusterProbeInterval.
func (b *Broker) probeJetStream(ctx context.Context) {
	t := time.NewTicker(clusterProbeInterval)
	defer t.Stop()
	for {
		start := time.Now()
		if err := b.cluster.Ready(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if b.jsErr.Swap(&err) == nil {
				b.log.Warn("cluster: JetStream unreachable; /readyz is 503", "error", err)
			}
			b.jsProbes.WithLabelValues("error").Inc()
		} else {
			b.jsRTT.Observe(time.Since(start).Seconds())
			b.jsProbes.WithLabelValues("ok").Inc()
			if b.jsErr.Swap(nil) != nil {
				b.log.Info("cluster: JetStream reachable again")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// clusterProblems are /readyz's reasons on a cluster node.
func (b *Broker) clusterProblems() []string {
	if b.cluster == nil {
		return nil
	}
	var p []string
	if s := b.cluster.NC.Status(); s != nats.CONNECTED {
		p = append(p, "cluster: NATS connection "+s.String())
	}
	if err := b.jsErr.Load(); err != nil {
		p = append(p, fmt.Sprintf("cluster: JetStream unreachable: %v", *err))
	}
	return p
}

// shadowStore is the shadow store engine: JetStream KV on a cluster node,
// bbolt otherwise.
func (b *Broker) shadowStore(local shadow.Store) shadow.Store {
	if b.clusterShadows != nil {
		return b.clusterShadows
	}
	return local
}

// clusterSessionHook returns the hook that takes client ids over across
// the cluster and moves persistent sessions between nodes (nil on a single
// node). It goes first among the hooks: the session it installs must be
// there when the others run.
func (b *Broker) clusterSessionHook(persist bool) (mqtt.Hook, error) {
	if b.cluster == nil {
		return nil, nil
	}
	cfg := clustersession.Config{
		Server: b.mqtt, NC: b.cluster.NC, JS: b.cluster.JS, Node: b.cluster.Name,
		Replicas: b.opts.Cluster.Replicas, Timeout: b.cluster.Timeout,
		Logger: b.log.With("component", "cluster-sessions"),
	}
	if persist {
		cfg.Flush = b.db.Flush
	}
	if b.clusterMeta != nil {
		cfg.Recorded = b.clusterMeta.Flush // the registry's connectivity records
	}
	if b.authn != nil {
		// The entry names the session's holder: a connect on another node
		// is checked against it (one service cannot take over another's
		// session), and a session that ends gives its entry up.
		cfg.Identity = b.access.Identity
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*b.cluster.Timeout)
	defer cancel()
	h, err := clustersession.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	b.clusterSessions = h
	if b.authn != nil {
		b.access.Holder = h.Holder
	}
	return h, nil
}

// shadowLister serves shadow history and named-shadow listings from the
// shadow store engine in use.
func (b *Broker) shadowLister() api.ShadowLister {
	if b.clusterShadows != nil {
		return clusterLister{b.clusterShadows}
	}
	return shadowLister{b.db}
}

// clusterLister serves the read-only shadow listings from JetStream.
type clusterLister struct{ s *clusterstore.ShadowStore }

func (l clusterLister) ListNamedShadows(thing, after string, limit int) ([]string, string, error) {
	return l.s.ListNamedShadows(thing, after, limit)
}

func (l clusterLister) History(ref shadow.Ref, before int64, limit int) ([]json.RawMessage, error) {
	recs, err := l.s.History(ref, before, limit)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(recs))
	for i, r := range recs {
		out[i] = r.Entry
	}
	return out, nil
}

// closeCluster closes the shared store and the NATS connection
// (Shutdown, failed Start).
func (b *Broker) closeCluster() {
	if b.clusterMeta != nil {
		// staged connectivity records (write-behind) go out first
		ctx, cancel := context.WithTimeout(context.Background(), b.cluster.Timeout)
		if err := b.clusterMeta.Flush(ctx); err != nil {
			b.log.Warn("cluster: staged registry records not written", "error", err)
		}
		cancel()
		_ = b.clusterMeta.Close()
	}
	b.cluster.Close()
}

// metaApplied is the shared store's OnApply: another node's transaction
// goes to the registry, which brings its index up to date.
func (b *Broker) metaApplied(changes []clusterkv.Change, local bool) {
	if local {
		return
	}
	f := &b.metaFollow
	f.Lock()
	defer f.Unlock()
	switch {
	case !f.opened:
		return // the replay at start: the registry's Open reads it all
	case f.reg == nil:
		f.pending = append(f.pending, changes...)
		return
	}
	for _, c := range changes {
		f.reg.StoreChanged(c.Bucket, c.Key)
		b.engineStoreChanged(c.Bucket, c.Key) // cluster_engine.go
	}
}

// followCluster starts, on a cluster node, what keeps the registry
// current with the other nodes: their registry transactions (metaApplied)
// and every shadow change (a watch on the shadow bucket, which also gives
// the index the shadows at start). It returns once the index holds the
// shadows stored now.
func (b *Broker) followCluster(ctx context.Context) error {
	if b.clusterMeta == nil {
		return nil
	}
	f := &b.metaFollow
	f.Lock()
	f.reg = b.registry
	for _, c := range f.pending {
		b.registry.StoreChanged(c.Bucket, c.Key)
		b.engineStoreChanged(c.Bucket, c.Key)
	}
	f.pending = nil
	f.Unlock()
	err := b.clusterShadows.Watch(ctx, func(ref shadow.Ref, doc []byte) {
		b.registry.ShadowChanged(shadow.Event{Change: shadow.Change{Ref: ref, Doc: doc}})
		if b.rollouts != nil {
			b.rollouts.ShadowChanged(ref.Thing)
		}
	})
	if err != nil {
		return fmt.Errorf("cluster: follow shadows: %w", err)
	}
	return nil
}

// registryStore is the registry's (and the jobs service's) store: the
// shared store on a cluster node, bbolt otherwise.
func (b *Broker) registryStore() registry.Store {
	if b.clusterMeta != nil {
		return storeadapt.ClusterKV{S: b.clusterMeta}
	}
	return storeadapt.KV{DB: b.db}
}

// rolloutStore is the rollout engine's store.
func (b *Broker) rolloutStore() storeadapt.RolloutStore {
	if b.clusterMeta != nil {
		return storeadapt.RolloutStore{DB: b.db, KV: storeadapt.ClusterKV{S: b.clusterMeta}}
	}
	return storeadapt.RolloutStore{DB: b.db}
}

// artifactStore is the artifact metadata's store (the blobs stay in the
// node's data directory).
func (b *Broker) artifactStore() artifact.Store {
	if b.clusterMeta != nil {
		return artifactClusterKV{b.clusterMeta}
	}
	return artifactKV{b.db}
}

// ArtifactObjectStore is the JetStream object store of artifact images in
// cluster mode.
const ArtifactObjectStore = "umbra_artifacts"

// artifactBlobs is the artifact images' shared copy on a cluster node.
func (b *Broker) artifactBlobs() artifact.Blobs {
	if b.clusterBlobs == nil {
		return nil
	}
	return objectBlobs{b.clusterBlobs}
}

type objectBlobs struct{ obs jetstream.ObjectStore }

func (o objectBlobs) Put(ctx context.Context, id string, content io.Reader) error {
	_, err := o.obs.Put(ctx, jetstream.ObjectMeta{Name: id}, content)
	return err
}

func (o objectBlobs) Get(ctx context.Context, id string, w io.Writer) error {
	r, err := o.obs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%w: %v", os.ErrNotExist, err)
	}
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(w, r)
	return err
}

func (o objectBlobs) Delete(ctx context.Context, id string) error {
	if err := o.obs.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return err
	}
	return nil
}

type artifactClusterKV struct{ s *clusterkv.Store }

func (s artifactClusterKV) UpdateKV(ctx context.Context, fn func(artifact.KV) error) error {
	return s.s.UpdateKV(ctx, func(kv clusterkv.KV) error { return fn(kv) })
}

func (s artifactClusterKV) ViewKV(fn func(artifact.KV) error) error {
	return s.s.ViewKV(func(kv clusterkv.KV) error { return fn(kv) })
}

// clusterConnCollector exports the NATS connection's counters.
type clusterConnCollector struct{ nc *nats.Conn }

var (
	clusterReconnectsDesc = prometheus.NewDesc("umbra_cluster_nats_reconnects_total", "Reconnections of this node's NATS connection.", nil, nil)
	clusterConnectedDesc  = prometheus.NewDesc("umbra_cluster_nats_connected", "1 while this node's NATS connection is up.", nil, nil)
)

func (c clusterConnCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- clusterReconnectsDesc
	ch <- clusterConnectedDesc
}

func (c clusterConnCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.nc.Stats()
	ch <- prometheus.MustNewConstMetric(clusterReconnectsDesc, prometheus.CounterValue, float64(st.Reconnects))
	up := 0.0
	if c.nc.IsConnected() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(clusterConnectedDesc, prometheus.GaugeValue, up)
}

// indexShadows is where the registry reads the stored shadows at start:
// bbolt; on a cluster node none, as the watch on the shadow bucket
// (followCluster) delivers them.
func (b *Broker) indexShadows() registry.ShadowSource {
	if b.clusterMeta != nil {
		return nil
	}
	return storeadapt.ShadowSource{DB: b.db}
}

// indexSnapshotPath is the fleet index snapshot file; a cluster node has
// none and builds its index from the shared stores at start.
func (b *Broker) indexSnapshotPath() string {
	if b.clusterMeta != nil {
		return ""
	}
	return filepath.Join(b.opts.DataDir, IndexSnapshotFile)
}
