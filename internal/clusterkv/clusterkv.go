// Package clusterkv is cluster mode's shared transactional key-value store
// (docs/cluster.md, "Registry, groups, rollouts and jobs"): the named-bucket
// UpdateKV / ViewKV / StageKV / Flush shape that the registry, the artifact
// metadata, the AWS jobs executions and the rollout engine use on bbolt,
// shared by every Umbra node of a cluster through one JetStream stream.
//
// # Use
//
//	s, err := clusterkv.Open(ctx, js, clusterkv.Config{Replicas: 3, Node: "a"})
//	err = s.UpdateKV(ctx, func(kv clusterkv.KV) error {
//		v := kv.Get("bucket", "key")
//		return kv.Put("bucket", "key", append(v, 'x'))
//	})
//	err = s.ViewKV(func(kv clusterkv.KV) error { ...; return nil })
//	defer s.Close()
//
// KV has the method set of registry.KV and store.KV, so internal/storeadapt
// adapts a *Store to every package's Store interface.
//
// # How it works
//
// Every record is one message in the stream (default "umbra_meta", file
// storage, Config.Replicas replicas, at most one message per subject, atomic
// batch publish allowed). A record's subject is
// <stream>.k<base64url(bucket)>.k<base64url(key)>; a deleted record is a
// message with the header Umbra-Op: del and no body. Because the stream keeps
// only the newest message per subject, it holds the current state and does
// not grow with the number of writes.
//
// Every node follows the stream with an ordered consumer from the first
// message and applies what it reads, in stream order, to a local replica (a
// bbolt file without fsync under Config.Dir, rebuilt from the stream at each
// Open and removed at Close). The replica records the stream sequence it
// has applied; one transaction's messages are applied in one bbolt
// transaction, so a reader of the replica sees whole transactions only.
//
// UpdateKV(fn):
//  1. waits until the replica has applied the stream's last sequence (one
//     stream info request), so fn never starts from a state older than a
//     write already acknowledged to anyone;
//  2. runs fn against the replica as of its applied sequence S, with fn's
//     own writes kept in an overlay (fn reads its own writes, ForEach and
//     ForEachFrom merge them in key order); if fn fails, nothing is written;
//  3. publishes the write set as ONE atomic batch (JetStream atomic batch
//     publish: all messages are stored or none), the first message carrying
//     Nats-Expected-Last-Sequence: S. If any node committed after S, the
//     batch is rejected; the node catches up and runs fn again (at most
//     Config.MaxAttempts times, then ErrConflict). So every committed
//     transaction ran on the state just before it in the stream's order:
//     the transactions are serializable (indeed linearizable) across nodes;
//  4. returns once JetStream acknowledged the batch (stored by a majority of
//     the replicas; fsynced only with sync_interval: always on the NATS
//     servers) and the local replica applied it, so a ViewKV on the same
//     node that follows sees the write.
//
// Writes on one node are serialised (one UpdateKV at a time per node), so
// they do not conflict with each other; nodes conflict only when they write
// at the same moment. A transaction writes at most Config.MaxBatch records
// (default 1000, the NATS server's default max_batch_size); a larger write
// set fails with ErrTooLarge before anything is sent.
//
// ViewKV(fn) waits like step 1, then runs fn on the replica: a read sees
// every write acknowledged before it started.
//
// StageKV / Flush are write-behind for blind writes (records written
// without reading, such as connectivity): staged records go out after
// Config.Linger or at Flush, in batches of at most MaxBatch records,
// without the expected-sequence check (they do not depend on what they
// read). Each batch is atomic; a Flush of more than MaxBatch records is
// not one transaction.
//
// OnApply (Config) is called, in stream order, after each transaction is
// applied to the replica, with its records and whether this node wrote it:
// the seam by which the registry's in-memory index follows changes made
// on other nodes.
package clusterkv

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	bolt "go.etcd.io/bbolt"

	"github.com/umbra-iot/umbra/internal/cluster"
	"github.com/umbra-iot/umbra/internal/store"
)

// KV is a transaction over named buckets: the same interface as the bbolt
// store's, so domain packages run the same code on either.
type KV = store.KV

// Change is one record of an applied transaction.
type Change struct {
	Bucket, Key string
	Value       []byte // nil: deleted
}

// Config configures a Store.
type Config struct {
	// Stream is the JetStream stream's name, also its subject prefix
	// (default "umbra_meta").
	Stream string
	// Replicas is the stream's replication factor when Open creates it
	// (default 3).
	Replicas int
	// Node names this node (recorded on each message; OnApply's local).
	Node string
	// Dir holds the local replica file (default: a new temporary
	// directory, removed at Close).
	Dir string
	// Timeout bounds requests that have no context (ViewKV, Open's catch
	// up; default 10s).
	Timeout time.Duration
	// MaxAttempts bounds how often UpdateKV runs fn after conflicts
	// (default 64).
	MaxAttempts int
	// MaxBatch is the most records one transaction may write (default
	// 1000, the NATS server's default max_batch_size).
	MaxBatch int
	// Linger is how long StageKV's records wait before they are sent
	// (default 20ms).
	Linger time.Duration
	// OnApply, when set, is called after each transaction is applied to
	// the local replica, in stream order, from one goroutine, before the
	// transaction's sequence counts as applied: once a ViewKV or UpdateKV
	// returns, OnApply has been called for every transaction it saw. It
	// must not block, nor call UpdateKV, ViewKV or Flush (it would wait
	// for itself).
	OnApply func(changes []Change, local bool)
}

// DefaultStream is Config.Stream's default.
const DefaultStream = "umbra_meta"

// Errors.
var (
	ErrConflict = errors.New("clusterkv: too many conflicting transactions")
	ErrTooLarge = errors.New("clusterkv: transaction writes too many records")
	ErrClosed   = errors.New("clusterkv: closed")
)

// Headers on the stream's messages.
const (
	hdrOp     = "Umbra-Op" // "del" on a deletion
	hdrTx     = "Umbra-Tx" // the transaction's id (= its batch id)
	hdrTxLast = "Umbra-Tx-Last"
	hdrNode   = "Umbra-Node"
)

var metaBucket = []byte("\x00clusterkv") // the replica's own bucket: "seq"

// Store is the shared transactional store.
type Store struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	cons   jetstream.ConsumeContext
	db     *bolt.DB
	path   string
	tmpDir string

	wmu sync.Mutex // one UpdateKV/Flush publish at a time on this node

	mu       sync.Mutex
	applied  uint64
	advance  chan struct{} // closed and replaced when applied grows
	applyErr error
	closed   bool

	// the applier's transaction being read (applier goroutine only)
	pendTx   string
	pending  []*jetstream.MsgMetadata
	pendMsgs []jetstream.Msg
	// rmu serialises the applier (receive) with a follower restart; gen
	// is the current follower's generation (stale callbacks are dropped).
	rmu         sync.Mutex
	gen         uint64
	lastRestart time.Time

	smu     sync.Mutex
	staged  map[[2]string][]byte // nil value = delete (tracked by stagedDel)
	stagedD map[[2]string]bool
	timer   *time.Timer
}

// Open creates (or updates) the stream, starts following it and returns
// once the local replica has caught up with it.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 3
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 64
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 20 * time.Millisecond
	}
	s := &Store{cfg: cfg, js: js, nc: js.Conn(), advance: make(chan struct{}),
		staged: map[[2]string][]byte{}, stagedD: map[[2]string]bool{}}
	var err error
	err = cluster.Retry(ctx, func(ctx context.Context) (err error) {
		s.stream, err = js.CreateOrUpdateStream(ctx, streamConfig(cfg))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("clusterkv: stream %s: %w", cfg.Stream, err)
	}
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "umbra-clusterkv-"); err != nil {
			return nil, err
		}
		s.tmpDir = dir
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s.path = filepath.Join(dir, cfg.Stream+".replica.db")
	_ = os.Remove(s.path) // rebuilt from the stream
	s.db, err = bolt.Open(s.path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, Timeout: time.Second})
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("clusterkv: replica: %w", err)
	}
	if err := s.follow(ctx, 0); err != nil {
		s.cleanup()
		return nil, err
	}
	// The first stream info may meet the new stream's leader election,
	// which can leave it unanswered for the whole deadline: short
	// attempts, repeated (TestOpenConcurrentlyOnFreshCluster).
	if err := cluster.Retry(ctx, s.sync); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close stops following the stream and removes the local replica.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.advance)
	s.advance = make(chan struct{})
	s.mu.Unlock()
	s.smu.Lock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.smu.Unlock()
	s.rmu.Lock()
	cons := s.cons
	s.rmu.Unlock()
	if cons != nil {
		cons.Stop()
	}
	// the applier may still be in a callback: take the write lock of the
	// replica by closing it (bolt waits for open transactions)
	s.cleanup()
	return nil
}

func (s *Store) cleanup() {
	if s.db != nil {
		_ = s.db.Close()
	}
	if s.path != "" {
		_ = os.Remove(s.path)
	}
	if s.tmpDir != "" {
		_ = os.RemoveAll(s.tmpDir)
	}
}

// follow starts the follower (an ordered consumer applying the stream to
// the replica) after sequence from (0: from the start). Short pull expiry
// and heartbeat make nats.go notice a consumer whose server went away
// within about two seconds.
func (s *Store) follow(ctx context.Context, from uint64) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from + 1}
	}
	var cons jetstream.Consumer
	err := cluster.Retry(ctx, func(ctx context.Context) (err error) {
		cons, err = s.js.OrderedConsumer(ctx, s.cfg.Stream, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("clusterkv: consumer: %w", err)
	}
	s.rmu.Lock()
	s.gen++
	gen := s.gen
	s.pendMsgs, s.pending, s.pendTx = nil, nil, ""
	cc, err := cons.Consume(func(m jetstream.Msg) { s.receive(gen, m) },
		jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		s.rmu.Unlock()
		return fmt.Errorf("clusterkv: consume: %w", err)
	}
	old := s.cons
	s.cons = cc
	s.rmu.Unlock()
	// outside rmu: a callback of the old follower may be waiting for it
	if old != nil {
		old.Stop()
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed { // Close ran meanwhile and stopped the old one
		cc.Stop()
	}
	return nil
}

// followerStallAfter is how long a wait for the replica may see no
// progress before the follower is started again after the applied
// sequence. Seen: after a NATS server restart, an ordered consumer that
// kept its heartbeats but delivered nothing more, leaving the node's view
// stalled (TestServerRestartMidRun failed 2 of 8 runs, "waiting for
// sequence 100 (applied 22)").
const followerStallAfter = 3 * time.Second

// restartFollower starts the follower again after the applied sequence,
// at most once per followerStallAfter.
func (s *Store) restartFollower() {
	s.rmu.Lock()
	if time.Since(s.lastRestart) < followerStallAfter {
		s.rmu.Unlock()
		return
	}
	s.lastRestart = time.Now()
	s.rmu.Unlock()
	s.mu.Lock()
	applied, closed := s.applied, s.closed
	s.mu.Unlock()
	if closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	_ = s.follow(ctx, applied) // on failure the next stalled wait tries again
}

// Applied is the stream sequence the local replica has applied.
func (s *Store) Applied() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

// ---- the applier ----

// receive is the ordered consumer's callback: it gathers one
// transaction's messages and applies them together.
func (s *Store) receive(gen uint64, m jetstream.Msg) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if gen != s.gen {
		return // a follower that was replaced
	}
	md, err := m.Metadata()
	if err != nil {
		return
	}
	tx := m.Headers().Get(hdrTx)
	if len(s.pendMsgs) > 0 && (tx == "" || tx != s.pendTx) {
		// a new transaction starts: the previous one is complete (batches
		// are stored contiguously), even if its last message was
		// superseded by a later write of the same record
		s.flushPending()
	}
	s.pendTx = tx
	s.pendMsgs = append(s.pendMsgs, m)
	s.pending = append(s.pending, md)
	// A transaction is complete at its last message, or when a message of
	// another one follows (its last message was superseded: the stream
	// keeps one message per record, and the newer one that replaced it
	// always follows). Not when the consumer has caught up (NumPending 0):
	// the server stores a batch's messages one by one, so a consumer can
	// be delivered the first before the rest exist, and applying then tore
	// the transaction in two (TestOnApply under load).
	if tx == "" || m.Headers().Get(hdrTxLast) != "" {
		s.flushPending()
	}
}

func (s *Store) flushPending() {
	msgs, mds := s.pendMsgs, s.pending
	s.pendMsgs, s.pending, s.pendTx = nil, nil, ""
	if len(msgs) == 0 {
		return
	}
	seq := mds[len(mds)-1].Sequence.Stream
	changes := make([]Change, 0, len(msgs))
	local := true
	for _, m := range msgs {
		b, k, ok := s.decodeSubject(m.Subject())
		if !ok {
			continue
		}
		c := Change{Bucket: b, Key: k}
		if m.Headers().Get(hdrOp) != "del" {
			c.Value = bytes.Clone(m.Data())
			if c.Value == nil {
				c.Value = []byte{}
			}
		}
		if m.Headers().Get(hdrNode) != s.cfg.Node {
			local = false
		}
		changes = append(changes, c)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, c := range changes {
			if c.Value == nil {
				if b := tx.Bucket([]byte(c.Bucket)); b != nil {
					if err := b.Delete([]byte(c.Key)); err != nil {
						return err
					}
				}
				continue
			}
			b, err := tx.CreateBucketIfNotExists([]byte(c.Bucket))
			if err != nil {
				return err
			}
			if err := b.Put([]byte(c.Key), c.Value); err != nil {
				return err
			}
		}
		mb, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		return mb.Put([]byte("seq"), binary.BigEndian.AppendUint64(nil, seq))
	})
	// OnApply runs before the sequence counts as applied, so that a
	// ViewKV or UpdateKV that returns has had every earlier transaction
	// passed to OnApply.
	if err == nil && s.cfg.OnApply != nil && len(changes) > 0 {
		s.cfg.OnApply(changes, local)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if err != nil {
		s.applyErr = err
		close(s.advance)
		s.advance = make(chan struct{})
	} else if seq > s.applied {
		s.applied = seq
		close(s.advance)
		s.advance = make(chan struct{})
	}
	s.mu.Unlock()
}

// waitApplied waits until the replica has applied seq.
func (s *Store) waitApplied(ctx context.Context, seq uint64) error {
	for {
		s.mu.Lock()
		applied, ch, closed, aerr := s.applied, s.advance, s.closed, s.applyErr
		s.mu.Unlock()
		switch {
		case closed:
			return ErrClosed
		case aerr != nil:
			return fmt.Errorf("clusterkv: replica: %w", aerr)
		case applied >= seq:
			return nil
		}
		stall := time.NewTimer(followerStallAfter)
		select {
		case <-ch:
		case <-stall.C:
			go s.restartFollower()
		case <-ctx.Done():
			stall.Stop()
			return fmt.Errorf("clusterkv: waiting for sequence %d (applied %d): %w", seq, applied, ctx.Err())
		}
		stall.Stop()
	}
}

// sync waits until the replica has applied the stream's last sequence.
// The stream's last sequence is asked in attempts of
// cluster.AttemptTimeout until ctx ends: a request that meets a leader
// election gets no answer, and reading it again changes nothing.
func (s *Store) sync(ctx context.Context) error {
	var info *jetstream.StreamInfo
	err := cluster.Retry(ctx, func(ctx context.Context) (err error) {
		info, err = s.stream.Info(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("clusterkv: stream info: %w", err)
	}
	return s.waitApplied(ctx, info.State.LastSeq)
}

// ---- subjects ----

var enc = base64.RawURLEncoding

func (s *Store) subject(bucket, key string) string {
	return s.cfg.Stream + ".k" + enc.EncodeToString([]byte(bucket)) + ".k" + enc.EncodeToString([]byte(key))
}

func (s *Store) decodeSubject(subj string) (bucket, key string, ok bool) {
	rest, ok := strings.CutPrefix(subj, s.cfg.Stream+".k")
	if !ok {
		return "", "", false
	}
	b64b, b64k, ok := strings.Cut(rest, ".k")
	if !ok {
		return "", "", false
	}
	b, err1 := enc.DecodeString(b64b)
	k, err2 := enc.DecodeString(b64k)
	if err1 != nil || err2 != nil || len(b) == 0 || len(k) == 0 || bytes.Equal(b, metaBucket) {
		return "", "", false
	}
	return string(b), string(k), true
}

// ---- transactions ----

// ViewKV runs fn on a state that includes every write acknowledged before
// the call.
func (s *Store) ViewKV(fn func(KV) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	if err := s.sync(ctx); err != nil {
		return err
	}
	return s.db.View(func(tx *bolt.Tx) error { return fn(&txn{tx: tx}) })
}

// UpdateKV runs fn and commits its writes atomically, serializably with
// every other node's transactions (see the package doc). An error from fn
// is returned and nothing is written. It returns once the writes are
// acknowledged by JetStream and applied to the local replica.
func (s *Store) UpdateKV(ctx context.Context, fn func(KV) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.sync(ctx); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		var t *txn
		var seq uint64
		err := s.db.View(func(tx *bolt.Tx) error {
			if mb := tx.Bucket(metaBucket); mb != nil {
				if v := mb.Get([]byte("seq")); len(v) == 8 {
					seq = binary.BigEndian.Uint64(v)
				}
			}
			t = &txn{tx: tx, writes: map[string]map[string][]byte{}}
			err := fn(t)
			t.tx = nil
			return err
		})
		if err != nil {
			return err
		}
		writes := t.writeSet()
		if len(writes) == 0 {
			return nil
		}
		if len(writes) > s.cfg.MaxBatch {
			return fmt.Errorf("%w: %d records, at most %d", ErrTooLarge, len(writes), s.cfg.MaxBatch)
		}
		last, err := s.publish(ctx, writes, &seq)
		var wrong *wrongLastError
		if errors.As(err, &wrong) {
			if attempt >= s.cfg.MaxAttempts {
				return fmt.Errorf("%w (%d attempts)", ErrConflict, attempt)
			}
			target := wrong.last
			if target == 0 {
				if err := s.sync(ctx); err != nil {
					return err
				}
			} else if err := s.waitApplied(ctx, target); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		return s.waitApplied(ctx, last)
	}
}

// StageKV queues a blind write (value nil: delete), sent after
// Config.Linger or at the next Flush.
func (s *Store) StageKV(bucket, key string, value []byte) {
	s.smu.Lock()
	defer s.smu.Unlock()
	k := [2]string{bucket, key}
	s.staged[k] = bytes.Clone(value)
	s.stagedD[k] = value == nil
	if s.timer == nil {
		s.timer = time.AfterFunc(s.cfg.Linger, func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
			defer cancel()
			_ = s.Flush(ctx)
		})
	}
}

// Flush sends the staged writes and returns once they are acknowledged
// and applied locally.
func (s *Store) Flush(ctx context.Context) error {
	s.smu.Lock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	staged, del := s.staged, s.stagedD
	s.staged, s.stagedD = map[[2]string][]byte{}, map[[2]string]bool{}
	s.smu.Unlock()
	if len(staged) == 0 {
		return nil
	}
	writes := make([]write, 0, len(staged))
	for k, v := range staged {
		writes = append(writes, write{bucket: k[0], key: k[1], value: v, del: del[k]})
	}
	slices.SortFunc(writes, func(a, b write) int { return strings.Compare(a.bucket+"\x00"+a.key, b.bucket+"\x00"+b.key) })
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var last uint64
	for chunk := range slices.Chunk(writes, s.cfg.MaxBatch) {
		seq, err := s.publish(ctx, chunk, nil)
		if err != nil {
			// put back what was not sent, unless written again since
			s.smu.Lock()
			for _, w := range writes {
				k := [2]string{w.bucket, w.key}
				if _, again := s.staged[k]; !again {
					s.staged[k], s.stagedD[k] = w.value, w.del
				}
			}
			s.smu.Unlock()
			return err
		}
		last = seq
	}
	return s.waitApplied(ctx, last)
}

type write struct {
	bucket, key string
	value       []byte
	del         bool
}

type wrongLastError struct {
	last uint64
	desc string
}

func (e *wrongLastError) Error() string { return "clusterkv: " + e.desc }

type pubAck struct {
	Seq   uint64 `json:"seq"`
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// errCodeWrongLastSeq is JetStream's "wrong last sequence" error code.
const errCodeWrongLastSeq = 10071

// publish sends writes as one atomic batch (the first message expecting
// the stream's last sequence to be *expect, when set) and returns the
// sequence of its last message.
func (s *Store) publish(ctx context.Context, writes []write, expect *uint64) (uint64, error) {
	id := nuid.Next()
	for i, w := range writes {
		m := nats.NewMsg(s.subject(w.bucket, w.key))
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		m.Header.Set(hdrTx, id)
		m.Header.Set(hdrNode, s.cfg.Node)
		if i == 0 && expect != nil {
			m.Header.Set("Nats-Expected-Last-Sequence", strconv.FormatUint(*expect, 10))
		}
		if w.del {
			m.Header.Set(hdrOp, "del")
		} else {
			m.Data = w.value
		}
		if i < len(writes)-1 {
			if err := s.nc.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("clusterkv: publish: %w", err)
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		m.Header.Set(hdrTxLast, "1")
		rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		resp, err := s.nc.RequestMsgWithContext(rctx, m)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("clusterkv: commit (outcome unknown): %w", err)
		}
		var ack pubAck
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return 0, fmt.Errorf("clusterkv: commit: bad acknowledgement %q", resp.Data)
		}
		if ack.Error != nil {
			if ack.Error.ErrCode == errCodeWrongLastSeq {
				e := &wrongLastError{desc: ack.Error.Description}
				if _, n, ok := strings.Cut(ack.Error.Description, ": "); ok {
					e.last, _ = strconv.ParseUint(strings.TrimSpace(n), 10, 64)
				}
				return 0, e
			}
			return 0, fmt.Errorf("clusterkv: commit: %s (code %d)", ack.Error.Description, ack.Error.ErrCode)
		}
		return ack.Seq, nil
	}
	return 0, nil
}

// ---- a transaction: the replica plus an overlay of fn's writes ----

type txn struct {
	tx     *bolt.Tx
	writes map[string]map[string][]byte // nil value: deleted; nil map: read-only
}

var errReadOnly = errors.New("clusterkv: write in a read-only transaction")

func (t *txn) Get(bucket, key string) []byte {
	if w, ok := t.writes[bucket][key]; ok {
		return bytes.Clone(w)
	}
	if t.tx == nil {
		return nil
	}
	if b := t.tx.Bucket([]byte(bucket)); b != nil {
		return bytes.Clone(b.Get([]byte(key)))
	}
	return nil
}

func (t *txn) set(bucket, key string, v []byte) error {
	if t.writes == nil {
		return errReadOnly
	}
	if bucket == "" || bucket == string(metaBucket) {
		return fmt.Errorf("clusterkv: bad bucket name %q", bucket)
	}
	if key == "" {
		return errors.New("clusterkv: empty key")
	}
	m := t.writes[bucket]
	if m == nil {
		m = map[string][]byte{}
		t.writes[bucket] = m
	}
	m[key] = v
	return nil
}

func (t *txn) Put(bucket, key string, value []byte) error {
	v := bytes.Clone(value)
	if v == nil {
		v = []byte{}
	}
	return t.set(bucket, key, v)
}

func (t *txn) Delete(bucket, key string) error { return t.set(bucket, key, nil) }

func (t *txn) ForEach(bucket, prefix string, fn func(key string, value []byte) error) error {
	return t.iterate(bucket, prefix, func(k string) bool { return strings.HasPrefix(k, prefix) }, fn)
}

func (t *txn) ForEachFrom(bucket, start string, fn func(key string, value []byte) error) error {
	return t.iterate(bucket, start, func(string) bool { return true }, fn)
}

// iterate merges the replica's keys and the overlay's from start on, in
// key order, while in(key).
func (t *txn) iterate(bucket, start string, in func(string) bool, fn func(key string, value []byte) error) error {
	var over []string
	for k := range t.writes[bucket] {
		if k >= start && in(k) {
			over = append(over, k)
		}
	}
	slices.Sort(over)
	var c *bolt.Cursor
	if t.tx != nil {
		if b := t.tx.Bucket([]byte(bucket)); b != nil {
			c = b.Cursor()
		}
	}
	var bk, bv []byte
	if c != nil {
		bk, bv = c.Seek([]byte(start))
	}
	for {
		haveB := bk != nil && in(string(bk))
		if !haveB && len(over) == 0 {
			return nil
		}
		var key string
		var val []byte
		switch {
		case haveB && (len(over) == 0 || string(bk) < over[0]):
			key, val = string(bk), bytes.Clone(bv)
			bk, bv = c.Next()
		default:
			key = over[0]
			if haveB && string(bk) == key {
				bk, bv = c.Next()
			}
			over = over[1:]
			w := t.writes[bucket][key]
			if w == nil {
				continue // deleted in this transaction
			}
			val = bytes.Clone(w)
		}
		if err := fn(key, val); err != nil {
			return err
		}
	}
}

func (t *txn) writeSet() []write {
	var out []write
	for b, m := range t.writes {
		for k, v := range m {
			out = append(out, write{bucket: b, key: k, value: v, del: v == nil})
		}
	}
	slices.SortFunc(out, func(a, b write) int { return strings.Compare(a.bucket+"\x00"+a.key, b.bucket+"\x00"+b.key) })
	return out
}

// streamConfig is the shared stream's configuration.
func streamConfig(cfg Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               cfg.Stream,
		Subjects:           []string{cfg.Stream + ".>"},
		Storage:            jetstream.FileStorage,
		Replicas:           cfg.Replicas,
		MaxMsgsPerSubject:  1,
		Discard:            jetstream.DiscardOld,
		AllowAtomicPublish: true,
		AllowDirect:        false,
		Description:        "Umbra cluster mode: registry, groups, rollouts, jobs, artifact metadata (internal/clusterkv)",
	}
}
