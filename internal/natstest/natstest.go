// Package natstest runs an in-process NATS JetStream cluster for tests:
// nats-server as a library, on loopback with random ports, each node storing
// in its own t.TempDir(). Nodes can be stopped and restarted on the same
// ports and store, so tests can take a JetStream server away mid-run.
//
// Every node writes with SyncAlways (fsync before a write is acknowledged),
// the setting a production cluster must use for Umbra's "durable before
// accepted" to mean fsync as it does on bbolt (see docs/cluster.md).
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Cluster is a running JetStream cluster of in-process servers.
type Cluster struct {
	t     testing.TB
	name  string
	mu    sync.Mutex
	nodes []*node
}

type node struct {
	name        string
	dir         string
	port        int // client port, fixed after the first start
	clusterPort int
	srv         *server.Server // nil while stopped
}

// StartCluster starts an n-node JetStream cluster and waits until it has a
// meta leader that sees all n peers. The servers are shut down at the end
// of the test.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: cluster of %d nodes", n)
	}
	c := &Cluster{t: t, name: "umbra-test"}
	for i := range n {
		c.nodes = append(c.nodes, &node{name: "n" + strconv.Itoa(i+1), dir: t.TempDir()})
	}
	t.Cleanup(c.Shutdown)
	// A JetStream cluster needs configured routes from the start, so the
	// route ports are chosen first: free loopback ports the kernel hands out
	// (released just before the servers bind them). Client ports are picked
	// by each server.
	if n > 1 {
		for _, nd := range c.nodes {
			p, err := freePort()
			if err != nil {
				t.Fatalf("natstest: %v", err)
			}
			nd.clusterPort = p
		}
	}
	for i := range c.nodes {
		var err error
		for attempt := 1; ; attempt++ {
			if err = c.start(i); err == nil || n == 1 || attempt == 3 {
				break
			}
			// The route port was free when chosen and released before the
			// server bound it; another process (tests run in parallel) may
			// have taken it meanwhile, and the server then never becomes
			// ready. Start again on another port: the servers started
			// before keep a route to the old one that fails, but this
			// server's own routes to them form the mesh.
			p, perr := freePort()
			if perr != nil {
				t.Fatalf("natstest: %v", perr)
			}
			c.nodes[i].clusterPort = p
		}
		if err != nil {
			t.Fatalf("natstest: start %s: %v", c.nodes[i].name, err)
		}
	}
	c.WaitReady(30 * time.Second)
	return c
}

func (c *Cluster) start(i int) error {
	nd := c.nodes[i]
	opts := &server.Options{
		ServerName: nd.name,
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   nd.dir,
		SyncAlways: true,
		NoSigs:     true,
		NoLog:      os.Getenv("NATSTEST_LOG") == "",
		// JetStream's per-server limits default to a share of the
		// machine's memory and disk; tests need little.
		JetStreamMaxMemory: 64 << 20,
		JetStreamMaxStore:  1 << 30,
		Cluster: server.ClusterOpts{
			Name: c.name,
			Host: "127.0.0.1",
			Port: -1,
		},
	}
	if nd.port != 0 {
		opts.Port = nd.port
	}
	opts.Cluster.Port = nd.clusterPort
	if len(c.nodes) > 1 {
		for j, other := range c.nodes {
			if j == i || other.clusterPort == 0 {
				continue
			}
			opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats", Host: "127.0.0.1:" + strconv.Itoa(other.clusterPort)})
		}
	} else {
		opts.Cluster = server.ClusterOpts{}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	if !opts.NoLog {
		srv.ConfigureLogger()
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("not ready for connections")
	}
	tcp, ok := srv.Addr().(*net.TCPAddr)
	if !ok {
		srv.Shutdown()
		return fmt.Errorf("client listener address %v", srv.Addr())
	}
	nd.port = tcp.Port
	if ca := srv.ClusterAddr(); ca != nil {
		nd.clusterPort = ca.Port
	}
	nd.srv = srv
	return nil
}

// N is the number of nodes.
func (c *Cluster) N() int { return len(c.nodes) }

// URL is the client URL of node i (stable across restarts).
func (c *Cluster) URL(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return "nats://127.0.0.1:" + strconv.Itoa(c.nodes[i].port)
}

// URLs are the client URLs of all nodes, comma separated (the form
// nats.Connect accepts).
func (c *Cluster) URLs() string {
	s := ""
	for i := range c.nodes {
		if i > 0 {
			s += ","
		}
		s += c.URL(i)
	}
	return s
}

// Server is node i's server, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Connect opens a client connection to node i only (no other servers in
// its initial pool); it reconnects for ever and is closed at the end of
// the test.
func (c *Cluster) Connect(i int, opts ...nats.Option) *nats.Conn {
	c.t.Helper()
	opts = append([]nats.Option{
		nats.Name("natstest-" + c.nodes[i].name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
	}, opts...)
	nc, err := nats.Connect(c.URL(i), opts...)
	if err != nil {
		c.t.Fatalf("natstest: connect to %s: %v", c.nodes[i].name, err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// Stop shuts node i down (its store stays for Restart).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	srv := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart starts a stopped node i again on its former ports and store and
// waits until the cluster is whole again.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	err := c.start(i)
	c.mu.Unlock()
	if err != nil {
		c.t.Fatalf("natstest: restart %s: %v", c.nodes[i].name, err)
	}
	c.WaitReady(30 * time.Second)
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for i := range c.nodes {
		c.Stop(i)
	}
}

// WaitReady polls, until timeout, for a JetStream meta leader that sees
// every running node as a current peer, and for every running node to be
// current with the meta group.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	if err := c.waitReady(timeout); err != nil {
		c.t.Fatalf("natstest: %v", err)
	}
}

func (c *Cluster) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last := "no node running"
	for {
		ok, why := c.ready()
		if ok {
			return nil
		}
		last = why
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ready after %v: %s", timeout, last)
		}
		<-tick.C
	}
}

func (c *Cluster) ready() (bool, string) {
	c.mu.Lock()
	var running []*server.Server
	for _, nd := range c.nodes {
		if nd.srv != nil {
			running = append(running, nd.srv)
		}
	}
	c.mu.Unlock()
	if len(running) == 0 {
		return false, "no node running"
	}
	if len(c.nodes) == 1 {
		return running[0].JetStreamEnabled(), "JetStream not enabled"
	}
	leader := false
	for _, s := range running {
		if !s.JetStreamIsCurrent() {
			return false, s.Name() + " not current with the meta group"
		}
		if s.JetStreamIsLeader() {
			leader = true
			if peers := s.JetStreamClusterPeers(); len(peers) < len(running) {
				return false, fmt.Sprintf("meta leader sees %d of %d peers", len(peers), len(running))
			}
		}
	}
	if !leader {
		return false, "no meta leader"
	}
	return true, ""
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
