package shadow

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/umbra-iot/umbra/internal/keyed"
)

// Store is the storage a Service needs. Load returns the stored document,
// or (Doc == nil) the version of a live tombstone; Commit returns once the
// change is durable.
//
// A store shared by several processes (the clustered engine) commits by
// compare-and-set: Commit writes only if the shadow is still at the
// revision Load returned (Change.Rev) and otherwise returns an error
// wrapping ErrConflict, writing nothing; the Service then runs the request
// again on the new state. A store with a single writer (bbolt, serialised
// by the Service's per-shadow lock) never returns ErrConflict.
type Store interface {
	Load(ref Ref) (Current, error)
	Commit(ctx context.Context, c Change) error
}

// Change is one accepted shadow change, as committed.
type Change struct {
	Ref     Ref
	Op      Op     // OpUpdate or OpDelete
	Doc     []byte // the new document; nil when the shadow was deleted
	Version int64  // version of Doc, or the version the shadow had when deleted
	Time    time.Time
	History []byte // history entry (JSON) kept in the same transaction
	Rev     uint64 // Current.Rev of the state the change was computed from
}

// ErrConflict is returned (wrapped) by a compare-and-set Store's Commit when
// the shadow changed since it was loaded; nothing was written.
var ErrConflict = errors.New("shadow: changed in the store since it was loaded")

// maxCommitAttempts bounds how often a request is run again after
// ErrConflict. Each conflict means another writer's change was accepted,
// so running out takes that many concurrent writers to one shadow.
const maxCommitAttempts = 64

// Publisher delivers service messages to MQTT subscribers.
type Publisher interface {
	Publish(topic string, payload []byte) error
}

// SubscriberChecker is an optional Publisher interface: HasSubscribers
// reports whether a publish on topic would reach anyone now. The service
// then builds /update/documents only when it would (most fleets never
// subscribe to it). A Publisher without it gets every reply.
type SubscriberChecker interface {
	HasSubscribers(topic string) bool
}

// Origin says through which face a request arrived. It decides which
// replies are published: MQTT requests are answered on MQTT topics (rejected
// included); HTTP requests get their answer in the HTTP response, and their
// accepted changes are still announced on MQTT (as AWS does).
type Origin int

const (
	OriginMQTT     Origin = iota // a device or app publishing on $aws/things/...
	OriginHTTP                   // the REST data plane
	OriginInternal               // Umbra itself (fleet jobs, rollouts)
)

func (o Origin) String() string {
	switch o {
	case OriginMQTT:
		return "mqtt"
	case OriginHTTP:
		return "http"
	}
	return "internal"
}

// Request is one shadow operation.
type Request struct {
	Ref       Ref
	Op        Op
	Payload   []byte
	Origin    Origin
	Principal string // MQTT client id or API principal, kept in history
}

// Response is the answer to a Request: the accepted payload, or the
// rejected payload and its error.
type Response struct {
	Payload []byte
	Err     *Error
	Version int64 // version after the operation (accepted only)
}

// Event announces a committed change, in version order per shadow.
type Event struct {
	Change
	Principal string
	Origin    Origin
}

// Config assembles a Service.
type Config struct {
	Options   Options
	Store     Store
	Publisher Publisher        // nil publishes nothing
	Clock     func() time.Time // nil means time.Now
	// OnEvent, when set, is called after every committed change, while the
	// shadow is still locked: events of one shadow arrive in version order.
	// It must not block.
	OnEvent func(Event)
	// OnResult, when set, is called once per request with its outcome code
	// (200 for accepted) and duration, for metrics.
	OnResult func(op Op, code int, d time.Duration)
	// Limiter, when set, admits MQTT and HTTP requests (not Umbra's own):
	// one refused is answered 429 Too Many Requests.
	Limiter Limiter
	Logger  *slog.Logger
}

// Limiter admits requests by thing (rate) and principal (concurrency).
type Limiter interface {
	Acquire(thing, principal string, now time.Time) (release func(), ok bool)
}

// Service runs shadow requests: it validates them, applies them to the
// stored document, commits the result and publishes the replies. It is the
// only writer of shadows; every face (MQTT, HTTP, CLI, rollouts) calls it.
//
// Requests for one shadow are serialised by a per-shadow lock held from load
// to publish, which makes the version check atomic with the write and keeps
// replies and events of a shadow in version order. Requests for different
// shadows run concurrently and share fsyncs through the store's group commit.
type Service struct {
	cfg   Config
	opts  Options
	locks keyed.Mutex[Ref]
}

// NewService returns a Service. cfg.Store is required.
func NewService(cfg Config) *Service {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, opts: cfg.Options.Normalize()}
}

// Options are the normalised document options in force.
func (s *Service) Options() Options { return s.opts }

// Handle runs one request.
func (s *Service) Handle(ctx context.Context, req Request) Response {
	start := time.Now()
	resp := s.handle(ctx, req)
	if s.cfg.OnResult != nil {
		code := 200
		if resp.Err != nil {
			code = resp.Err.Code
		}
		s.cfg.OnResult(req.Op, code, time.Since(start))
	}
	return resp
}

func (s *Service) handle(ctx context.Context, req Request) Response {
	switch req.Op {
	case OpUpdate:
		return s.update(ctx, req)
	case OpGet:
		return s.get(req)
	case OpDelete:
		return s.delete(ctx, req)
	}
	return s.reject(req, &Error{Code: 400, Message: "Unsupported operation"}, "", false)
}

func (s *Service) update(ctx context.Context, req Request) Response {
	parsed, token, hasToken, perr := ParseUpdate(req.Payload, s.opts)
	if perr != nil {
		return s.reject(req, perr, token, hasToken)
	}
	release, ok := s.admit(req)
	if !ok {
		return s.reject(req, TooManyRequests(), token, hasToken)
	}
	defer release()
	unlock := s.locks.Lock(req.Ref)
	defer unlock()
	var (
		res UpdateResult
		ch  Change
	)
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			// Run again on the state another writer committed, from a
			// fresh parse (the last attempt's merge may share its nodes).
			if parsed, token, hasToken, perr = ParseUpdate(req.Payload, s.opts); perr != nil {
				return s.reject(req, perr, token, hasToken)
			}
		}
		cur, err := s.cfg.Store.Load(req.Ref)
		if err != nil {
			return s.internal(req, "load", err, token, hasToken)
		}
		now := s.cfg.Clock()
		var uerr *Error
		res, uerr = update(cur, parsed, now, s.opts, false)
		if uerr != nil {
			return s.reject(req, uerr, token, hasToken)
		}
		ch = Change{Ref: req.Ref, Op: OpUpdate, Doc: res.Doc, Version: res.Version, Time: now, Rev: cur.Rev}
		ch.History = s.history(req, ch, res.Doc, true)
		err = s.cfg.Store.Commit(ctx, ch)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrConflict) || attempt == maxCommitAttempts {
			return s.internal(req, "commit", err, token, hasToken)
		}
	}
	s.publish(req.Ref.Topic(OpUpdate, SuffixAccepted), res.Accepted)
	if res.Delta != nil {
		s.publish(req.Ref.Topic(OpUpdate, SuffixDelta), res.Delta)
	}
	// Asked after the commit: a subscriber that has its SUBACK before the
	// change is accepted gets the documents.
	if docsTopic := req.Ref.Topic(OpUpdate, SuffixDocuments); s.subscribed(docsTopic) {
		s.publish(docsTopic, res.documents())
	}
	s.emit(req, ch)
	return Response{Payload: res.Accepted, Version: res.Version}
}

func (s *Service) get(req Request) Response {
	token, hasToken, perr := ParseTokenOnly(req.Payload, s.opts)
	if perr != nil {
		return s.reject(req, perr, token, hasToken)
	}
	release, ok := s.admit(req)
	if !ok {
		return s.reject(req, TooManyRequests(), token, hasToken)
	}
	defer release()
	cur, err := s.cfg.Store.Load(req.Ref)
	if err != nil {
		return s.internal(req, "load", err, token, hasToken)
	}
	payload, gerr := Get(cur, token, hasToken, s.cfg.Clock())
	if gerr != nil {
		return s.reject(req, s.notFound(req.Ref, gerr), token, hasToken)
	}
	if req.Origin == OriginMQTT {
		s.publish(req.Ref.Topic(OpGet, SuffixAccepted), payload)
	}
	return Response{Payload: payload, Version: DocVersion(cur.Doc)}
}

func (s *Service) delete(ctx context.Context, req Request) Response {
	token, hasToken, perr := ParseTokenOnly(req.Payload, s.opts)
	if perr != nil {
		return s.reject(req, perr, token, hasToken)
	}
	release, ok := s.admit(req)
	if !ok {
		return s.reject(req, TooManyRequests(), token, hasToken)
	}
	defer release()
	unlock := s.locks.Lock(req.Ref)
	defer unlock()
	var (
		payload []byte
		ch      Change
	)
	for attempt := 1; ; attempt++ {
		cur, err := s.cfg.Store.Load(req.Ref)
		if err != nil {
			return s.internal(req, "load", err, token, hasToken)
		}
		now := s.cfg.Clock()
		var derr *Error
		payload, derr = Delete(cur, token, hasToken, now)
		if derr != nil {
			return s.reject(req, s.notFound(req.Ref, derr), token, hasToken)
		}
		ch = Change{Ref: req.Ref, Op: OpDelete, Version: DocVersion(cur.Doc), Time: now, Rev: cur.Rev}
		ch.History = s.history(req, ch, nil, false)
		err = s.cfg.Store.Commit(ctx, ch)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrConflict) || attempt == maxCommitAttempts {
			return s.internal(req, "commit", err, token, hasToken)
		}
	}
	// Devices learn of a deletion whichever face asked for it.
	s.publish(req.Ref.Topic(OpDelete, SuffixAccepted), payload)
	s.emit(req, ch)
	return Response{Payload: payload, Version: ch.Version}
}

// admit applies the limiter (spec 3.6 step 10: after validation, before the
// version check). Umbra's own requests are not limited.
func (s *Service) admit(req Request) (release func(), ok bool) {
	if s.cfg.Limiter == nil || req.Origin == OriginInternal {
		return func() {}, true
	}
	return s.cfg.Limiter.Acquire(req.Ref.Thing, req.Principal, s.cfg.Clock())
}

// notFound puts the right name in a 404: the shadow name for a named
// shadow, the thing name for the classic one (as AWS does).
func (s *Service) notFound(ref Ref, err *Error) *Error {
	if err.Code != 404 {
		return err
	}
	return ref.NotFound()
}

func (s *Service) reject(req Request, err *Error, token string, hasToken bool) Response {
	payload := Rejected(err, token, hasToken, s.cfg.Clock())
	if req.Origin == OriginMQTT {
		s.publish(req.Ref.Topic(req.Op, SuffixRejected), payload)
	}
	return Response{Payload: payload, Err: err}
}

func (s *Service) internal(req Request, what string, err error, token string, hasToken bool) Response {
	s.cfg.Logger.Error("shadow "+what+" failed", "shadow", req.Ref.String(), "op", string(req.Op), "error", err)
	return s.reject(req, &Error{Code: 500, Message: "Internal service failure"}, token, hasToken)
}

// subscribed reports whether a publish on topic may reach a subscriber.
func (s *Service) subscribed(topic string) bool {
	if s.cfg.Publisher == nil {
		return false
	}
	if c, ok := s.cfg.Publisher.(SubscriberChecker); ok {
		return c.HasSubscribers(topic)
	}
	return true
}

func (s *Service) publish(topic string, payload []byte) {
	if s.cfg.Publisher == nil {
		return
	}
	if err := s.cfg.Publisher.Publish(topic, payload); err != nil {
		s.cfg.Logger.Warn("publish shadow reply", "topic", topic, "error", err)
	}
}

func (s *Service) emit(req Request, ch Change) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(Event{Change: ch, Principal: req.Principal, Origin: req.Origin})
	}
}

// HistoryEntry is what history keeps of each accepted change.
type HistoryEntry struct {
	Version   int64           `json:"version"`
	Op        Op              `json:"op"`
	Timestamp int64           `json:"timestamp"` // Unix seconds, as in shadow metadata
	Principal string          `json:"principal,omitempty"`
	Origin    string          `json:"origin"`
	Request   json.RawMessage `json:"request,omitempty"` // the request payload as sent (valid JSON)
	State     json.RawMessage `json:"state,omitempty"`   // desired and reported after the change
}

// history encodes the HistoryEntry of a change. It is on the update path,
// so it writes the JSON directly instead of re-validating (as
// encoding/json does for a RawMessage) a payload ParseUpdate already
// validated; payloadValid says whether it did.
func (s *Service) history(req Request, ch Change, doc []byte, payloadValid bool) []byte {
	b := make([]byte, 0, 160+len(req.Payload)+len(doc))
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, ch.Version, 10)
	b = append(b, `,"op":`...)
	b = appendString(b, string(ch.Op))
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, ch.Time.Unix(), 10)
	if req.Principal != "" {
		b = append(b, `,"principal":`...)
		b = appendString(b, req.Principal)
	}
	b = append(b, `,"origin":`...)
	b = appendString(b, req.Origin.String())
	// The request as sent, less a C string's terminating NULs (which would
	// make the entry invalid JSON).
	if payload := TrimNUL(req.Payload); len(payload) > 0 && (payloadValid || json.Valid(payload)) {
		b = append(b, `,"request":`...)
		b = append(b, payload...)
	}
	if doc != nil {
		desired, reported := DocState(doc)
		b = append(b, `,"state":{`...)
		if desired != nil {
			b = append(b, `"desired":`...)
			b = append(b, desired...)
		}
		if reported != nil {
			if desired != nil {
				b = append(b, ',')
			}
			b = append(b, `"reported":`...)
			b = append(b, reported...)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}
