package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// storedHistory counts the history records stored for k, visible or not.
func storedHistory(t *testing.T, db *DB, k ShadowKey) int {
	t.Helper()
	n := 0
	prefix := historyPrefix(k.bytes())
	err := db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHistory).Cursor()
		for key, _ := c.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, _ = c.Next() {
			if len(key) == len(prefix)+9 {
				n++
			}
		}
		return tx.Bucket(bucketHistoryLog).ForEach(func(_, v []byte) error {
			if rec, ok := parseRecord(v); ok && bytes.Equal(rec.key, k.bytes()) {
				n++
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func versions(recs []HistoryRecord) string {
	var b []byte
	for _, r := range recs {
		b = fmt.Appendf(b, "%d%c ", r.Version, r.Kind)
	}
	return string(bytes.TrimSpace(b))
}

// History trimming may be deferred, but what is stored stays bounded and
// what is read is exactly the newest limit versions, also after reopening
// the file and after the limit changes.
func TestHistoryBoundedAndExactAcrossReopenAndLimitChange(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{})
	ctx := context.Background()
	k, other := ShadowKey{Thing: "a"}, ShadowKey{Thing: "a", Name: "b"}
	write := func(db *DB, k ShadowKey, v int64, kind byte, limit int) {
		t.Helper()
		w := ShadowWrite{Key: k, Doc: []byte(`{}`), Version: v, Time: time.Now(),
			History: fmt.Appendf(nil, "e%d%c", v, kind), HistoryKind: kind, HistoryLimit: limit}
		if kind == HistoryDelete {
			w.Doc = nil
		}
		if err := db.CommitShadow(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	for v := int64(1); v <= 500; v++ {
		write(db, k, v, HistoryUpdate, 10)
		if v%50 == 0 {
			write(db, other, v/50, HistoryUpdate, 10)
		}
	}
	if n := storedHistory(t, db, k); n < 10 || n > 2*10+64 {
		t.Fatalf("%d history records stored for a limit of 10", n)
	}
	recs, err := db.ShadowHistory(k, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := versions(recs); got != "500u 499u 498u 497u 496u 495u 494u 493u 492u 491u" {
		t.Fatalf("history %s", got)
	}
	if got, _ := db.ShadowHistory(other, 0, 0); versions(got) != "10u 9u 8u 7u 6u 5u 4u 3u 2u 1u" {
		t.Fatalf("neighbour history %s", versions(got))
	}
	write(db, k, 500, HistoryDelete, 10)
	if got, _ := db.ShadowHistory(k, 0, 3); versions(got) != "500x 500u 499u" {
		t.Fatalf("after delete %s", versions(got))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, Options{})
	if got, _ := db.ShadowHistory(k, 497, 0); versions(got) != "496u 495u 494u 493u 492u 491u" {
		t.Fatalf("after reopen, before 497: %s", versions(got))
	}
	// A smaller limit applies from the next write on.
	write(db, k, 501, HistoryUpdate, 3)
	if got, _ := db.ShadowHistory(k, 0, 0); versions(got) != "501u 500x 500u 499u" {
		t.Fatalf("after the limit fell to 3: %s", versions(got))
	}
	if got, _ := db.ShadowHistory(k, 500, 0); versions(got) != "499u" {
		t.Fatalf("after the limit fell to 3, before 500: %s", versions(got))
	}
}

// A file written before the history log keeps entries per shadow; they are
// read from there, and the shadow's next write carries the ones it keeps
// into the log (a new incarnation drops them).
func TestHistoryOfTheOlderLayoutIsReadAndCarriedOver(t *testing.T) {
	db := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	a, b := ShadowKey{Thing: "a"}, ShadowKey{Thing: "b", Name: "n"}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		for _, k := range []ShadowKey{a, b} {
			for v := uint64(3); v <= 7; v++ {
				key := binary.BigEndian.AppendUint64(historyPrefix(k.bytes()), v)
				if err := tx.Bucket(bucketHistory).Put(append(key, HistoryUpdate), fmt.Appendf(nil, "old%d", v)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := db.ShadowHistory(a, 0, 0); versions(got) != "7u 6u 5u 4u 3u" || string(got[0].Entry) != "old7" {
		t.Fatalf("older layout: %s", versions(got))
	}
	if got, _ := db.ShadowHistory(a, 6, 2); versions(got) != "5u 4u" {
		t.Fatalf("older layout, before 6: %s", versions(got))
	}
	w := ShadowWrite{Key: a, Doc: []byte(`{}`), Version: 8, History: []byte("new8"), HistoryKind: HistoryUpdate, HistoryLimit: 4}
	if err := db.CommitShadow(ctx, w); err != nil {
		t.Fatal(err)
	}
	got, _ := db.ShadowHistory(a, 0, 0)
	if versions(got) != "8u 7u 6u 5u" || string(got[0].Entry) != "new8" || string(got[1].Entry) != "old7" {
		t.Fatalf("carried over with a limit of 4: %s", versions(got))
	}
	w = ShadowWrite{Key: b, Doc: []byte(`{}`), Version: 1, History: []byte("again"), HistoryKind: HistoryUpdate, HistoryLimit: 4}
	if err := db.CommitShadow(ctx, w); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.ShadowHistory(b, 0, 0); versions(got) != "1u" {
		t.Fatalf("new incarnation: %s", versions(got))
	}
	// Nothing is left in the older layout.
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHistory).ForEach(func(k, _ []byte) error {
			if k[len(k)-1] != 0xff {
				t.Errorf("older-layout key %q left", k)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Trimming keeps the log near what the limits keep, whatever the mix of
// shadows, restarts and deletes.
func TestHistoryLogTrimKeepsItBounded(t *testing.T) {
	db := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	keys := []ShadowKey{{Thing: "x"}, {Thing: "y"}, {Thing: "y", Name: "z"}}
	ver := map[ShadowKey]int64{}
	for i := range 600 {
		k := keys[i%len(keys)]
		ver[k]++
		if i%97 == 0 {
			ver[k] = 1 // a new incarnation
		}
		w := ShadowWrite{Key: k, Doc: []byte(`{}`), Version: ver[k], History: []byte("e"), HistoryKind: HistoryUpdate, HistoryLimit: 5}
		if err := db.CommitShadow(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for _, k := range keys {
		n := storedHistory(t, db, k)
		total += n
		got, _ := db.ShadowHistory(k, 0, 0)
		want := min(ver[k], 5)
		if int64(len(got)) != want || got[0].Version != ver[k] {
			t.Errorf("%v: %s, want the newest %d up to %d", k, versions(got), want, ver[k])
		}
	}
	if total > 3*5+2*32+32 {
		t.Errorf("%d records in the log for 3 shadows keeping 5 each", total)
	}
}

// A copy of the file that lost the log's sequence number (as a salvage
// that copies keys only would) does not overwrite kept entries.
func TestHistoryLogSequenceSurvivesALostBucketSequence(t *testing.T) {
	db := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	k := ShadowKey{Thing: "s"}
	write := func(v int64) {
		t.Helper()
		w := ShadowWrite{Key: k, Doc: []byte(`{}`), Version: v, History: fmt.Appendf(nil, "e%d", v), HistoryKind: HistoryUpdate, HistoryLimit: 10}
		if err := db.CommitShadow(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	for v := int64(1); v <= 3; v++ {
		write(v)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketHistoryLog).SetSequence(0) }); err != nil {
		t.Fatal(err)
	}
	write(4)
	got, _ := db.ShadowHistory(k, 0, 0)
	if versions(got) != "4u 3u 2u 1u" || string(got[3].Entry) != "e1" {
		t.Fatalf("after the sequence was lost: %s", versions(got))
	}
}
