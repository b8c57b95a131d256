package shadow_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/umbra-iot/umbra/shadow"
)

// casStore is a compare-and-set store: Commit fails with ErrConflict when
// the shadow's revision moved since Load. beforeCommit, when set, runs once
// before the next Commit checks (another writer sneaking in).
type casStore struct {
	mu           sync.Mutex
	cur          shadow.Current
	rev          uint64
	conflicts    int
	beforeCommit func()
}

func (s *casStore) Load(shadow.Ref) (shadow.Current, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cur
	c.Rev = s.rev
	return c, nil
}

func (s *casStore) Commit(_ context.Context, c shadow.Change) error {
	if f := s.beforeCommit; f != nil {
		s.beforeCommit = nil
		f()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Rev != s.rev {
		s.conflicts++
		return fmt.Errorf("commit at revision %d, store at %d: %w", c.Rev, s.rev, shadow.ErrConflict)
	}
	s.rev++
	s.cur = shadow.Current{Doc: c.Doc, Version: c.Version}
	return nil
}

// TestServiceRunsAgainAfterConflict: when another writer commits between
// the service's Load and Commit, an unversioned update is applied on top of
// the other writer's state, and a versioned one becomes 409.
func TestServiceRunsAgainAfterConflict(t *testing.T) {
	ctx := context.Background()
	ref := shadow.Ref{Thing: "t1"}
	store := &casStore{}
	svc := shadow.NewService(shadow.Config{Store: store})
	other := shadow.NewService(shadow.Config{Store: store}) // another node's service
	upd := func(s *shadow.Service, payload string) shadow.Response {
		return s.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpUpdate, Origin: shadow.OriginHTTP, Payload: []byte(payload)})
	}
	if r := upd(svc, `{"state":{"reported":{"a":1}}}`); r.Err != nil || r.Version != 1 {
		t.Fatalf("create: %+v", r)
	}

	store.beforeCommit = func() {
		if r := upd(other, `{"state":{"reported":{"b":2}}}`); r.Err != nil || r.Version != 2 {
			t.Errorf("other writer: %+v", r)
		}
	}
	r := upd(svc, `{"state":{"reported":{"c":3}}}`)
	if r.Err != nil || r.Version != 3 {
		t.Fatalf("unversioned update after a conflict: %+v", r)
	}
	if store.conflicts != 1 {
		t.Fatalf("conflicts: %d, want 1", store.conflicts)
	}
	doc := string(store.cur.Doc)
	for _, want := range []string{`"a":1`, `"b":2`, `"c":3`} {
		if !strings.Contains(doc, want) {
			t.Fatalf("stored document %s lacks %s (lost update)", doc, want)
		}
	}

	store.beforeCommit = func() { upd(other, `{"state":{"reported":{"d":4}}}`) }
	r = upd(svc, `{"state":{"reported":{"e":5}},"version":3}`)
	if r.Err == nil || r.Err.Code != 409 {
		t.Fatalf("versioned update whose version was taken meanwhile: %+v, want 409", r)
	}

	store.beforeCommit = func() { upd(other, `{"state":{"reported":{"f":6}}}`) }
	r = svc.Handle(ctx, shadow.Request{Ref: ref, Op: shadow.OpDelete, Origin: shadow.OriginHTTP})
	if r.Err != nil || r.Version != 5 {
		t.Fatalf("delete after a conflict: %+v, want the version the other writer made (5)", r)
	}
	if store.cur.Doc != nil || store.cur.Version != 5 {
		t.Fatalf("after delete: %+v", store.cur)
	}
}
