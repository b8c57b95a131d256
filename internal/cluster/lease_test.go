package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/cluster"
	"github.com/umbra-iot/umbra/internal/natstest"
)

// testTTL is short so that takeovers are quick, long enough that renewals
// (every TTL/3) keep the lease on a loaded machine.
const testTTL = 2 * time.Second

// terms records every term of every contender and fails on two at once.
type terms struct {
	t       *testing.T
	mu      sync.Mutex
	cur     string // who leads now ("" nobody)
	log     []term
	overlap []string
}

type term struct {
	holder     string
	epoch      uint64
	start, end time.Time
}

func (tr *terms) lead(name string) func(ctx context.Context, epoch uint64) {
	return func(ctx context.Context, epoch uint64) {
		tr.mu.Lock()
		if tr.cur != "" {
			tr.overlap = append(tr.overlap, fmt.Sprintf("%s started (epoch %d) while %s led", name, epoch, tr.cur))
		}
		tr.cur = name
		tr.log = append(tr.log, term{holder: name, epoch: epoch, start: time.Now()})
		i := len(tr.log) - 1
		tr.mu.Unlock()
		<-ctx.Done()
		tr.mu.Lock()
		if tr.cur == name {
			tr.cur = ""
		}
		tr.log[i].end = time.Now()
		tr.mu.Unlock()
	}
}

func (tr *terms) current() (string, int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.cur, len(tr.log)
}

// check fails on overlapping terms and on epochs that do not increase.
func (tr *terms) check() {
	tr.t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, o := range tr.overlap {
		tr.t.Errorf("two holders at once: %s", o)
	}
	for i := 1; i < len(tr.log); i++ {
		if tr.log[i].epoch <= tr.log[i-1].epoch {
			tr.t.Errorf("epoch of term %d (%s) is %d, not above the previous term's %d", i, tr.log[i].holder, tr.log[i].epoch, tr.log[i-1].epoch)
		}
	}
}

// waitHolder polls until someone other than not leads.
func (tr *terms) waitHolder(not string, within time.Duration) (string, time.Duration) {
	tr.t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for time.Now().Before(deadline) {
		if cur, _ := tr.current(); cur != "" && cur != not {
			return cur, time.Since(start)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
	tr.check()
	cur, _ := tr.current()
	tr.t.Fatalf("no new holder within %s (holder now %q, previous %q)", within, cur, not)
	return "", 0
}

type contender struct {
	name   string
	nc     *nats.Conn
	lease  *cluster.Lease
	cancel context.CancelFunc
	done   chan struct{}
}

// contend starts a contender on its own connection to NATS server i.
func contend(t *testing.T, c *natstest.Cluster, i int, name string, tr *terms) *contender {
	t.Helper()
	// Only server i: a contender whose server is stopped is cut off.
	nc := c.Connect(i, nats.IgnoreDiscoveredServers())
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := cluster.OpenLease(ctx, js, cluster.LeaseConfig{Key: "engine", Holder: name, TTL: testTTL, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	ct := &contender{name: name, nc: nc, lease: l, cancel: rcancel, done: make(chan struct{})}
	go func() {
		defer close(ct.done)
		l.Run(rctx, tr.lead(name))
	}()
	t.Cleanup(ct.stop)
	return ct
}

func (c *contender) stop() {
	c.cancel()
	<-c.done
}

func byName(cs []*contender, name string) *contender {
	for _, c := range cs {
		if c.name == name {
			return c
		}
	}
	return nil
}

// One holder among three contenders, kept across many renewals; closing
// its NATS connection hands the lease to another within TTL plus a poll
// (bounded here at 3 TTL); a graceful stop hands it over at once.
func TestLeaseOneHolderTakeover(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	tr := &terms{t: t}
	var cs []*contender
	for i := range 3 {
		cs = append(cs, contend(t, c, i, fmt.Sprintf("node-%d", i), tr))
	}
	first, took := tr.waitHolder("", 10*time.Second)
	t.Logf("first holder %s after %s", first, took)

	// Renewals keep it: the same single term for 3 TTLs (9 renewals).
	until := time.Now().Add(3 * testTTL)
	for time.Now().Before(until) {
		if cur, n := tr.current(); cur != first || n != 1 {
			t.Fatalf("holder changed while renewing: now %q after %d terms", cur, n)
		}
		if st := byName(cs, first).lease.Status(); !st.Leader {
			t.Fatalf("holder's status: %+v", st)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	for _, ct := range cs {
		if st := ct.lease.Status(); st.Leader != (ct.name == first) {
			t.Fatalf("%s status %+v with holder %s", ct.name, st, first)
		}
		v, _, err := ct.lease.Holder(context.Background())
		if err != nil || v.Holder != first {
			t.Fatalf("%s reads holder %+v, %v; want %s", ct.name, v, err, first)
		}
	}

	// The holder's connection dies: it stops, another takes over.
	byName(cs, first).nc.Close()
	second, took := tr.waitHolder(first, 3*testTTL)
	t.Logf("takeover after the holder's connection closed: %s in %s", second, took)
	if took < testTTL*4/5 {
		t.Errorf("takeover after %s, before the dead holder's lease (TTL %s) can have expired", took, testTTL)
	}

	// A graceful stop releases it: the next holder does not wait the TTL.
	stopped := time.Now()
	byName(cs, second).stop()
	third, _ := tr.waitHolder(second, 3*testTTL)
	t.Logf("takeover after a graceful stop: %s in %s", third, time.Since(stopped))
	if third == first {
		t.Fatalf("the holder whose connection is closed leads again")
	}
	tr.check()
}

// Stopping the holder's NATS server (each contender talks to one server
// only) cuts it off: it stops before another takes over, and after the
// restart there is still one holder at a time. Three rounds; the lease
// bucket is R3, so it survives each server's absence.
func TestLeaseNoTwoHoldersAcrossServerRestarts(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	tr := &terms{t: t}
	for i := range 3 {
		contend(t, c, i, fmt.Sprintf("node-%d", i), tr)
	}
	holder, _ := tr.waitHolder("", 10*time.Second)
	for range 3 {
		var i int
		fmt.Sscanf(holder, "node-%d", &i)
		c.Stop(i)
		next, took := tr.waitHolder(holder, 4*testTTL)
		t.Logf("server of %s stopped: %s leads after %s", holder, next, took)
		c.Restart(i)
		holder = next
	}
	_, n := tr.current()
	t.Logf("%d terms across three server restarts", n)
	tr.check()
}
