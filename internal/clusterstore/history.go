package clusterstore

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/cluster"
	"github.com/umbra-iot/umbra/shadow"
)

// Shadow history on JetStream.
//
// The history of a shadow is the subject historySubject(ref) of the
// history stream (historyStream(bucket)): one message per accepted change,
// published after the change's compare-and-set succeeded. The stream keeps
// at most 2*History+2 messages per subject (a version can have an update
// and a delete entry), so the newest History versions are always there.
//
// A message holds kind(1) version(8) limit(8) revision(8) entry. Revision
// is the KV revision the change got: it orders the entries exactly as the
// changes were committed, even when two nodes publish their entries in the
// other order. Limit is the retention of the node that wrote it; a read
// uses the newest entry's, as the bbolt engine uses its head's.
//
// Reads give what the bbolt engine gives (store.DB.ShadowHistory): newest
// first, only the newest limit versions, only the current incarnation (the
// entries from the last version-1 update on), before and limit applied.

// HistoryRecord is one history entry (the same as store.HistoryRecord).
type HistoryRecord struct {
	Version int64
	Kind    byte // HistoryUpdate or HistoryDelete
	Entry   []byte
}

// History record kinds, as in the bbolt engine.
const (
	HistoryUpdate byte = 'u'
	HistoryDelete byte = 'x'
)

const historyHead = 25

// historyStream is the name of the history stream of a bucket.
func historyStream(bucket string) string { return bucket + "_history" }

// historyPrefix is the subject prefix of a bucket's history stream.
func historyPrefix(bucket string) string { return "$UMBRA.H." + bucket + "." }

func (s *ShadowStore) historySubject(ref shadow.Ref) string {
	return historyPrefix(s.cfg.Bucket) + Key(ref)
}

// perSubject is how many messages per shadow the history stream keeps for
// a retention of n versions.
func perSubject(n int) int64 { return 2*int64(max(n, 1)) + 2 }

// openHistory creates the history stream when absent and raises its
// per-subject limit when this node keeps more versions than it allows.
func openHistory(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, error) {
	name := historyStream(cfg.Bucket)
	want := perSubject(cfg.History)
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:              name,
			Description:       "Umbra shadow history (bucket " + cfg.Bucket + ")",
			Subjects:          []string{historyPrefix(cfg.Bucket) + ">"},
			Storage:           jetstream.FileStorage,
			Replicas:          cfg.Replicas,
			MaxMsgsPerSubject: want,
			Discard:           jetstream.DiscardOld,
			Duplicates:        time.Minute,
			AllowDirect:       false, // reads from the leader, as for the bucket
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("clusterstore: history stream %s: %w", name, err)
	}
	if sc := st.CachedInfo().Config; sc.MaxMsgsPerSubject < want || sc.AllowDirect {
		sc.MaxMsgsPerSubject = max(sc.MaxMsgsPerSubject, want)
		sc.AllowDirect = false
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("clusterstore: history stream %s: %w", name, err)
		}
		if st, err = js.Stream(ctx, name); err != nil {
			return nil, fmt.Errorf("clusterstore: history stream %s: %w", name, err)
		}
	}
	return st, nil
}

// appendHistory publishes c's history entry, the change having been
// committed at KV revision rev. A retry carries the same message id, so
// JetStream stores the entry once.
func (s *ShadowStore) appendHistory(ctx context.Context, c shadow.Change, rev uint64) error {
	kind := HistoryUpdate
	if c.Op == shadow.OpDelete {
		kind = HistoryDelete
	}
	msg := make([]byte, 0, historyHead+len(c.History))
	msg = append(msg, kind)
	msg = binary.BigEndian.AppendUint64(msg, uint64(c.Version))
	msg = binary.BigEndian.AppendUint64(msg, uint64(s.cfg.History))
	msg = binary.BigEndian.AppendUint64(msg, rev)
	msg = append(msg, c.History...)
	id := Key(c.Ref) + "@" + strconv.FormatUint(rev, 10)
	err := cluster.Retry(ctx, func(ctx context.Context) error {
		_, err := s.js.Publish(ctx, s.historySubject(c.Ref), msg, jetstream.WithMsgID(id))
		return err
	})
	if err != nil {
		return fmt.Errorf("clusterstore: history of %s version %d (the change itself is committed): %w", c.Ref, c.Version, err)
	}
	return nil
}

type historyMsg struct {
	HistoryRecord
	limit, rev uint64
}

// History returns up to limit entries of ref's history, newest first, with
// a version below before (0: from the newest); limit <= 0 means all kept.
// It reads the stream leader's state at the time of the call.
func (s *ShadowStore) History(ref shadow.Ref, before int64, limit int) ([]HistoryRecord, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	subj := s.historySubject(ref)
	// Walk the shadow's entries (at most perSubject) oldest first with the
	// message get API, which the stream leader answers (no direct gets on
	// the history stream): the state of the time of the call, no consumer
	// to create.
	var msgs []historyMsg
	for seq := uint64(1); ; {
		m, err := s.hist.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("clusterstore: history of %s: %w", ref, err)
		}
		seq = m.Sequence + 1
		d := m.Data
		if len(d) < historyHead {
			continue // not ours to judge
		}
		be := binary.BigEndian
		msgs = append(msgs, historyMsg{
			HistoryRecord: HistoryRecord{Kind: d[0], Version: int64(be.Uint64(d[1:])), Entry: d[historyHead:]},
			limit:         be.Uint64(d[9:]), rev: be.Uint64(d[17:]),
		})
	}
	return selectHistory(msgs, before, limit), nil
}

// selectHistory applies the bbolt engine's rules to the entries of one
// shadow (in any order).
func selectHistory(msgs []historyMsg, before int64, limit int) []HistoryRecord {
	slices.SortFunc(msgs, func(a, b historyMsg) int {
		if a.rev != b.rev {
			if a.rev > b.rev {
				return -1
			}
			return 1
		}
		return int(b.Kind) - int(a.Kind) // the delete after the update of a version
	})
	var out []HistoryRecord
	if len(msgs) == 0 {
		return nil
	}
	var floor uint64
	if h := msgs[0]; h.limit > 0 && uint64(h.Version) > h.limit {
		floor = uint64(h.Version) - h.limit
	}
	newer := int64(-1)
	for _, m := range msgs {
		if limit > 0 && len(out) >= limit {
			break
		}
		if uint64(m.Version) <= floor || (newer >= 0 && m.Version > newer) {
			break // past the retention, or an earlier incarnation
		}
		if before <= 0 || m.Version < before {
			out = append(out, m.HistoryRecord)
		}
		if m.Kind == HistoryUpdate && m.Version == 1 {
			break // the current incarnation started here
		}
		newer = m.Version
	}
	return out
}

// ListNamedShadows returns up to limit names of thing's named shadows
// (deleted ones left out) in name order, starting after the name after;
// next is the last name returned when more may follow. This is the bbolt
// engine's paging (store.DB.ListNamedShadows). The keys come from the
// bucket stream's leader; each candidate's entry is read to leave out
// tombstones.
func (s *ShadowStore) ListNamedShadows(thing, after string, limit int) (names []string, next string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	prefix := "$KV." + s.cfg.Bucket + "."
	filter := prefix + base64.RawURLEncoding.EncodeToString([]byte(thing)) + ".n.*"
	info, err := s.kvStream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, "", fmt.Errorf("clusterstore: list named shadows of %q: %w", thing, err)
	}
	var all []string
	for subj := range info.State.Subjects {
		enc := subj[strings.LastIndexByte(subj, '.')+1:]
		name, err := base64.RawURLEncoding.DecodeString(enc)
		if err != nil || len(name) == 0 {
			continue
		}
		if string(name) > after {
			all = append(all, string(name))
		}
	}
	slices.Sort(all)
	for _, name := range all {
		cur, err := s.Load(shadow.Ref{Thing: thing, Name: name})
		if err != nil {
			return nil, "", err
		}
		if cur.Doc == nil {
			continue // deleted
		}
		if limit > 0 && len(names) == limit {
			return names, names[len(names)-1], nil
		}
		names = append(names, name)
	}
	return names, "", nil
}
