package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore is an in-memory Store for unit tests (the broker's tests run
// the real bbolt store).
type memStore struct {
	mu sync.Mutex
	m  map[string]map[string][]byte
}

func (s *memStore) tx() memKV { return memKV{s} }

type memKV struct{ s *memStore }

func (k memKV) Get(b, key string) []byte { return bytes.Clone(k.s.m[b][key]) }
func (k memKV) Put(b, key string, v []byte) error {
	if k.s.m[b] == nil {
		k.s.m[b] = map[string][]byte{}
	}
	k.s.m[b][key] = bytes.Clone(v)
	return nil
}
func (k memKV) Delete(b, key string) error { delete(k.s.m[b], key); return nil }
func (k memKV) ForEach(b, prefix string, fn func(string, []byte) error) error {
	for key, v := range k.s.m[b] {
		if strings.HasPrefix(key, prefix) {
			if err := fn(key, bytes.Clone(v)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *memStore) UpdateKV(_ context.Context, fn func(KV) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(s.tx())
}

func (s *memStore) ViewKV(fn func(KV) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(s.tx())
}

func open(t *testing.T, dir string, st *memStore, clock func() time.Time) *Service {
	t.Helper()
	s, err := Open(context.Background(), Config{Dir: dir, Store: st, Clock: clock, MaxSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Temporary files of interrupted uploads are removed at open; a file left
// at its content address without metadata (a crash between rename and
// commit) is replaced by the next upload of that content.
func TestOpenCleansInterruptedUploads(t *testing.T) {
	dir := t.TempDir()
	st := &memStore{m: map[string]map[string][]byte{}}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(dir, "tmp", "upload-1"), []byte("half"), 0o600)
	content := []byte("firmware")
	sum := sha256.Sum256(content)
	id := hex.EncodeToString(sum[:])
	_ = os.WriteFile(filepath.Join(dir, id), content, 0o600) // orphan
	s := open(t, dir, st, nil)
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp not cleaned: %v", ents)
	}
	if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("orphan listed: %v", err)
	}
	a, created, err := s.Put(context.Background(), bytes.NewReader(content), Upload{Version: "1.0.0", Type: "esp32"})
	if err != nil || !created || a.ID != id {
		t.Fatalf("put over the orphan: %+v %v %v", a, created, err)
	}
	// The token key survives a reopen: a token made before still checks.
	exp := time.Now().Add(time.Hour).Unix()
	tok := s.Token(id, "dev-1", exp)
	s2 := open(t, dir, st, nil)
	if err := s2.Authorize(id, "dev-1", strconv.FormatInt(exp, 10), tok); err != nil {
		t.Fatalf("token after reopen: %v", err)
	}
	if err := s2.Authorize(id, "dev-1", strconv.FormatInt(exp+1, 10), tok); !errors.Is(err, ErrToken) {
		t.Fatalf("token with a changed expiry: %v", err)
	}
}

func TestPutLimitsAndLookups(t *testing.T) {
	st := &memStore{m: map[string]map[string][]byte{}}
	s := open(t, t.TempDir(), st, nil)
	ctx := context.Background()
	var ie *InvalidError
	if _, _, err := s.Put(ctx, bytes.NewReader(make([]byte, 1001)), Upload{Version: "1", Type: "esp32"}); !errors.As(err, &ie) || ie.Field != "size" {
		t.Fatalf("too large: %v", err)
	}
	if _, _, err := s.Put(ctx, bytes.NewReader(nil), Upload{Version: "1", Type: "esp32"}); !errors.As(err, &ie) || ie.Msg != "the image is empty" {
		t.Fatalf("empty: %v", err)
	}
	if _, _, err := s.Put(ctx, strings.NewReader("x"), Upload{Version: "1", Type: "esp32", SHA256: "abc"}); !errors.As(err, &ie) || ie.Field != "sha256" {
		t.Fatalf("bad declared digest: %v", err)
	}
	a, _, err := s.Put(ctx, strings.NewReader("image a"), Upload{Version: "1", Type: "esp32"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(a.ID[:8]); err != nil || got.ID != a.ID {
		t.Fatalf("prefix: %v", err)
	}
	if _, err := s.Get(a.ID[:7]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("7-digit prefix: %v", err)
	}
	if _, err := s.Delete(ctx, "esp32@1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.path(a.ID)); !os.IsNotExist(err) {
		t.Fatalf("file kept: %v", err)
	}
}

// Delete holds Exclusive from its reference check until the artifact is
// gone, so nothing can start referencing it in between.
func TestDeleteHoldsExclusiveAcrossTheReferenceCheck(t *testing.T) {
	st := &memStore{m: map[string]map[string][]byte{}}
	var steps []string
	s, err := Open(context.Background(), Config{Dir: t.TempDir(), Store: st, MaxSize: 1000,
		Exclusive: func() func() {
			steps = append(steps, "hold")
			return func() { steps = append(steps, "release") }
		},
		InUse: func(id string) []string { steps = append(steps, "check"); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := s.Put(context.Background(), strings.NewReader("image"), Upload{Version: "1", Type: "esp32"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(context.Background(), a.ID); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(steps, " "); got != "hold check release" {
		t.Fatalf("delete steps %q, want hold check release", got)
	}
	if _, err := s.Get(a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}
