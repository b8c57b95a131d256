package clusterkv_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/clusterkv"
	"github.com/umbra-iot/umbra/internal/natstest"
)

func openB(b *testing.B, c *natstest.Cluster, i int) *clusterkv.Store {
	js, err := jetstream.New(c.Connect(i))
	if err != nil {
		b.Fatal(err)
	}
	s, err := clusterkv.Open(context.Background(), js, clusterkv.Config{Node: strconv.Itoa(i), Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func open(t *testing.T, c *natstest.Cluster, i int, cfg clusterkv.Config) *clusterkv.Store {
	t.Helper()
	nc := c.Connect(i, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node == "" {
		cfg.Node = "n" + strconv.Itoa(i)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := clusterkv.Open(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func get(t *testing.T, s *clusterkv.Store, bucket, key string) []byte {
	t.Helper()
	var v []byte
	if err := s.ViewKV(func(kv clusterkv.KV) error { v = kv.Get(bucket, key); return nil }); err != nil {
		t.Fatal(err)
	}
	return v
}

func list(t *testing.T, s *clusterkv.Store, bucket, prefix string) []string {
	t.Helper()
	var out []string
	if err := s.ViewKV(func(kv clusterkv.KV) error {
		return kv.ForEach(bucket, prefix, func(k string, v []byte) error {
			out = append(out, k+"="+string(v))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// A write on one node is read on another at once (ViewKV catches up with
// the stream first); deletes and prefix iteration behave as on bbolt.
func TestReadYourWritesAcrossNodes(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	a := open(t, c, 0, clusterkv.Config{})
	b := open(t, c, 2, clusterkv.Config{})
	ctx := context.Background()
	for i := range 5 {
		err := a.UpdateKV(ctx, func(kv clusterkv.KV) error {
			return kv.Put("things", "t"+strconv.Itoa(i), []byte("v"+strconv.Itoa(i)))
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := get(t, b, "things", "t"+strconv.Itoa(i)); string(got) != "v"+strconv.Itoa(i) {
			t.Fatalf("node b reads %q right after node a's write %d", got, i)
		}
	}
	if err := b.UpdateKV(ctx, func(kv clusterkv.KV) error {
		if err := kv.Delete("things", "t1"); err != nil {
			return err
		}
		// odd keys: binary, subject wildcards; an empty key is refused (as on bbolt)
		if err := kv.Put("things", "", []byte("empty key")); err == nil {
			return errors.New("empty key accepted")
		}
		return kv.Put("other\x00b", "a.b*>\x00c", []byte{})
	}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, a, "things", "t1"); got != nil {
		t.Fatalf("deleted key reads %q", got)
	}
	if got := list(t, a, "things", "t"); fmt.Sprint(got) != "[t0=v0 t2=v2 t3=v3 t4=v4]" {
		t.Fatalf("ForEach prefix t: %v", got)
	}
	if got := list(t, a, "things", ""); fmt.Sprint(got) != "[t0=v0 t2=v2 t3=v3 t4=v4]" {
		t.Fatalf("ForEach all: %v", got)
	}
	if got := get(t, a, "other\x00b", "a.b*>\x00c"); got == nil || len(got) != 0 {
		t.Fatalf("empty value under odd key: %v", got)
	}
	var from []string
	_ = a.ViewKV(func(kv clusterkv.KV) error {
		return kv.ForEachFrom("things", "t2", func(k string, _ []byte) error { from = append(from, k); return nil })
	})
	if fmt.Sprint(from) != "[t2 t3 t4]" {
		t.Fatalf("ForEachFrom t2: %v", from)
	}
	// a new node builds its replica from the stream
	late := open(t, c, 1, clusterkv.Config{})
	if got := list(t, late, "things", ""); fmt.Sprint(got) != "[t0=v0 t2=v2 t3=v3 t4=v4]" {
		t.Fatalf("late node: %v", got)
	}
}

// Inside a transaction, reads see the transaction's own writes, merged in
// key order; a failed fn writes nothing at all.
func TestTransactionOverlayAndAtomicity(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	s := open(t, c, 0, clusterkv.Config{Replicas: 1})
	ctx := context.Background()
	if err := s.UpdateKV(ctx, func(kv clusterkv.KV) error {
		for _, k := range []string{"a1", "a3", "a5", "b1"} {
			if err := kv.Put("x", k, []byte("old")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var seen []string
	if err := s.UpdateKV(ctx, func(kv clusterkv.KV) error {
		_ = kv.Put("x", "a2", []byte("new"))
		_ = kv.Put("x", "a3", []byte("new"))
		_ = kv.Delete("x", "a5")
		if got := kv.Get("x", "a3"); string(got) != "new" {
			return fmt.Errorf("own write reads %q", got)
		}
		if got := kv.Get("x", "a5"); got != nil {
			return fmt.Errorf("own delete reads %q", got)
		}
		return kv.ForEach("x", "a", func(k string, v []byte) error { seen = append(seen, k+"="+string(v)); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[a1=old a2=new a3=new]" {
		t.Fatalf("merged iteration: %v", seen)
	}
	before := s.Applied()
	boom := errors.New("boom")
	err := s.UpdateKV(ctx, func(kv clusterkv.KV) error {
		_ = kv.Put("x", "a1", []byte("lost"))
		_ = kv.Put("y", "z", []byte("lost"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("fn's error: %v", err)
	}
	if got := list(t, s, "x", ""); fmt.Sprint(got) != "[a1=old a2=new a3=new b1=old]" {
		t.Fatalf("after a failed fn: %v", got)
	}
	if got := get(t, s, "y", "z"); got != nil || s.Applied() != before {
		t.Fatalf("a failed fn wrote: %q, applied %d → %d", got, before, s.Applied())
	}
	// a write set larger than MaxBatch fails before anything is sent
	small := open(t, c, 0, clusterkv.Config{Replicas: 1, MaxBatch: 3})
	err = small.UpdateKV(ctx, func(kv clusterkv.KV) error {
		for i := range 4 {
			_ = kv.Put("big", strconv.Itoa(i), []byte("v"))
		}
		return nil
	})
	if !errors.Is(err, clusterkv.ErrTooLarge) {
		t.Fatalf("4 records with MaxBatch 3: %v", err)
	}
	if got := list(t, s, "big", ""); len(got) != 0 {
		t.Fatalf("too large a transaction wrote %v", got)
	}
}

// Read-modify-write transactions on three nodes at once lose no update:
// conflicts are detected (expected last sequence) and fn runs again. A
// multi-key invariant (sum of two counters moved together) always holds.
func TestConcurrentIncrementsThreeNodes(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	var stores []*clusterkv.Store
	var mu sync.Mutex
	applies := map[int]int{}
	for i := range 3 {
		stores = append(stores, open(t, c, i, clusterkv.Config{OnApply: func(ch []clusterkv.Change, local bool) {
			mu.Lock()
			applies[i]++
			mu.Unlock()
		}}))
	}
	ctx := context.Background()
	const perWorker = 15
	var wg sync.WaitGroup
	for n, s := range stores {
		for w := range 2 {
			wg.Go(func() {
				for r := range perWorker {
					err := s.UpdateKV(ctx, func(kv clusterkv.KV) error {
						ctr, _ := strconv.Atoi(string(kv.Get("c", "counter")))
						a, _ := strconv.Atoi(string(kv.Get("c", "a")))
						b, _ := strconv.Atoi(string(kv.Get("c", "b")))
						if a+b != 0 {
							return fmt.Errorf("saw a torn transaction: a=%d b=%d", a, b)
						}
						_ = kv.Put("c", "a", []byte(strconv.Itoa(a+1)))
						_ = kv.Put("c", "b", []byte(strconv.Itoa(b-1)))
						_ = kv.Put("members", fmt.Sprintf("n%d-w%d-%d", n, w, r), []byte("1"))
						return kv.Put("c", "counter", []byte(strconv.Itoa(ctr+1)))
					})
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	for i, s := range stores {
		if got := string(get(t, s, "c", "counter")); got != strconv.Itoa(3*2*perWorker) {
			t.Errorf("node %d: counter %s, want %d", i, got, 3*2*perWorker)
		}
		if got := list(t, s, "members", ""); len(got) != 3*2*perWorker {
			t.Errorf("node %d: %d members, want %d", i, len(got), 3*2*perWorker)
		}
	}
	mu.Lock()
	t.Logf("transactions applied per node: %v", applies)
	mu.Unlock()
}

// OnApply tells each node every transaction, whole, with whether it was
// its own.
func TestOnApply(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	type seen struct {
		changes []clusterkv.Change
		local   bool
	}
	ch := make(chan seen, 16)
	a := open(t, c, 0, clusterkv.Config{})
	_ = open(t, c, 1, clusterkv.Config{OnApply: func(c []clusterkv.Change, local bool) { ch <- seen{c, local} }})
	if err := a.UpdateKV(context.Background(), func(kv clusterkv.KV) error {
		_ = kv.Put("g", "k1", []byte("1"))
		_ = kv.Put("h", "k2", []byte("2"))
		return kv.Delete("g", "k0")
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-ch:
		if s.local || len(s.changes) != 3 {
			t.Fatalf("OnApply: %+v", s)
		}
		if fmt.Sprintf("%s/%s=%v", s.changes[0].Bucket, s.changes[0].Key, s.changes[0].Value) != "g/k0=[]" {
			t.Fatalf("first change: %+v", s.changes[0])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OnApply on the other node")
	}
}

// Staged blind writes go out after the linger or at Flush, on every node.
func TestStageAndFlush(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	a := open(t, c, 0, clusterkv.Config{Linger: time.Hour})
	b := open(t, c, 1, clusterkv.Config{})
	a.StageKV("conn", "d1", []byte("up"))
	a.StageKV("conn", "d2", []byte("up"))
	a.StageKV("conn", "d2", nil)
	if got := list(t, b, "conn", ""); len(got) != 0 {
		t.Fatalf("staged writes visible before Flush: %v", got)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := list(t, b, "conn", ""); fmt.Sprint(got) != "[d1=up]" {
		t.Fatalf("after Flush: %v", got)
	}
	// with a short linger, no Flush is needed
	fast := open(t, c, 2, clusterkv.Config{Linger: 5 * time.Millisecond})
	fast.StageKV("conn", "d3", []byte("up"))
	deadline := time.Now().Add(10 * time.Second)
	for string(get(t, b, "conn", "d3")) != "up" {
		if time.Now().After(deadline) {
			t.Fatal("staged write never sent")
		}
		time.Sleep(10 * time.Millisecond) // polling, not synchronisation
	}
}

// A NATS server restart in the middle of a run of transactions: the nodes
// reconnect, their consumers resume, no acknowledged write is lost and
// every node converges.
func TestServerRestartMidRun(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	stores := []*clusterkv.Store{open(t, c, 0, clusterkv.Config{Timeout: 5 * time.Second}), open(t, c, 1, clusterkv.Config{Timeout: 5 * time.Second})}
	ctx := context.Background()
	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for n, s := range stores {
		wg.Go(func() {
			for r := 0; ; r++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("n%d-%d", n, r)
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := s.UpdateKV(cctx, func(kv clusterkv.KV) error {
					v, _ := strconv.Atoi(string(kv.Get("c", "n")))
					_ = kv.Put("c", "n", []byte(strconv.Itoa(v+1)))
					return kv.Put("keys", k, []byte("1"))
				})
				cancel()
				if err == nil {
					mu.Lock()
					acked[k] = true
					mu.Unlock()
				}
			}
		})
	}
	waitCount := func(n int) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			got := len(acked)
			mu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d acknowledged writes, want %d", got, n)
			}
			time.Sleep(10 * time.Millisecond) // polling
		}
	}
	waitCount(10)
	c.Stop(0) // node 0's server
	c.Restart(0)
	mu.Lock()
	mark := len(acked)
	mu.Unlock()
	waitCount(mark + 10)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for i, s := range stores {
		var keys map[string]bool
		var n int
		err := s.ViewKV(func(kv clusterkv.KV) error {
			keys = map[string]bool{}
			n, _ = strconv.Atoi(string(kv.Get("c", "n")))
			return kv.ForEach("keys", "", func(k string, _ []byte) error { keys[k] = true; return nil })
		})
		if err != nil {
			t.Fatal(err)
		}
		for k := range acked {
			if !keys[k] {
				t.Errorf("node %d: acknowledged write %s lost", i, k)
			}
		}
		// writes whose outcome was unknown may be there too; the counter
		// counts exactly the stored transactions
		if n != len(keys) {
			t.Errorf("node %d: counter %d, %d keys", i, n, len(keys))
		}
	}
	t.Logf("%d acknowledged transactions across a server restart", len(acked))
}
