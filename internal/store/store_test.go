package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T, dir string, opts Options) *DB {
	t.Helper()
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestCommitGroupsConcurrentWritesAndIsDurable(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	txs, writes := 0, 0
	db := open(t, dir, Options{OnCommit: func(_ time.Duration, n int) {
		mu.Lock()
		txs++
		writes += n
		mu.Unlock()
	}})
	const n = 500
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.CommitShadow(context.Background(), ShadowWrite{
				Key: ShadowKey{Thing: fmt.Sprintf("t%d", i)}, Doc: []byte(`{"version":1}`), Version: 1, Time: time.Now(),
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	if writes < n || txs >= n {
		t.Errorf("%d writes in %d transactions: want all %d writes grouped into fewer transactions", writes, txs, n)
	}
	mu.Unlock()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db2 := open(t, dir, Options{})
	count := 0
	if err := db2.ForEachShadow(func(ShadowKey, []byte) error { count++; return nil }); err != nil {
		t.Fatal(err)
	}
	if count != n {
		t.Fatalf("after reopen %d shadows, want %d", count, n)
	}
}

func TestFailingWriteDoesNotFailItsBatch(t *testing.T) {
	db := open(t, t.TempDir(), Options{})
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Commit(context.Background(), func(tx *bolt.Tx) error {
				if err := tx.Bucket(bucketMeta).Put(fmt.Appendf(nil, "k%d", i), []byte("v")); err != nil {
					return err
				}
				if i%7 == 0 {
					return boom
				}
				return nil
			})
		}()
	}
	wg.Wait()
	_ = db.View(func(tx *bolt.Tx) error {
		for i, err := range errs {
			stored := tx.Bucket(bucketMeta).Get(fmt.Appendf(nil, "k%d", i)) != nil
			if i%7 == 0 {
				if !errors.Is(err, boom) || stored {
					t.Errorf("write %d: err=%v stored=%v, want boom and not stored", i, err, stored)
				}
			} else if err != nil || !stored {
				t.Errorf("write %d: err=%v stored=%v, want stored", i, err, stored)
			}
		}
		return nil
	})
}

func TestStageCoalescesAndFlushMakesDurable(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, Options{})
	db.Stage(BucketInflight, "a", Bytes("1"))
	db.Stage(BucketInflight, "a", nil)
	db.Stage(BucketInflight, "b", Bytes("1"))
	db.Stage(BucketInflight, "b", Bytes("2"))
	if err := db.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(BucketInflight)
		if b.Get([]byte("a")) != nil || string(b.Get([]byte("b"))) != "2" {
			t.Errorf("a=%q b=%q, want a deleted and b=2", b.Get([]byte("a")), b.Get([]byte("b")))
		}
		return nil
	})
}

func TestCloseWritesStagedValues(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Stage(BucketRetained, "x", Bytes("kept"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := db.CommitShadow(context.Background(), ShadowWrite{Key: ShadowKey{Thing: "t"}, Doc: []byte("{}")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after close: %v, want ErrClosed", err)
	}
	db2 := open(t, dir, Options{})
	_ = db2.View(func(tx *bolt.Tx) error {
		if got := string(tx.Bucket(BucketRetained).Get([]byte("x"))); got != "kept" {
			t.Errorf("staged value after close and reopen = %q", got)
		}
		return nil
	})
}

func TestOpenLockedDatabaseFails(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{})
	_, err := Open(dir, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestTombstoneKeepsVersionUntilTTL(t *testing.T) {
	db := open(t, t.TempDir(), Options{})
	k := ShadowKey{Thing: "t", Name: "n"}
	t0 := time.Unix(1_700_000_000, 0)
	ctx := context.Background()
	if err := db.CommitShadow(ctx, ShadowWrite{Key: k, Doc: []byte(`{}`), Version: 7, Time: t0}); err != nil {
		t.Fatal(err)
	}
	if err := db.CommitShadow(ctx, ShadowWrite{Key: k, Version: 7, Time: t0}); err != nil {
		t.Fatal(err)
	}
	doc, v, err := db.LoadShadow(k, 48*time.Hour, t0.Add(47*time.Hour))
	if err != nil || doc != nil || v != 7 {
		t.Fatalf("within TTL: doc=%q v=%d err=%v, want no doc and version 7", doc, v, err)
	}
	if _, v, _ = db.LoadShadow(k, 48*time.Hour, t0.Add(49*time.Hour)); v != 0 {
		t.Fatalf("after TTL: version %d, want 0", v)
	}
}

func TestHistoryRetentionAndPaging(t *testing.T) {
	db := open(t, t.TempDir(), Options{})
	k := ShadowKey{Thing: "t"}
	ctx := context.Background()
	for v := int64(1); v <= 12; v++ {
		err := db.CommitShadow(ctx, ShadowWrite{Key: k, Doc: []byte(`{}`), Version: v, Time: time.Now(),
			History: fmt.Appendf(nil, "e%d", v), HistoryKind: HistoryUpdate, HistoryLimit: 5})
		if err != nil {
			t.Fatal(err)
		}
	}
	// A neighbouring shadow's history must not be touched or returned.
	if err := db.CommitShadow(ctx, ShadowWrite{Key: ShadowKey{Thing: "t", Name: "x"}, Doc: []byte(`{}`), Version: 1,
		History: []byte("other"), HistoryKind: HistoryUpdate}); err != nil {
		t.Fatal(err)
	}
	all, err := db.ShadowHistory(k, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, r := range all {
		got = append(got, r.Version)
	}
	if fmt.Sprint(got) != "[12 11 10 9 8]" {
		t.Fatalf("history versions %v, want the newest 5, newest first", got)
	}
	page, _ := db.ShadowHistory(k, 10, 2)
	if len(page) != 2 || page[0].Version != 9 || string(page[1].Entry) != "e8" {
		t.Fatalf("page before 10: %+v", page)
	}
	// Version 1 again (a new incarnation after an expired tombstone) drops the old entries.
	if err := db.CommitShadow(ctx, ShadowWrite{Key: k, Doc: []byte(`{}`), Version: 1,
		History: []byte("new"), HistoryKind: HistoryUpdate, HistoryLimit: 5}); err != nil {
		t.Fatal(err)
	}
	if all, _ = db.ShadowHistory(k, 0, 0); len(all) != 1 || string(all[0].Entry) != "new" {
		t.Fatalf("after restart of the sequence: %+v", all)
	}
}

func TestListNamedShadowsPagesAndSkipsClassic(t *testing.T) {
	db := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	for _, k := range []ShadowKey{{"t", ""}, {"t", "a"}, {"t", "b"}, {"t", "c"}, {"t2", "z"}, {"s", "q"}} {
		if err := db.CommitShadow(ctx, ShadowWrite{Key: k, Doc: []byte(`{}`), Version: 1}); err != nil {
			t.Fatal(err)
		}
	}
	names, next, err := db.ListNamedShadows("t", "", 2)
	if err != nil || fmt.Sprint(names) != "[a b]" || next != "b" {
		t.Fatalf("page 1: %v next=%q err=%v", names, next, err)
	}
	names, next, _ = db.ListNamedShadows("t", next, 2)
	if fmt.Sprint(names) != "[c]" || next != "" {
		t.Fatalf("page 2: %v next=%q", names, next)
	}
	if names, _, _ = db.ListNamedShadows("nobody", "", 10); len(names) != 0 {
		t.Fatalf("unknown thing: %v", names)
	}
}

// A clean Close writes bbolt's free list in a transaction of its own that
// does not change the transaction id the data is known by (TxID), so an
// index snapshot taken before Close still matches after Open; any write
// since changes it.
func TestCleanCloseKeepsTheTransactionID(t *testing.T) {
	dir := t.TempDir()
	txid := func(db *DB) uint64 {
		var id uint64
		if err := db.ViewKV(func(kv KV) error { id = kv.(interface{ TxID() uint64 }).TxID(); return nil }); err != nil {
			t.Fatal(err)
		}
		return id
	}
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.UpdateKV(context.Background(), func(kv KV) error { return kv.Put("b", "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	before := txid(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 { // and again after a close with no write at all
		if db, err = Open(dir, Options{}); err != nil {
			t.Fatal(err)
		}
		if got := txid(db); got != before {
			t.Fatalf("after a clean close and open the transaction id is %d, was %d", got, before)
		}
		if !freelistSynced(t, db.Path()) {
			t.Fatal("bbolt's free list was not written at close: the open walked the file to rebuild it")
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if db, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.UpdateKV(context.Background(), func(kv KV) error { return kv.Put("b", "k", []byte("w")) }); err != nil {
		t.Fatal(err)
	}
	if got := txid(db); got == before {
		t.Fatalf("a write did not change the transaction id (%d)", got)
	}
}

// freelistSynced reads bbolt's newer meta page from the file: its free
// list page id is not the "no free list" marker.
func freelistSynced(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// page header 16 bytes; meta: magic 4, version 4, pageSize 4, flags 4,
	// root bucket 16, freelist 8, pgid 8, txid 8.
	pageSize := int(binary.LittleEndian.Uint32(b[24:]))
	meta := func(p int) (freelist, txid uint64) {
		m := b[p*pageSize+16:]
		return binary.LittleEndian.Uint64(m[32:]), binary.LittleEndian.Uint64(m[48:])
	}
	f0, t0 := meta(0)
	f1, t1 := meta(1)
	if t1 > t0 {
		f0 = f1
	}
	return f0 != ^uint64(0)
}
