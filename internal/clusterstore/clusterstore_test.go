package clusterstore_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/clusterstore"
	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/shadow"
)

func openStore(t testing.TB, c *natstest.Cluster, node int, cfg clusterstore.Config) *clusterstore.ShadowStore {
	t.Helper()
	js, err := jetstream.New(c.Connect(node))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := clusterstore.Open(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testLogger logs to the test's log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

// recorder keeps what a service publishes.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Publish(topic string, payload []byte) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, topic+" "+string(payload))
	r.mu.Unlock()
	return nil
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	return m
}

// TestSameBehaviourAsBbolt runs one seeded sequence of MQTT get, update
// (versioned, stale, future, unversioned, malformed) and delete requests on
// classic and named shadows through two shadow.Services, one on the bbolt
// engine and one on the KV engine (R3, reached through another node than
// the one that created the bucket), with the same clock, and requires
// every answer and every published message to be byte for byte the same.
// (Tombstone expiry is TestTombstoneExpiry's: the bbolt engine reads the
// real clock for it.)
func TestSameBehaviourAsBbolt(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	openStore(t, c, 0, clusterstore.Config{}) // creates the bucket
	kv := openStore(t, c, 2, clusterstore.Config{})
	db, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	bolt := storeadapt.ShadowStore{DB: db}

	var kvPub, boltPub recorder
	kvSvc := shadow.NewService(shadow.Config{Store: kv, Publisher: &kvPub, Clock: clock})
	boltSvc := shadow.NewService(shadow.Config{Store: bolt, Publisher: &boltPub, Clock: clock})

	refs := []shadow.Ref{{Thing: "T"}, {Thing: "T", Name: "cfg"}, {Thing: "thing:2-x_y"}}
	rng := rand.New(rand.NewPCG(19, 4))
	ctx := context.Background()
	accepted, deleted, conflicts := 0, 0, 0
	for i := range 300 {
		ref := refs[rng.IntN(len(refs))]
		req := shadow.Request{Ref: ref, Origin: shadow.OriginMQTT, Principal: "p"}
		cur, _ := bolt.Load(ref)
		v := shadow.DocVersion(cur.Doc)
		if cur.Doc == nil {
			v = cur.Version
		}
		tok := `"clientToken":"c` + strconv.Itoa(i) + `"`
		switch r := rng.IntN(20); {
		case r < 3:
			req.Op = shadow.OpGet
			req.Payload = []byte(`{` + tok + `}`)
		case r < 5:
			req.Op = shadow.OpDelete
			req.Payload = []byte(`{` + tok + `}`)
		default:
			req.Op = shadow.OpUpdate
			key := "k" + strconv.Itoa(rng.IntN(4))
			val := strconv.Itoa(rng.IntN(3))
			if rng.IntN(4) == 0 {
				val = "null"
			}
			section := "reported"
			if rng.IntN(2) == 0 {
				section = "desired"
			}
			ver := ""
			switch rng.IntN(6) {
			case 0:
				ver = `,"version":` + strconv.FormatInt(v, 10)
			case 1:
				ver = `,"version":` + strconv.FormatInt(v+1, 10)
			case 2:
				ver = `,"version":` + strconv.FormatInt(max(v-1, 0), 10)
			}
			req.Payload = []byte(`{"state":{"` + section + `":{"` + key + `":` + val + `}}` + ver + `,` + tok + `}`)
			if rng.IntN(40) == 0 {
				req.Payload = []byte(`{"state":`) // malformed
			}
		}
		want := boltSvc.Handle(ctx, req)
		got := kvSvc.Handle(ctx, req)
		what := fmt.Sprintf("op %d %s %s %s", i, req.Op, ref, req.Payload)
		if !bytes.Equal(got.Payload, want.Payload) || got.Version != want.Version || (got.Err == nil) != (want.Err == nil) {
			t.Fatalf("%s:\n kv:    %+v %s\n bbolt: %+v %s", what, got.Err, got.Payload, want.Err, want.Payload)
		}
		if w, g := boltPub.take(), kvPub.take(); fmt.Sprint(w) != fmt.Sprint(g) {
			t.Fatalf("%s: published\n kv:    %q\n bbolt: %q", what, g, w)
		}
		switch {
		case want.Err == nil && req.Op == shadow.OpUpdate:
			accepted++
		case want.Err == nil && req.Op == shadow.OpDelete:
			deleted++
		case want.Err != nil && want.Err.Code == 409:
			conflicts++
		}
		now = now.Add(time.Duration(rng.IntN(12)) * time.Second)
	}
	t.Logf("300 requests: %d updates accepted, %d deletes, %d version conflicts", accepted, deleted, conflicts)
	if accepted < 100 || deleted < 10 || conflicts < 10 {
		t.Fatalf("the sequence did not exercise enough: %d accepted, %d deleted, %d conflicts", accepted, deleted, conflicts)
	}
}

// TestThreeNodesOneAcceptPerVersion: three shadow.Services, each over its
// own connection to a different NATS server, update one shadow
// concurrently. Versioned updates (read the version, then update with it):
// exactly one accept per version, and the accepted versions are exactly
// 1..final. Unversioned updates, each adding its own key: every accepted
// key is in the final document (no lost update).
func TestThreeNodesOneAcceptPerVersion(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	openStore(t, c, 0, clusterstore.Config{})
	var svcs []*shadow.Service
	for i := range 3 {
		svcs = append(svcs, shadow.NewService(shadow.Config{Store: openStore(t, c, i, clusterstore.Config{}), Logger: testLogger(t)}))
	}
	ref := shadow.Ref{Thing: "contended"}
	ctx := context.Background()
	const workersPerNode, rounds = 2, 15

	var (
		mu       sync.Mutex
		byVer    = map[int64]int{}
		keys     []string
		conflict int
		wg       sync.WaitGroup
	)
	for n, svc := range svcs {
		for w := range workersPerNode {
			wg.Go(func() {
				for r := range rounds {
					g := svc.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpGet, Origin: shadow.OriginHTTP})
					v := int64(0)
					if g.Err == nil {
						v = g.Version
					} else if g.Err.Code != 404 {
						t.Errorf("get: %v", g.Err)
						return
					}
					verField := `"version":` + strconv.FormatInt(v, 10) + `,`
					if v == 0 {
						verField = `"version":1,`
					}
					u := svc.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpUpdate, Origin: shadow.OriginHTTP,
						Payload: []byte(`{` + verField + `"state":{"reported":{"last":"n` + strconv.Itoa(n) + `"}}}`)})
					key := fmt.Sprintf("n%dw%dr%d", n, w, r)
					free := svc.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpUpdate, Origin: shadow.OriginHTTP,
						Payload: []byte(`{"state":{"reported":{"` + key + `":true}}}`)})
					mu.Lock()
					switch {
					case u.Err == nil:
						byVer[u.Version]++
					case u.Err.Code == 409 || u.Err.Code == 400: // 400: a racing create
						conflict++
					default:
						t.Errorf("versioned update: %v", u.Err)
					}
					if free.Err != nil {
						t.Errorf("unversioned update: %v", free.Err)
					} else {
						byVer[free.Version]++
						keys = append(keys, key)
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	final := svcs[1].Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpGet, Origin: shadow.OriginHTTP})
	if final.Err != nil {
		t.Fatal(final.Err)
	}
	for v := int64(1); v <= final.Version; v++ {
		if byVer[v] != 1 {
			t.Errorf("version %d accepted %d times", v, byVer[v])
		}
	}
	if len(byVer) != int(final.Version) {
		t.Errorf("%d versions accepted, final version %d", len(byVer), final.Version)
	}
	for _, k := range keys {
		if !bytes.Contains(final.Payload, []byte(`"`+k+`":true`)) {
			t.Errorf("accepted key %s lost from the final document", k)
		}
	}
	t.Logf("final version %d: %d accepted updates, %d unversioned keys kept, %d versioned updates refused (409)",
		final.Version, len(byVer), len(keys), conflict)
}

// TestOpenReadsFromLeader: Open turns direct gets off on the bucket's
// stream (a follower could answer a get with a stale state).
func TestOpenReadsFromLeader(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	openStore(t, c, 1, clusterstore.Config{Bucket: "b1"})
	js, err := jetstream.New(c.Connect(0))
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), "KV_b1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.AllowDirect || cfg.Replicas != 3 || cfg.Storage != jetstream.FileStorage {
		t.Fatalf("bucket stream: direct %v, replicas %d, storage %v", cfg.AllowDirect, cfg.Replicas, cfg.Storage)
	}
	if _, err := clusterstore.Open(context.Background(), js, clusterstore.Config{Bucket: "b2", Replicas: 9}); err == nil {
		t.Fatal("replicas 9 accepted")
	}
}

// TestTombstoneExpiry: a deleted shadow's version is kept for TombstoneTTL
// (the next update creates it at that version + 1, as on bbolt), then
// forgotten (it starts again at 1), through the service.
func TestTombstoneExpiry(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	kv := openStore(t, c, 0, clusterstore.Config{TombstoneTTL: time.Minute, Now: clock})
	svc := shadow.NewService(shadow.Config{Store: kv, Clock: clock})
	ctx := context.Background()
	ref := shadow.Ref{Thing: "T", Name: "n"}
	do := func(op shadow.Op, payload string) shadow.Response {
		return svc.Handle(ctx, shadow.Request{Ref: ref, Op: op, Origin: shadow.OriginHTTP, Payload: []byte(payload)})
	}
	for range 3 {
		do(shadow.OpUpdate, `{"state":{"reported":{"a":1}}}`)
	}
	if r := do(shadow.OpDelete, ``); r.Err != nil || r.Version != 3 {
		t.Fatalf("delete: %+v", r)
	}
	if r := do(shadow.OpGet, ``); r.Err == nil || r.Err.Code != 404 {
		t.Fatalf("get after delete: %+v", r)
	}
	if r := do(shadow.OpDelete, ``); r.Err == nil || r.Err.Code != 404 {
		t.Fatalf("delete after delete: %+v", r)
	}
	now = now.Add(59 * time.Second)
	if r := do(shadow.OpUpdate, `{"state":{"reported":{"a":1}}}`); r.Err != nil || r.Version != 4 {
		t.Fatalf("update within the TTL: %+v, want version 4", r)
	}
	do(shadow.OpDelete, ``)
	now = now.Add(time.Minute)
	if cur, err := kv.Load(ref); err != nil || cur.Doc != nil || cur.Version != 0 || cur.Rev == 0 {
		t.Fatalf("load after the TTL: %+v %v, want no version and the entry's revision", cur, err)
	}
	if r := do(shadow.OpUpdate, `{"state":{"reported":{"a":1}},"version":1}`); r.Err != nil || r.Version != 1 {
		t.Fatalf("update after the TTL: %+v, want version 1", r)
	}
}
