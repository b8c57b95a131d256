package store

import (
	"bytes"
	"context"
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
		return nil
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
