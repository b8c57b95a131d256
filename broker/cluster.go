package broker

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/umbra-iot/umbra/internal/cluster"
	"github.com/umbra-iot/umbra/internal/clustersession"
	"github.com/umbra-iot/umbra/internal/clusterstore"
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
	// jsErr is the last JetStream probe's failure (nil: reachable).
	jsErr    atomic.Pointer[error]
	jsRTT    prometheus.Histogram
	jsProbes *prometheus.CounterVec
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
	})
	if err != nil {
		return err
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*b.cluster.Timeout)
	defer cancel()
	h, err := clustersession.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	b.clusterSessions = h
	return h, nil
}

// closeCluster closes the NATS connection (Shutdown, failed Start).
func (b *Broker) closeCluster() {
	b.cluster.Close()
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
