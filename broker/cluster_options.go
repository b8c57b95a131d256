package broker

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ClusterOptions turn on cluster mode (docs/cluster.md): several Umbra
// nodes share one fleet through a NATS JetStream cluster. The zero value
// (no URLs) is the single-node default: everything in the local bbolt file.
type ClusterOptions struct {
	// URLs are the NATS servers to connect to ("nats://host:4222", or
	// tls://…); empty means cluster mode is off.
	URLs []string
	// Name identifies this node in the cluster (leases, logs, metrics).
	// Default: the host name and the MQTT port.
	Name string
	// CredsFile is a NATS credentials file (JWT and NKey seed).
	CredsFile string
	// CAFile, CertFile and KeyFile secure the NATS connection with TLS
	// (CertFile/KeyFile: a client certificate, when the servers ask one).
	CAFile   string
	CertFile string
	KeyFile  string
	// Replicas is the replication factor of the JetStream buckets and
	// streams Umbra creates (default 3; 1 for a single NATS server).
	Replicas int
	// Timeout bounds each JetStream request (default 10s).
	Timeout time.Duration
	// LeaseTTL is the engine lease's time to live (default 5s): when the
	// node that runs the rollout and job engine dies, another takes over
	// within about this long. Every node must use the same value.
	LeaseTTL time.Duration
}

// Enabled reports whether cluster mode is on.
func (c ClusterOptions) Enabled() bool { return len(c.URLs) > 0 }

// DefaultClusterReplicas is ClusterOptions.Replicas' default.
const DefaultClusterReplicas = 3

func (c ClusterOptions) withDefaults() ClusterOptions {
	if !c.Enabled() {
		return c
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultClusterReplicas
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	return c
}

func (c ClusterOptions) validate() []error {
	var errs []error
	if !c.Enabled() {
		if c.CredsFile != "" || c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" {
			errs = append(errs, errors.New("cluster: credentials or TLS files are set but no cluster URL is"))
		}
		return errs
	}
	for _, u := range c.URLs {
		if !strings.Contains(u, "://") {
			errs = append(errs, fmt.Errorf("cluster url %q: want nats://host:port or tls://host:port", u))
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("cluster replicas must be 1 to 5 (got %d)", c.Replicas))
	}
	if c.LeaseTTL < 0 || c.LeaseTTL > 0 && c.LeaseTTL < 500*time.Millisecond {
		errs = append(errs, fmt.Errorf("cluster lease TTL must be at least 500ms (got %s)", c.LeaseTTL))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("cluster timeout must not be negative (got %s)", c.Timeout))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("cluster: cert_file and key_file go together"))
	}
	return errs
}

// ParseClusterURLs splits a comma-separated list of NATS URLs (the
// --cluster flag's form), ignoring blanks.
func ParseClusterURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}
