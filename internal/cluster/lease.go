package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseBucket is the JetStream KV bucket that holds the leases.
const LeaseBucket = "umbra_leases"

// DefaultLeaseTTL is a lease's default time to live: a dead holder's lease
// is free again at most this long after its last renewal.
const DefaultLeaseTTL = 5 * time.Second

// LeaseConfig configures a Lease.
type LeaseConfig struct {
	// Key names the lease in the bucket ("engine": the rollout and job
	// engine).
	Key string
	// Holder is this node's name, written in the lease's value.
	Holder string
	// TTL is how long a lease lasts without renewal (default
	// DefaultLeaseTTL). The bucket's TTL is set to it, so every contender
	// of one bucket must use the same TTL.
	TTL time.Duration
	// Margin is how long before the lease can expire elsewhere the holder
	// stops acting (default TTL/5).
	Margin time.Duration
	// Replicas of the bucket (default 1; at most the number of servers).
	Replicas int
	Logger   *slog.Logger
}

// LeaseValue is what the lease's KV entry holds.
type LeaseValue struct {
	Holder string `json:"holder"`
	// Since is when the holder acquired the lease (its clock, for people).
	Since time.Time `json:"since"`
}

// Lease elects one holder among the nodes that run it on the same key: at
// most one node leads at a time, and when the holder dies another takes
// over within TTL plus one poll.
//
// The lease is a KV entry in a bucket whose TTL (the stream's MaxAge) is
// the lease TTL: a holder acquires it with Create (which fails while the
// entry exists), renews it every TTL/3 with Update at the revision it
// wrote last (which fails if the entry expired or changed), and releases
// it with a Delete at that revision when it stops. A holder that cannot
// renew (NATS down, JetStream without quorum) stops acting Margin before
// the entry can have expired: the entry's age starts at the server when
// the write is stored, which is after the holder sent it, so a write sent
// at s lives at least until s+TTL on the servers' clocks, and the holder
// stops leading at s+TTL-Margin on its own monotonic clock. The epoch of a
// term is the KV revision of the Create that began it: it increases from
// one holder to the next.
type Lease struct {
	kv  jetstream.KeyValue
	cfg LeaseConfig
	log *slog.Logger

	mu     sync.Mutex
	epoch  uint64    // current term's epoch, 0 when not leading
	until  time.Time // leading until (monotonic)
	status LeaseStatus
}

// LeaseStatus is a Lease's view of who leads.
type LeaseStatus struct {
	Leader bool   `json:"leader"`
	Epoch  uint64 `json:"epoch,omitempty"`
	// Terms counts the terms this node has led.
	Terms int `json:"terms"`
}

// OpenLease opens (creating if needed) the lease bucket.
func OpenLease(ctx context.Context, js jetstream.JetStream, cfg LeaseConfig) (*Lease, error) {
	if cfg.Key == "" || cfg.Holder == "" {
		return nil, errors.New("cluster: lease needs a key and a holder")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultLeaseTTL
	}
	if cfg.Margin <= 0 {
		cfg.Margin = cfg.TTL / 5
	}
	if cfg.Margin >= cfg.TTL {
		return nil, fmt.Errorf("cluster: lease margin %s must be below its TTL %s", cfg.Margin, cfg.TTL)
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var kv jetstream.KeyValue
	err := Retry(ctx, func(ctx context.Context) (err error) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      LeaseBucket,
			Description: "Umbra leases (one holder per key)",
			History:     1,
			TTL:         cfg.TTL,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: lease bucket %s: %w", LeaseBucket, err)
	}
	return &Lease{kv: kv, cfg: cfg, log: cfg.Logger.With("lease", cfg.Key)}, nil
}

// TTL is the lease's time to live.
func (l *Lease) TTL() time.Duration { return l.cfg.TTL }

// Status is this node's view: whether it leads, and in which epoch.
func (l *Lease) Status() LeaseStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	if s.Leader && !time.Now().Before(l.until) {
		s.Leader, s.Epoch = false, 0
	}
	return s
}

// Valid reports whether this node leads now, and in which epoch: false
// from the moment its term's fencing deadline has passed, even before the
// term's context is cancelled.
func (l *Lease) Valid() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.epoch == 0 || !time.Now().Before(l.until) {
		return 0, false
	}
	return l.epoch, true
}

// Holder reads who holds the lease now ("" when nobody does).
func (l *Lease) Holder(ctx context.Context) (LeaseValue, uint64, error) {
	e, err := l.kv.Get(ctx, l.cfg.Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return LeaseValue{}, 0, nil
	}
	if err != nil {
		return LeaseValue{}, 0, err
	}
	var v LeaseValue
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return LeaseValue{}, 0, fmt.Errorf("cluster: lease %s: %w", l.cfg.Key, err)
	}
	return v, e.Revision(), nil
}

// Run contends for the lease until ctx ends. Each time this node acquires
// it, lead runs with a context that is cancelled when the term ends (a
// failed renewal, the fencing deadline, or ctx); Run waits for lead to
// return before it contends again, and releases the lease when ctx ends.
func (l *Lease) Run(ctx context.Context, lead func(ctx context.Context, epoch uint64)) {
	poll := max(l.cfg.TTL/10, 10*time.Millisecond)
	for ctx.Err() == nil {
		sent := time.Now()
		rev, err := l.acquire(ctx)
		if err == nil {
			l.term(ctx, rev, sent, lead)
			continue
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			l.log.Debug("lease: acquire", "error", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(poll):
		}
	}
}

func (l *Lease) acquire(ctx context.Context) (uint64, error) {
	v, _ := json.Marshal(LeaseValue{Holder: l.cfg.Holder, Since: time.Now().UTC()})
	actx, cancel := context.WithTimeout(ctx, l.cfg.TTL-l.cfg.Margin)
	defer cancel()
	return l.kv.Create(actx, l.cfg.Key, v)
}

// term leads from the Create at revision rev (sent at sent) until the
// lease is lost or ctx ends.
func (l *Lease) term(ctx context.Context, rev uint64, sent time.Time, lead func(context.Context, uint64)) {
	epoch := rev
	value, _ := json.Marshal(LeaseValue{Holder: l.cfg.Holder, Since: time.Now().UTC()})
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	valid := l.cfg.TTL - l.cfg.Margin
	// The watchdog ends the term at the fencing deadline unless a renewal
	// pushed it further.
	l.mu.Lock()
	l.epoch, l.until = epoch, sent.Add(valid)
	l.status = LeaseStatus{Leader: true, Epoch: epoch, Terms: l.status.Terms + 1}
	l.mu.Unlock()
	watchdog := time.AfterFunc(time.Until(sent.Add(valid)), cancel)
	defer watchdog.Stop()
	l.log.Info("lease acquired", "holder", l.cfg.Holder, "epoch", epoch)

	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(tctx, epoch)
	}()

	renew := time.NewTicker(l.cfg.TTL / 3)
	defer renew.Stop()
	lost := func(why string, err error) {
		l.mu.Lock()
		l.epoch, l.status.Leader, l.status.Epoch = 0, false, 0
		l.mu.Unlock()
		cancel()
		<-done
		l.log.Warn("lease lost", "holder", l.cfg.Holder, "epoch", epoch, "why", why, "error", err)
	}
	for {
		select {
		case <-done:
			// lead returned on its own: give the lease up.
			l.release(rev, epoch)
			return
		case <-tctx.Done():
			if ctx.Err() != nil {
				l.mu.Lock()
				l.epoch, l.status.Leader, l.status.Epoch = 0, false, 0
				l.mu.Unlock()
				<-done
				l.release(rev, epoch)
				return
			}
			lost("not renewed before the fencing deadline", nil)
			return
		case <-renew.C:
		}
		s := time.Now()
		l.mu.Lock()
		deadline := l.until
		l.mu.Unlock()
		rctx, rcancel := context.WithDeadline(tctx, deadline)
		nrev, err := l.kv.Update(rctx, l.cfg.Key, value, rev)
		rcancel()
		if err != nil {
			if isConflict(err) {
				lost("renewal refused (expired or taken)", err)
				return
			}
			// Transient (timeout, no quorum, disconnected): try again at
			// the next tick; the watchdog ends the term if none succeeds.
			l.log.Debug("lease: renew", "error", err)
			continue
		}
		rev = nrev
		l.mu.Lock()
		if l.epoch == epoch {
			l.until = s.Add(valid)
		}
		l.mu.Unlock()
		watchdog.Reset(time.Until(s.Add(valid)))
	}
}

// release deletes the lease entry if it is still this term's, so that
// another node can take over at once rather than after the TTL.
func (l *Lease) release(rev, epoch uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.TTL-l.cfg.Margin)
	defer cancel()
	if err := l.kv.Delete(ctx, l.cfg.Key, jetstream.LastRevision(rev)); err != nil {
		l.log.Debug("lease: release", "error", err)
		return
	}
	l.log.Info("lease released", "holder", l.cfg.Holder, "epoch", epoch)
}

// isConflict reports a refused compare-and-set: the entry is not at the
// revision this holder wrote (it expired, or another node holds it).
func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}
