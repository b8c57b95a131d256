package clusterstore_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/clusterstore"
	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/shadow"
)

// TestSameHistoryAndListingAsBbolt runs one seeded sequence of updates and
// deletes on a classic shadow and many named shadows of two things through
// a service on bbolt and one on the KV engine (two nodes: the writer and a
// reader on another NATS server), both keeping 4 versions of history, and
// requires the same history (every before/limit tried) and the same named
// shadow listing (every page size and start) after every request.
func TestSameHistoryAndListingAsBbolt(t *testing.T) {
	const keep = 4
	c := natstest.StartCluster(t, 3)
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	kv := openStore(t, c, 0, clusterstore.Config{History: keep})
	reader := openStore(t, c, 2, clusterstore.Config{History: keep})
	db, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	bolt := storeadapt.ShadowStore{DB: db, History: keep}

	var kvPub, boltPub recorder
	kvSvc := shadow.NewService(shadow.Config{Store: kv, Publisher: &kvPub, Clock: clock})
	boltSvc := shadow.NewService(shadow.Config{Store: bolt, Publisher: &boltPub, Clock: clock})

	refs := []shadow.Ref{{Thing: "T"}, {Thing: "T2", Name: "other"}}
	for _, n := range []string{"cfg", "a", "b:1", "Z", "a-b_c", "zz", "m.n"} {
		refs = append(refs, shadow.Ref{Thing: "T", Name: n})
	}
	rng := rand.New(rand.NewPCG(19, 5))
	ctx := context.Background()
	compareHistory := func(what string, ref shadow.Ref) {
		t.Helper()
		for _, q := range [][2]int{{0, 0}, {0, 1}, {0, 2}, {0, 100}, {2, 0}, {3, 1}, {5, 2}, {1000, 3}} {
			want, err := db.ShadowHistory(storeadapt.Key(ref), int64(q[0]), q[1])
			if err != nil {
				t.Fatal(err)
			}
			got, err := reader.History(ref, int64(q[0]), q[1])
			if err != nil {
				t.Fatalf("%s: history of %s: %v", what, ref, err)
			}
			if w, g := fmtBolt(want), fmtKV(got); w != g {
				t.Fatalf("%s: history of %s before %d limit %d:\n kv:    %s\n bbolt: %s", what, ref, q[0], q[1], g, w)
			}
		}
	}
	compareListing := func(what string) {
		t.Helper()
		for _, thing := range []string{"T", "T2", "nobody"} {
			for _, size := range []int{1, 2, 3, 100} {
				after := ""
				for page := 0; ; page++ {
					want, wnext, err := db.ListNamedShadows(thing, after, size)
					if err != nil {
						t.Fatal(err)
					}
					got, gnext, err := reader.ListNamedShadows(thing, after, size)
					if err != nil {
						t.Fatalf("%s: list %s: %v", what, thing, err)
					}
					if fmt.Sprint(want, wnext) != fmt.Sprint(got, gnext) {
						t.Fatalf("%s: list %s after %q size %d:\n kv:    %q next %q\n bbolt: %q next %q", what, thing, after, size, got, gnext, want, wnext)
					}
					if wnext == "" || page > 20 {
						break
					}
					after = wnext
				}
			}
		}
	}
	updates, deletes := 0, 0
	for i := range 150 {
		ref := refs[rng.IntN(len(refs))]
		req := shadow.Request{Ref: ref, Origin: shadow.OriginMQTT, Principal: "p", Op: shadow.OpUpdate}
		tok := `"clientToken":"c` + strconv.Itoa(i) + `"`
		if rng.IntN(6) == 0 {
			req.Op = shadow.OpDelete
			req.Payload = []byte(`{` + tok + `}`)
		} else {
			req.Payload = []byte(`{"state":{"reported":{"k` + strconv.Itoa(rng.IntN(3)) + `":` + strconv.Itoa(i) + `}},` + tok + `}`)
		}
		want := boltSvc.Handle(ctx, req)
		got := kvSvc.Handle(ctx, req)
		what := fmt.Sprintf("op %d %s %s %s", i, req.Op, ref, req.Payload)
		if !bytes.Equal(got.Payload, want.Payload) || (got.Err == nil) != (want.Err == nil) {
			t.Fatalf("%s:\n kv:    %+v %s\n bbolt: %+v %s", what, got.Err, got.Payload, want.Err, want.Payload)
		}
		boltPub.take()
		kvPub.take()
		if want.Err == nil {
			if req.Op == shadow.OpDelete {
				deletes++
			} else {
				updates++
			}
		}
		compareHistory(what, ref)
		if i%10 == 0 || req.Op == shadow.OpDelete {
			compareListing(what)
		}
		now = now.Add(time.Second)
	}
	for _, ref := range refs {
		compareHistory("at the end", ref)
	}
	compareListing("at the end")
	t.Logf("150 requests: %d updates, %d deletes accepted", updates, deletes)
	if updates < 100 || deletes < 10 {
		t.Fatalf("the sequence did not exercise enough: %d updates, %d deletes", updates, deletes)
	}
	// Not vacuous: the reader saw a long history and a long listing.
	if h, _ := reader.History(shadow.Ref{Thing: "T", Name: "cfg"}, 0, 0); len(h) < 2 {
		t.Fatalf("history of T/cfg has %d entries", len(h))
	}
	if names, _, _ := reader.ListNamedShadows("T", "", 100); len(names) < 3 {
		t.Fatalf("listing of T: %q", names)
	}
}

func fmtBolt(rs []store.HistoryRecord) string {
	var b bytes.Buffer
	for _, r := range rs {
		fmt.Fprintf(&b, "%d%c %s|", r.Version, r.Kind, r.Entry)
	}
	return b.String()
}

func fmtKV(rs []clusterstore.HistoryRecord) string {
	var b bytes.Buffer
	for _, r := range rs {
		fmt.Fprintf(&b, "%d%c %s|", r.Version, r.Kind, r.Entry)
	}
	return b.String()
}

// TestHistoryNewIncarnation: once a deleted shadow's tombstone has expired,
// the shadow starts again at version 1 and its history shows only the new
// versions, as on bbolt (which TestSameHistoryAndListingAsBbolt cannot
// show: the bbolt engine reads the real clock for expiry). The listing
// leaves the shadow out while it is deleted.
func TestHistoryNewIncarnation(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	kv := openStore(t, c, 1, clusterstore.Config{TombstoneTTL: time.Minute, Now: clock, History: 10})
	svc := shadow.NewService(shadow.Config{Store: kv, Clock: clock})
	ref := shadow.Ref{Thing: "T", Name: "n"}
	do := func(op shadow.Op, payload string) {
		t.Helper()
		if r := svc.Handle(context.Background(), shadow.Request{Ref: ref, Op: op, Origin: shadow.OriginHTTP, Payload: []byte(payload)}); r.Err != nil {
			t.Fatalf("%s: %+v", op, r.Err)
		}
	}
	summary := func() string {
		t.Helper()
		h, err := kv.History(ref, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, r := range h {
			parts = append(parts, fmt.Sprintf("%d%c", r.Version, r.Kind))
		}
		return fmt.Sprint(parts)
	}
	listed := func() string {
		t.Helper()
		names, _, err := kv.ListNamedShadows("T", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(names)
	}
	do(shadow.OpUpdate, `{"state":{"reported":{"a":1}}}`)
	do(shadow.OpUpdate, `{"state":{"reported":{"a":2}}}`)
	do(shadow.OpDelete, ``)
	if got := summary(); got != "[2x 2u 1u]" {
		t.Fatalf("history after the delete: %s", got)
	}
	if got := listed(); got != "[]" {
		t.Fatalf("listing after the delete: %s", got)
	}
	now = now.Add(2 * time.Minute)
	do(shadow.OpUpdate, `{"state":{"reported":{"a":3}}}`)
	do(shadow.OpUpdate, `{"state":{"reported":{"a":4}}}`)
	if got := summary(); got != "[2u 1u]" {
		t.Fatalf("history of the new incarnation: %s, want [2u 1u]", got)
	}
	if got := listed(); got != "[n]" {
		t.Fatalf("listing after the new incarnation: %s", got)
	}
}
