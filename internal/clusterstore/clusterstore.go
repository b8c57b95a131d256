// Package clusterstore is the clustered shadow store engine: a shadow.Store
// on a NATS JetStream key-value bucket, so that several Umbra processes, each
// with its own shadow.Service, share one set of shadows with the guarantees
// a single node gives on bbolt.
//
// This is the first slice of cluster mode (issue 19). What it does:
//
//   - One KV entry per shadow (classic and named), replicated (Replicas,
//     3 by default) in file storage. A live shadow's entry holds its
//     document; a deleted shadow's entry is a tombstone holding the deleted
//     version and the deletion time, exactly what the bbolt engine keeps,
//     and it is ignored on load once older than TombstoneTTL (0: kept for
//     ever), so the version numbering after a delete is the bbolt engine's.
//     It is written with that TTL as its JetStream message TTL, so
//     JetStream removes it then.
//   - Commit is a compare-and-set on the entry's revision: a publish to
//     the key's subject expecting the revision Load returned as the
//     subject's last sequence (0: no entry yet), as the KV's own Create and
//     Update do. If another
//     process wrote in between, Commit writes nothing and returns an error
//     wrapping shadow.ErrConflict; the shadow.Service then runs the request
//     again on the new state. So optimistic locking (409 on a stale
//     "version"), version order (one accept per version) and "no lost
//     update" hold across processes.
//   - Commit returns when JetStream acknowledged the write, that is when a
//     majority of the bucket's replicas stored it. Each NATS server fsyncs
//     before that only with sync_interval: always (SyncAlways); otherwise
//     durability rests on the replicas, and a simultaneous power loss of a
//     majority may lose acknowledged writes. docs/cluster.md says so.
//   - Reads go to the bucket stream's leader (Open turns direct gets off on
//     the bucket's stream), so a get never returns a state older than an
//     update already acknowledged to anyone.
//   - History (Config.History versions per shadow) in a stream of its own,
//     and the listing of a thing's named shadows, with the bbolt engine's
//     results and paging (history.go).
//
// What it does not do yet:
//
//   - Sessions and cross-node MQTT delivery are not clustered here (the
//     registry, rollouts and jobs are in internal/clusterkv). All shadows
//     are listed, then followed, by Watch: the registry's index source on a
//     cluster node.
//
// An error whose outcome is unknown (a timeout waiting for JetStream's
// acknowledgement) is reported as a failure (the service answers 500), as
// an fsync error is on bbolt; the write may nevertheless have been applied.
package clusterstore

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/cluster"
	"github.com/umbra-iot/umbra/shadow"
)

// Config configures the shadow bucket.
type Config struct {
	// Bucket is the KV bucket's name (default "umbra_shadows").
	Bucket string
	// Replicas is the bucket's replication factor when Open creates it
	// (default 3; at most the number of JetStream servers).
	Replicas int
	// TombstoneTTL is how long a deleted shadow's version is kept (0: for
	// ever), as in the bbolt engine.
	TombstoneTTL time.Duration
	// Timeout bounds a Load (which has no context) and a Commit, retries
	// during a leader election included (default 10s).
	Timeout time.Duration
	// Now is the clock for tombstone expiry (nil: time.Now).
	Now func() time.Time
	// History is how many versions of history are kept per shadow (0:
	// none), as in the bbolt engine; they go to the history stream
	// (history.go).
	History int
}

// DefaultBucket is the bucket name used when Config.Bucket is empty.
const DefaultBucket = "umbra_shadows"

// ShadowStore is a shadow.Store on a JetStream KV bucket.
type ShadowStore struct {
	kv       jetstream.KeyValue
	js       jetstream.JetStream
	kvStream jetstream.Stream // the bucket's stream (listing)
	hist     jetstream.Stream // the history stream
	cfg      Config
}

var _ shadow.Store = (*ShadowStore)(nil)

// Entry kinds, the first byte of a value.
const (
	kindDoc       = 'D' // 'D' document
	kindTombstone = 'T' // 'T' version (8 bytes) deletion time (8 bytes, Unix seconds)
)

// Open binds to the bucket, creating it when absent, and makes its reads go
// to the stream leader. It retries while the cluster is electing leaders
// (cluster.Retry), until ctx ends.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*ShadowStore, error) {
	var st *ShadowStore
	err := cluster.Retry(ctx, func(ctx context.Context) (err error) {
		st, err = open(ctx, js, cfg)
		return err
	})
	return st, err
}

func open(ctx context.Context, js jetstream.JetStream, cfg Config) (*ShadowStore, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 3
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		return nil, fmt.Errorf("clusterstore: replicas %d: want 1 to 5", cfg.Replicas)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if _, err := js.KeyValue(ctx, cfg.Bucket); errors.Is(err, jetstream.ErrBucketNotFound) {
		// Create the bucket's stream with direct get off from the start,
		// rather than create the bucket and then update its stream: nodes
		// starting together all create it (identical configurations, so
		// all succeed), and an update racing the others' creates left
		// JetStream's requests unanswered (seen with three nodes starting
		// at once: every request timed out).
		_, err = js.CreateStream(ctx, kvStreamConfig(cfg))
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("clusterstore: create bucket %s: %w", cfg.Bucket, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("clusterstore: bucket %s: %w", cfg.Bucket, err)
	}
	// A KV bucket lets any replica answer a get (direct get), which may be
	// behind the leader. Turn that off, then bind: the binding reads the
	// setting once. A concurrent Open that creates the bucket may turn it
	// back on, hence the check after binding.
	stream := "KV_" + cfg.Bucket
	for range 5 {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return nil, fmt.Errorf("clusterstore: stream %s: %w", stream, err)
		}
		if sc := s.CachedInfo().Config; sc.AllowDirect || !sc.AllowMsgTTL {
			// Also a bucket made before tombstones expired by TTL.
			sc.AllowDirect, sc.AllowMsgTTL = false, true
			if _, err := js.UpdateStream(ctx, sc); err != nil {
				return nil, fmt.Errorf("clusterstore: turn direct get off and message TTLs on in %s: %w", stream, err)
			}
		}
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if err != nil {
			return nil, fmt.Errorf("clusterstore: bind bucket %s: %w", cfg.Bucket, err)
		}
		info, err := js.Stream(ctx, stream)
		if err != nil {
			return nil, fmt.Errorf("clusterstore: stream %s: %w", stream, err)
		}
		if sc := info.CachedInfo().Config; !sc.AllowDirect && sc.AllowMsgTTL {
			hist, err := openHistory(ctx, js, cfg)
			if err != nil {
				return nil, err
			}
			return &ShadowStore{kv: kv, js: js, kvStream: info, hist: hist, cfg: cfg}, nil
		}
	}
	return nil, fmt.Errorf("clusterstore: direct get on %s keeps being turned on", stream)
}

// kvStreamConfig is the stream of a KV bucket as nats.go's CreateKeyValue
// makes it (history 1), with direct get off (reads go to the leader) and
// per-message TTLs allowed (a tombstone is removed by JetStream once
// TombstoneTTL has passed).
func kvStreamConfig(cfg Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              "KV_" + cfg.Bucket,
		Description:       "Umbra device shadows",
		Subjects:          []string{"$KV." + cfg.Bucket + ".>"},
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		Discard:           jetstream.DiscardNew,
		AllowDirect:       false,
		AllowMsgTTL:       true,
	}
}

// Key is the KV key of a shadow. Thing and shadow names may hold ':',
// which KV keys may not, so both are base64url encoded:
// "<thing>.c" for the classic shadow, "<thing>.n.<name>" for a named one.
func Key(r shadow.Ref) string {
	k := base64.RawURLEncoding.EncodeToString([]byte(r.Thing))
	if r.Name == "" {
		return k + ".c"
	}
	return k + ".n." + base64.RawURLEncoding.EncodeToString([]byte(r.Name))
}

// Load implements shadow.Store. A read changes nothing, so an attempt that
// meets a leader election (no answer, no responders) is simply made again,
// in attempts of cluster.AttemptTimeout, until Config.Timeout.
func (s *ShadowStore) Load(ref shadow.Ref) (shadow.Current, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	var e jetstream.KeyValueEntry
	err := cluster.Retry(ctx, func(ctx context.Context) (err error) {
		e, err = s.kv.Get(ctx, Key(ref))
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		// No entry (or a KV delete marker, which Umbra never writes):
		// Commit creates the key.
		return shadow.Current{}, nil
	}
	if err != nil {
		return shadow.Current{}, fmt.Errorf("clusterstore: load %s: %w", ref, err)
	}
	cur, err := s.decode(e.Value())
	if err != nil {
		return shadow.Current{}, fmt.Errorf("clusterstore: load %s (revision %d): %w", ref, e.Revision(), err)
	}
	cur.Rev = e.Revision()
	return cur, nil
}

func (s *ShadowStore) decode(v []byte) (shadow.Current, error) {
	if len(v) == 0 {
		return shadow.Current{}, errors.New("empty entry")
	}
	switch v[0] {
	case kindDoc:
		if len(v) == 1 {
			return shadow.Current{}, errors.New("document entry without a document")
		}
		return shadow.Current{Doc: v[1:]}, nil
	case kindTombstone:
		if len(v) != 17 {
			return shadow.Current{}, fmt.Errorf("tombstone of %d bytes", len(v))
		}
		deletedAt := time.Unix(int64(binary.BigEndian.Uint64(v[9:])), 0)
		if ttl := s.cfg.TombstoneTTL; ttl > 0 && s.cfg.Now().Sub(deletedAt) >= ttl {
			return shadow.Current{}, nil // expired: as if never existed
		}
		return shadow.Current{Version: int64(binary.BigEndian.Uint64(v[1:9]))}, nil
	}
	return shadow.Current{}, fmt.Errorf("unknown entry kind %q", v[0])
}

// waitPast waits, for a bounded time, until the key's revision is no longer
// rev. A compare-and-set is refused as soon as another write to the key is
// in flight on the stream leader, before that write is applied and
// readable; running the request again at once would read the old state
// and be refused again. Waiting until the winner's write is readable makes
// each ErrConflict stand for a change the Service will see.
func (s *ShadowStore) waitPast(ctx context.Context, key string, rev uint64) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	wait := 500 * time.Microsecond
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		e, err := s.kv.Get(ctx, key)
		switch {
		case err == nil && e.Revision() != rev:
			return
		case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
			return // let the Service run again and meet the error
		}
		select {
		case <-ctx.Done():
			return // the in-flight write may have failed: try again anyway
		case <-t.C:
		}
		wait = min(2*wait, 20*time.Millisecond)
		t.Reset(wait)
	}
}

// Commit implements shadow.Store: a compare-and-set on the revision Load
// returned (c.Rev), published to the bucket's subject with JetStream's
// "expected last sequence per subject".
//
// An attempt that meets a leader election (no answer within
// cluster.AttemptTimeout, no responders, "no leader") is made again, until
// ctx or Config.Timeout ends, rather than answered 500 after the whole
// timeout. Making the compare-and-set again applies it at most once, but
// once an attempt's answer was lost, a later attempt's refusal may be the
// mark of that attempt itself. Every attempt of one Commit therefore
// carries the same message id, and after such a refusal the key's last
// message is read: carrying this Commit's id, it is this write, accepted;
// otherwise the earlier attempt may or may not have been applied before
// another write replaced it, and Commit returns an error (the request is
// answered 500, outcome unknown) rather than a conflict, on which the
// Service would apply the request a second time.
func (s *ShadowStore) Commit(ctx context.Context, c shadow.Change) error {
	var v []byte
	if c.Doc == nil {
		v = make([]byte, 1, 17)
		v[0] = kindTombstone
		v = binary.BigEndian.AppendUint64(v, uint64(c.Version))
		v = binary.BigEndian.AppendUint64(v, uint64(c.Time.Unix()))
	} else {
		v = make([]byte, 1, 1+len(c.Doc))
		v[0] = kindDoc
		v = append(v, c.Doc...)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	key := Key(c.Ref)
	msg := &nats.Msg{Subject: "$KV." + s.cfg.Bucket + "." + key, Data: v}
	id := key + "@" + strconv.FormatUint(c.Rev, 10) + "/" + strconv.FormatUint(rand.Uint64(), 36)
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(c.Rev), jetstream.WithMsgID(id)}
	if c.Doc == nil && s.cfg.TombstoneTTL > 0 {
		// JetStream removes the tombstone when it would be ignored on
		// load, so deleted shadows do not stay in the bucket (its TTLs
		// are whole seconds, at least one).
		opts = append(opts, jetstream.WithMsgTTL(max(s.cfg.TombstoneTTL.Round(time.Second), time.Second)))
	}
	var rev uint64
	unknown := false // an earlier attempt may have been applied
	err := cluster.Retry(ctx, func(ctx context.Context) error {
		ack, err := s.js.PublishMsg(ctx, msg, opts...)
		if err == nil {
			rev = ack.Sequence
		} else if cluster.Transient(err) {
			unknown = true
		}
		return err
	})
	if wrongLastSequence(err) && unknown {
		var last *jetstream.RawStreamMsg
		gerr := cluster.Retry(ctx, func(ctx context.Context) (err error) {
			last, err = s.kvStream.GetLastMsgForSubject(ctx, msg.Subject)
			return err
		})
		if gerr == nil && last.Header.Get(jetstream.MsgIDHeader) == id {
			rev, err = last.Sequence, nil
		} else {
			return fmt.Errorf("clusterstore: commit %s: outcome unknown: an attempt's answer was lost and the key has changed since: %w", c.Ref, err)
		}
	}
	if wrongLastSequence(err) {
		s.waitPast(ctx, key, c.Rev)
		if c.Rev == 0 {
			return fmt.Errorf("clusterstore: create %s: %w", c.Ref, shadow.ErrConflict)
		}
		return fmt.Errorf("clusterstore: update %s at revision %d: %w", c.Ref, c.Rev, shadow.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("clusterstore: commit %s: %w", c.Ref, err)
	}
	if c.History != nil && s.cfg.History > 0 {
		return s.appendHistory(ctx, c, rev)
	}
	return nil
}

// wrongLastSequence reports whether JetStream refused a publish because
// the subject's last sequence was not the one expected: another write to
// the key came first. A replicated stream reports it with code 10164
// rather than 10071 (as nats.go's own KV maps both to a revision mismatch).
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// RefOfKey is the shadow a KV key names (the inverse of Key).
func RefOfKey(key string) (shadow.Ref, bool) {
	thing, rest, ok := strings.Cut(key, ".")
	if !ok {
		return shadow.Ref{}, false
	}
	t, err := base64.RawURLEncoding.DecodeString(thing)
	if err != nil || len(t) == 0 {
		return shadow.Ref{}, false
	}
	if rest == "c" {
		return shadow.Ref{Thing: string(t)}, true
	}
	name, ok := strings.CutPrefix(rest, "n.")
	if !ok {
		return shadow.Ref{}, false
	}
	n, err := base64.RawURLEncoding.DecodeString(name)
	if err != nil || len(n) == 0 {
		return shadow.Ref{}, false
	}
	return shadow.Ref{Thing: string(t), Name: string(n)}, true
}

// Watch calls fn with every shadow's current document (nil for a deleted
// shadow), then with every change any node commits, in commit order per
// shadow, until ctx ends. It returns once the current documents have been
// delivered (or with an error when that takes longer than three times
// Config.Timeout). fn runs on one goroutine.
//
// Cluster mode feeds the registry's fleet index from it, so that a fleet
// query on any node sees shadow changes made on every node (eventually:
// the watch delivers a change a few milliseconds after its commit).
func (s *ShadowStore) Watch(ctx context.Context, fn func(ref shadow.Ref, doc []byte)) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("clusterstore: watch %s: %w", s.cfg.Bucket, err)
	}
	ready := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(ready)
					}
					continue
				}
				ref, ok := RefOfKey(e.Key())
				if !ok {
					continue
				}
				var doc []byte
				if e.Operation() == jetstream.KeyValuePut {
					if cur, err := s.decode(e.Value()); err == nil {
						doc = cur.Doc
					}
				}
				fn(ref, doc)
			}
		}
	}()
	t := time.NewTimer(3 * s.cfg.Timeout)
	defer t.Stop()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("clusterstore: watch %s: the current shadows did not arrive within %s", s.cfg.Bucket, 3*s.cfg.Timeout)
	}
}
