// Package cluster is a node's link to the NATS JetStream cluster that
// cluster mode (docs/cluster.md) keeps shared state in: one NATS
// connection per node, its JetStream context, and the node's identity.
//
// The parts of cluster mode live next to what they replace: the shadow
// store engine in internal/clusterstore; the broker wires them when
// broker.Options.Cluster is set.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says how to reach the cluster.
type Config struct {
	URLs      []string
	Name      string // this node's name (the NATS connection name too)
	CredsFile string
	CAFile    string
	CertFile  string
	KeyFile   string
	Timeout   time.Duration // per JetStream request
	Logger    *slog.Logger
}

// Conn is a node's connection to the cluster.
type Conn struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	Name    string
	Timeout time.Duration
}

// Connect connects to the NATS servers and checks that JetStream answers,
// so that a wrong URL or a server without JetStream fails `umbra serve`
// at start rather than at the first write. Servers that are not up yet are
// waited for, up to three times the request timeout. After that the connection
// reconnects for ever; Ready tells whether JetStream is reachable now.
func Connect(ctx context.Context, cfg Config) (*Conn, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("cluster: no NATS url")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name("umbra " + cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// NATS servers that are still starting (all started together,
		// as a compose file does) are waited for, like JetStream below.
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("cluster: disconnected from NATS", "error", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("cluster: reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.CAFile != "" || cfg.CertFile != "" {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to %s: %w", strings.Join(cfg.URLs, ","), err)
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(cfg.Timeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: jetstream: %w", err)
	}
	c := &Conn{NC: nc, JS: js, Name: cfg.Name, Timeout: cfg.Timeout}
	if err := c.waitJetStream(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// waitJetStream polls JetStream's account info until it answers: right
// after a cluster starts, JetStream has no meta leader for a moment.
func (c *Conn) waitJetStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*c.Timeout)
	defer cancel()
	var last error
	for {
		if last = c.Ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if !c.NC.IsConnected() {
				why := ""
				if err := c.NC.LastError(); err != nil {
					why = ": " + err.Error()
				}
				return fmt.Errorf("cluster: no NATS server reachable at %s within %s%s", strings.Join(c.NC.Opts.Servers, ","), 3*c.Timeout, why)
			}
			return fmt.Errorf("cluster: JetStream not available: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Ready reports nil when JetStream answers a request now.
func (c *Conn) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(c.Timeout, 2*time.Second))
	defer cancel()
	_, err := c.JS.AccountInfo(ctx)
	return err
}

// Close drains nothing: what was acknowledged is already in JetStream.
func (c *Conn) Close() {
	if c != nil && c.NC != nil {
		c.NC.Close()
	}
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster: ca file %s: no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
