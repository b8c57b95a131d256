package awsjobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/umbra-iot/umbra/registry"
)

const (
	bucketExecutions = "job_executions"      // thing 0x00 jobId → Execution
	bucketIndex      = "job_execution_index" // jobId 0x00 thing → ""
	bucketDocuments  = "job_documents"       // jobId → document

	// MaxDocument is the largest job document (AWS's limit is 32 KB).
	MaxDocument = 32 * 1024
	// maxNotifyList bounds each list of a notify message (AWS: 15 in all).
	maxNotifyList = 15
)

// TopicPrefix starts every thing's reserved topics.
const TopicPrefix = "$aws/things/"

// Store is the durable storage the service needs (the bbolt store).
type Store interface {
	UpdateKV(ctx context.Context, fn func(registry.KV) error) error
	ViewKV(fn func(registry.KV) error) error
}

// Publisher publishes replies and notifications.
type Publisher interface {
	Publish(topic string, payload []byte) error
}

// Config assembles a Service.
type Config struct {
	Store     Store
	Publisher Publisher
	Clock     func() time.Time
	Logger    *slog.Logger
	// OnChange, when set, sees every committed change of an execution.
	OnChange func(Execution)
	// Rate and Burst limit each thing's requests (RequestThrottled beyond);
	// Rate 0 is unlimited.
	Rate  rate.Limit
	Burst int
	// Artifact, when set, gives thing's values for the artifact
	// placeholders (${umbra:artifact.url}, ...) of jobID's document, or
	// false when the job names no artifact (or it is gone): the document
	// is then sent as stored. See RenderDocument.
	Artifact func(jobID, thing string) (ArtifactValues, bool)
}

// Service runs job executions and the device MQTT API.
type Service struct {
	cfg   Config
	locks [64]sync.Mutex // by thing

	mu        sync.Mutex
	docs      map[string]json.RawMessage
	templated map[string]bool  // jobs whose document has ${umbra:...} placeholders
	deadlines map[string]int64 // thing 0x00 jobId → step deadline (ms)
	// changedExecs are executions other nodes wrote (StoreChanged) whose
	// timers the next Step reads again.
	changedExecs map[string]bool
	limiters     map[string]*rate.Limiter
}

// Errors of the control-plane calls.
var (
	ErrNotFound = errors.New("no such job execution")
	ErrDocument = errors.New("invalid job document")
)

// Open loads the documents and step timers.
func Open(cfg Config) (*Service, error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, docs: map[string]json.RawMessage{}, templated: map[string]bool{}, deadlines: map[string]int64{}, limiters: map[string]*rate.Limiter{}}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// load reads the job documents and the step timers from the store.
func (s *Service) load() error {
	docs, templated, deadlines := map[string]json.RawMessage{}, map[string]bool{}, map[string]int64{}
	err := s.cfg.Store.ViewKV(func(kv registry.KV) error {
		if err := kv.ForEach(bucketDocuments, "", func(k string, v []byte) error {
			docs[k] = json.RawMessage(v)
			templated[k] = hasPlaceholders(v)
			return nil
		}); err != nil {
			return err
		}
		return kv.ForEach(bucketExecutions, "", func(k string, v []byte) error {
			var e Execution
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("job execution %q: %w", k, err)
			}
			if e.Status == InProgress && e.StepDeadline > 0 {
				deadlines[k] = e.StepDeadline
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.docs, s.templated, s.deadlines = docs, templated, deadlines
	s.mu.Unlock()
	return nil
}

// Reload reads the documents and step timers again from the store: in
// cluster mode, when this node becomes the one that runs the timers
// (other nodes may have started or ended executions since).
func (s *Service) Reload() error { return s.load() }

func execKey(thing, job string) string { return thing + "\x00" + job }

func (s *Service) lock(thing string) func() {
	h := fnv.New32a()
	h.Write([]byte(thing))
	m := &s.locks[h.Sum32()%uint32(len(s.locks))]
	m.Lock()
	return m.Unlock
}

// PutJob stores a job's document (a JSON object of at most 32 KB) before
// executions are queued for it.
func (s *Service) PutJob(ctx context.Context, jobID string, doc json.RawMessage) error {
	if err := CheckDocument(doc); err != nil {
		return err
	}
	if !ValidJobID(jobID) {
		return fmt.Errorf("%w: job id %q: want 1-64 characters of [a-zA-Z0-9_-]", ErrDocument, jobID)
	}
	doc = compact(doc)
	if err := s.cfg.Store.UpdateKV(ctx, func(kv registry.KV) error { return kv.Put(bucketDocuments, jobID, doc) }); err != nil {
		return err
	}
	s.mu.Lock()
	s.docs[jobID] = doc
	s.templated[jobID] = hasPlaceholders(doc)
	s.mu.Unlock()
	return nil
}

// CheckDocument validates a job document.
func CheckDocument(doc json.RawMessage) error {
	var m map[string]json.RawMessage
	if len(doc) == 0 || json.Unmarshal(doc, &m) != nil || m == nil {
		return fmt.Errorf("%w: the job document must be a JSON object", ErrDocument)
	}
	if len(doc) > MaxDocument {
		return fmt.Errorf("%w: the job document is %d bytes, at most %d", ErrDocument, len(doc), MaxDocument)
	}
	return nil
}

func compact(doc json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, doc); err != nil {
		return doc
	}
	return b.Bytes()
}

// Document returns a job's document.
func (s *Service) Document(jobID string) json.RawMessage {
	doc, _ := s.document(jobID)
	return doc
}

// document returns a job's document and whether it has placeholders:
// from memory, or else from the store, where another process sharing the
// store (a node of a cluster) may have put it since Open.
func (s *Service) document(jobID string) (json.RawMessage, bool) {
	s.mu.Lock()
	doc, ok := s.docs[jobID]
	templated := s.templated[jobID]
	s.mu.Unlock()
	if ok {
		return doc, templated
	}
	_ = s.cfg.Store.ViewKV(func(kv registry.KV) error { doc = kv.Get(bucketDocuments, jobID); return nil })
	if doc == nil {
		return nil, false
	}
	templated = hasPlaceholders(doc)
	s.mu.Lock()
	s.docs[jobID], s.templated[jobID] = doc, templated
	s.mu.Unlock()
	return doc, templated
}

// hasPlaceholders reports whether doc uses a known placeholder.
func hasPlaceholders(doc []byte) bool {
	names, err := Placeholders(doc)
	return err == nil && len(names) > 0
}

// deviceDocument is jobID's document as thing receives it: its artifact
// placeholders replaced by thing's values (a download URL minted now).
func (s *Service) deviceDocument(jobID, thing string) json.RawMessage {
	doc, templated := s.document(jobID)
	if !templated || s.cfg.Artifact == nil {
		return doc
	}
	v, ok := s.cfg.Artifact(jobID, thing)
	if !ok {
		s.cfg.Logger.Warn("job document placeholders left unsubstituted: no artifact", "job", jobID, "thing", thing)
		return doc
	}
	out, err := RenderDocument(doc, v)
	if err != nil {
		s.cfg.Logger.Error("render job document", "job", jobID, "thing", thing, "error", err)
		return doc
	}
	return out
}

// executions reads every execution of thing.
func (s *Service) executions(thing string) ([]Execution, error) {
	var out []Execution
	err := s.cfg.Store.ViewKV(func(kv registry.KV) error {
		return kv.ForEach(bucketExecutions, thing+"\x00", func(_ string, v []byte) error {
			var e Execution
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// pendingOrder sorts the pending executions: IN_PROGRESS first, then
// QUEUED, each by queue time.
func pendingOf(all []Execution) []Execution {
	var p []Execution
	for _, e := range all {
		if !e.Status.Terminal() {
			p = append(p, e)
		}
	}
	sort.SliceStable(p, func(i, j int) bool {
		if (p[i].Status == InProgress) != (p[j].Status == InProgress) {
			return p[i].Status == InProgress
		}
		if p[i].QueuedAt != p[j].QueuedAt {
			return p[i].QueuedAt < p[j].QueuedAt
		}
		return p[i].JobID < p[j].JobID
	})
	return p
}

func headOf(all []Execution) *Execution {
	if p := pendingOf(all); len(p) > 0 {
		return &p[0]
	}
	return nil
}

func find(all []Execution, job string) (int, bool) {
	for i, e := range all {
		if e.JobID == job {
			return i, true
		}
	}
	return -1, false
}

// save commits executions (and their index entries) durably.
func (s *Service) save(ctx context.Context, execs ...Execution) error {
	err := s.cfg.Store.UpdateKV(ctx, func(kv registry.KV) error {
		for _, e := range execs {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := kv.Put(bucketExecutions, execKey(e.Thing, e.JobID), b); err != nil {
				return err
			}
			if err := kv.Put(bucketIndex, e.JobID+"\x00"+e.Thing, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	for _, e := range execs {
		if e.Status == InProgress && e.StepDeadline > 0 {
			s.deadlines[execKey(e.Thing, e.JobID)] = e.StepDeadline
		} else {
			delete(s.deadlines, execKey(e.Thing, e.JobID))
		}
	}
	s.mu.Unlock()
	if s.cfg.OnChange != nil {
		for _, e := range execs {
			s.cfg.OnChange(e)
		}
	}
	return nil
}

// announce publishes notify when the pending list changed and notify-next
// when its head changed, comparing before and after a committed change.
func (s *Service) announce(thing string, before, after []Execution, listChanged bool, now time.Time) {
	ts := secs(now.UnixMilli())
	if listChanged {
		jobs := map[Status][]wireSummary{}
		n := 0
		for _, e := range pendingOf(after) {
			if n == maxNotifyList {
				break
			}
			jobs[e.Status] = append(jobs[e.Status], e.summary())
			n++
		}
		b := marshal(struct {
			Timestamp int64                    `json:"timestamp"`
			Jobs      map[Status][]wireSummary `json:"jobs"`
		}{ts, jobs})
		s.publish(TopicPrefix+thing+"/jobs/notify", b)
	}
	hb, ha := headOf(before), headOf(after)
	if (hb == nil) == (ha == nil) && (hb == nil || hb.JobID == ha.JobID) {
		return
	}
	msg := struct {
		Timestamp int64          `json:"timestamp"`
		Execution *wireExecution `json:"execution,omitempty"`
	}{Timestamp: ts}
	if ha != nil {
		w := ha.wire(s.deviceDocument(ha.JobID, thing))
		msg.Execution = &w
	}
	b := marshal(msg)
	s.publish(TopicPrefix+thing+"/jobs/notify-next", b)
}

func (s *Service) publish(topic string, b []byte) {
	if s.cfg.Publisher == nil {
		return
	}
	if err := s.cfg.Publisher.Publish(topic, b); err != nil {
		s.cfg.Logger.Warn("publish", "topic", topic, "error", err)
	}
}

// Queue creates thing's QUEUED execution of jobID (whose document PutJob
// stored), durably, then notifies the device. It reports false when the
// execution already existed.
func (s *Service) Queue(ctx context.Context, jobID, thing string) (bool, error) {
	if s.Document(jobID) == nil {
		return false, fmt.Errorf("%w: job %s has no document", ErrDocument, jobID)
	}
	defer s.lock(thing)()
	all, err := s.executions(thing)
	if err != nil {
		return false, err
	}
	if _, ok := find(all, jobID); ok {
		return false, nil
	}
	now := s.cfg.Clock()
	e := Execution{JobID: jobID, Thing: thing, Status: Queued, QueuedAt: now.UnixMilli(), LastUpdatedAt: now.UnixMilli(),
		VersionNumber: 1, ExecutionNumber: 1}
	if err := s.save(ctx, e); err != nil {
		return false, err
	}
	s.announce(thing, all, append(all, e), true, now)
	return true, nil
}

// Cancel cancels jobID's QUEUED executions (and, with force, its
// IN_PROGRESS ones too), notifying each device; it returns how many.
func (s *Service) Cancel(ctx context.Context, jobID string, force bool) (int, error) {
	things, err := s.things(jobID)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, th := range things {
		ok, err := s.end(ctx, th, jobID, Canceled, func(st Status) bool { return st == Queued || force && st == InProgress })
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// end moves thing's execution of jobID to status st when cond accepts
// its current status.
func (s *Service) end(ctx context.Context, thing, jobID string, st Status, cond func(Status) bool) (bool, error) {
	defer s.lock(thing)()
	all, err := s.executions(thing)
	if err != nil {
		return false, err
	}
	i, ok := find(all, jobID)
	if !ok || !cond(all[i].Status) {
		return false, nil
	}
	now := s.cfg.Clock()
	after := append([]Execution(nil), all...)
	e := after[i]
	e.Status, e.LastUpdatedAt, e.StepDeadline = st, now.UnixMilli(), 0
	e.VersionNumber++
	after[i] = e
	if err := s.save(ctx, e); err != nil {
		return false, err
	}
	s.announce(thing, all, after, true, now)
	return true, nil
}

func (s *Service) things(jobID string) ([]string, error) {
	var out []string
	err := s.cfg.Store.ViewKV(func(kv registry.KV) error {
		return kv.ForEach(bucketIndex, jobID+"\x00", func(k string, _ []byte) error {
			out = append(out, strings.TrimPrefix(k, jobID+"\x00"))
			return nil
		})
	})
	return out, err
}

// Executions lists jobID's executions by thing.
func (s *Service) Executions(jobID string) ([]Execution, error) {
	var out []Execution
	err := s.cfg.Store.ViewKV(func(kv registry.KV) error {
		return kv.ForEach(bucketIndex, jobID+"\x00", func(k string, _ []byte) error {
			thing := strings.TrimPrefix(k, jobID+"\x00")
			v := kv.Get(bucketExecutions, execKey(thing, jobID))
			if v == nil {
				return nil
			}
			var e Execution
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// Counts counts jobID's executions by status.
func (s *Service) Counts(jobID string) (map[Status]int, error) {
	execs, err := s.Executions(jobID)
	if err != nil {
		return nil, err
	}
	m := map[Status]int{}
	for _, e := range execs {
		m[e.Status]++
	}
	return m, nil
}

// Get returns thing's execution of jobID.
func (s *Service) Get(thing, jobID string) (Execution, bool) {
	var e Execution
	var ok bool
	_ = s.cfg.Store.ViewKV(func(kv registry.KV) error {
		if v := kv.Get(bucketExecutions, execKey(thing, jobID)); v != nil {
			ok = json.Unmarshal(v, &e) == nil
		}
		return nil
	})
	return e, ok
}

// Step times out the IN_PROGRESS executions whose step timer expired.
func (s *Service) Step(ctx context.Context) {
	s.refreshTimers()
	now := s.cfg.Clock().UnixMilli()
	s.mu.Lock()
	var due []string
	for k, d := range s.deadlines {
		if d <= now {
			due = append(due, k)
		}
	}
	s.mu.Unlock()
	for _, k := range due {
		thing, job, _ := strings.Cut(k, "\x00")
		_, err := s.end(ctx, thing, job, TimedOut, func(st Status) bool {
			e, ok := s.Get(thing, job)
			return ok && st == InProgress && e.StepDeadline > 0 && e.StepDeadline <= now
		})
		if err != nil {
			s.cfg.Logger.Error("job step timeout", "thing", thing, "job", job, "error", err)
		}
	}
}

// Run steps the timers every interval until ctx ends.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Step(ctx)
		}
	}
}

var thingPattern = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)

func (s *Service) allow(thing string) bool {
	if s.cfg.Rate <= 0 {
		return true
	}
	s.mu.Lock()
	l, ok := s.limiters[thing]
	if !ok {
		l = rate.NewLimiter(s.cfg.Rate, max(s.cfg.Burst, 1))
		s.limiters[thing] = l
	}
	s.mu.Unlock()
	return l.Allow()
}

// StoreChanged notes a record another node wrote to the shared store
// (cluster mode; the registry's StoreChanged is the same seam): a job
// document is read again when next needed, and a job execution's step
// timer is brought up to date at the next Step. It never reads the store
// (it runs on the shared store's apply path) and never blocks for long.
func (s *Service) StoreChanged(bucket, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch bucket {
	case bucketDocuments:
		delete(s.docs, key)
		delete(s.templated, key)
	case bucketExecutions:
		if s.changedExecs == nil {
			s.changedExecs = map[string]bool{}
		}
		s.changedExecs[key] = true
	}
}

// refreshTimers reads the executions StoreChanged noted and sets or
// clears their step timers.
func (s *Service) refreshTimers() {
	s.mu.Lock()
	keys := s.changedExecs
	s.changedExecs = nil
	s.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	execs := map[string][]byte{}
	_ = s.cfg.Store.ViewKV(func(kv registry.KV) error {
		for k := range keys {
			execs[k] = bytes.Clone(kv.Get(bucketExecutions, k))
		}
		return nil
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range execs {
		var e Execution
		if v != nil && json.Unmarshal(v, &e) == nil && e.Status == InProgress && e.StepDeadline > 0 {
			s.deadlines[k] = e.StepDeadline
		} else {
			delete(s.deadlines, k)
		}
	}
}

// ExecutionThing is the thing of a job_executions key (StoreChanged's
// bucket "job_executions"), false for other buckets.
func ExecutionThing(bucket, key string) (string, bool) {
	if bucket != bucketExecutions {
		return "", false
	}
	thing, _, ok := strings.Cut(key, "\x00")
	return thing, ok
}
