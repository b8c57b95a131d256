package awsjobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Op is a device request.
type Op int

const (
	OpNone       Op = iota // not a request (a reply or notification topic)
	OpGetPending           // jobs/get
	OpStartNext            // jobs/start-next
	OpDescribe             // jobs/{jobId}/get
	OpUpdate               // jobs/{jobId}/update
	OpInvalid              // in the jobs namespace, no operation: InvalidTopic
)

// Topic is a parsed jobs request topic.
type Topic struct {
	Thing string
	Op    Op
	JobID string
}

// ParseTopic parses $aws/things/{thing}/jobs/...; ok is false outside the
// jobs namespace.
func ParseTopic(topic string) (Topic, bool) {
	rest, ok := strings.CutPrefix(topic, TopicPrefix)
	if !ok {
		return Topic{}, false
	}
	thing, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return Topic{}, false
	}
	rest, ok = strings.CutPrefix(rest, "jobs/")
	if !ok {
		return Topic{}, false
	}
	t := Topic{Thing: thing}
	parts := strings.Split(rest, "/")
	last := parts[len(parts)-1]
	switch {
	case last == "accepted" || last == "rejected":
		t.Op = OpNone // a reply
	case len(parts) == 1 && (last == "notify" || last == "notify-next"):
		t.Op = OpNone
	case len(parts) == 1 && last == "get":
		t.Op = OpGetPending
	case len(parts) == 1 && last == "start-next":
		t.Op = OpStartNext
	case len(parts) == 2 && last == "get":
		t.Op, t.JobID = OpDescribe, parts[0]
	case len(parts) == 2 && last == "update":
		t.Op, t.JobID = OpUpdate, parts[0]
	default:
		t.Op = OpInvalid
	}
	return t, true
}

// HandleMQTT answers a publish on a jobs request topic: the reply (on
// topic/accepted or topic/rejected) is published after any change is
// durable, then the notifications. handled is false for topics that are not
// jobs requests; accepted tells whether the request was accepted.
func (s *Service) HandleMQTT(ctx context.Context, topic string, payload []byte) (handled, accepted bool) {
	t, ok := ParseTopic(topic)
	if !ok || t.Op == OpNone {
		return false, false
	}
	reply, err := s.Handle(ctx, t, payload)
	if err != nil {
		s.publish(topic+"/rejected", reply)
		return true, false
	}
	s.publish(topic+"/accepted", reply)
	return true, true
}

// Handle runs one request and returns its reply payload: the accepted
// reply, or (with the error) the ErrorResponse.
func (s *Service) Handle(ctx context.Context, t Topic, payload []byte) ([]byte, *RequestError) {
	now := s.cfg.Clock()
	f, perr := parsePayload(payload)
	token := ""
	if f != nil {
		token = f.token()
	}
	fail := func(e *RequestError) ([]byte, *RequestError) {
		r := errorResponse{Code: e.Code, Message: e.Message, ClientToken: token, Timestamp: secs(now.UnixMilli())}
		if e.State != nil {
			r.ExecutionState = e.State.state()
		}
		b := marshal(r)
		return b, e
	}
	switch {
	case t.Op == OpInvalid:
		return fail(reqErr(CodeInvalidTopic, "the topic maps to no jobs operation"))
	case !thingPattern.MatchString(t.Thing):
		return fail(reqErr(CodeInvalidTopic, "invalid thing name in the topic"))
	case (t.Op == OpDescribe && t.JobID != "$next" || t.Op == OpUpdate) && !ValidJobID(t.JobID):
		if t.JobID == "$next" {
			return fail(reqErr(CodeInvalidTopic, "$next is only valid for DescribeJobExecution"))
		}
		return fail(reqErr(CodeInvalidTopic, "invalid job id in the topic"))
	case perr != nil:
		return fail(perr)
	}
	if e := f.checkToken(); e != nil {
		return fail(e)
	}
	if !s.allow(t.Thing) {
		return fail(reqErr(CodeRequestThrottled, "too many requests for this thing"))
	}
	var out any
	var e *RequestError
	switch t.Op {
	case OpGetPending:
		out, e = s.getPending(t.Thing, now)
	case OpStartNext:
		out, e = s.startNext(ctx, t.Thing, f, now)
	case OpDescribe:
		out, e = s.describe(t.Thing, t.JobID, f, now)
	case OpUpdate:
		out, e = s.update(ctx, t.Thing, t.JobID, f, now)
	}
	if e != nil {
		return fail(e)
	}
	b := withToken(out, token, now)
	return b, nil
}

// marshal encodes a payload without HTML escaping: a download URL's "&"
// stays "&" for device JSON parsers that do not decode escapes.
func marshal(v any) []byte {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	_ = e.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// withToken adds timestamp and clientToken to a reply object, after the
// object's own bytes: the job document inside keeps its key order and its
// numbers as written (decoding into a map would sort the keys).
func withToken(v any, token string, now time.Time) []byte {
	b := bytes.TrimSpace(marshal(v))
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		b = []byte("{}")
	}
	out := append([]byte(nil), b[:len(b)-1]...)
	if len(bytes.TrimSpace(out[1:])) > 0 {
		out = append(out, ',')
	}
	out = fmt.Appendf(out, `"timestamp":%d`, secs(now.UnixMilli()))
	if token != "" {
		out = append(out, `,"clientToken":`...)
		out = append(out, marshal(token)...)
	}
	return append(out, '}')
}

func internal(err error) *RequestError {
	return reqErr(CodeInternalError, "internal error: %v", err)
}

func (s *Service) getPending(thing string, _ time.Time) (any, *RequestError) {
	all, err := s.executions(thing)
	if err != nil {
		return nil, internal(err)
	}
	out := struct {
		InProgress []wireSummary `json:"inProgressJobs"`
		Queued     []wireSummary `json:"queuedJobs"`
	}{[]wireSummary{}, []wireSummary{}}
	for _, e := range pendingOf(all) {
		if e.Status == InProgress {
			out.InProgress = append(out.InProgress, e.summary())
		} else {
			out.Queued = append(out.Queued, e.summary())
		}
	}
	return out, nil
}

type executionReply struct {
	Execution *wireExecution `json:"execution,omitempty"`
}

func (s *Service) startNext(ctx context.Context, thing string, f fields, now time.Time) (any, *RequestError) {
	details, hasDetails, e := f.details()
	if e != nil {
		return nil, e
	}
	step, hasStep, e := f.stepTimeout()
	if e != nil {
		return nil, e
	}
	defer s.lock(thing)()
	all, err := s.executions(thing)
	if err != nil {
		return nil, internal(err)
	}
	head := headOf(all)
	if head == nil {
		return executionReply{}, nil
	}
	ex := *head
	if ex.Status == Queued {
		i, _ := find(all, ex.JobID)
		ex.Status, ex.StartedAt, ex.LastUpdatedAt = InProgress, now.UnixMilli(), now.UnixMilli()
		if hasDetails {
			ex.StatusDetails = details
		}
		if hasStep {
			ex.StepDeadline = deadline(step, now)
		}
		ex.VersionNumber++
		after := append([]Execution(nil), all...)
		after[i] = ex
		if err := s.save(ctx, ex); err != nil {
			return nil, internal(err)
		}
		s.announce(thing, all, after, true, now)
	}
	w := ex.wire(s.deviceDocument(ex.JobID, thing))
	return executionReply{&w}, nil
}

func deadline(minutes int64, now time.Time) int64 {
	if minutes < 0 {
		return 0
	}
	return now.Add(time.Duration(minutes) * time.Minute).UnixMilli()
}

func (s *Service) describe(thing, jobID string, f fields, _ time.Time) (any, *RequestError) {
	num, hasNum, e := f.integer("executionNumber")
	if e != nil {
		return nil, e
	}
	withDoc, hasDoc, e := f.boolean("includeJobDocument")
	if e != nil {
		return nil, e
	}
	if !hasDoc {
		withDoc = true
	}
	all, err := s.executions(thing)
	if err != nil {
		return nil, internal(err)
	}
	var ex *Execution
	if jobID == "$next" {
		ex = headOf(all)
		if ex == nil {
			return executionReply{}, nil
		}
	} else {
		i, ok := find(all, jobID)
		if !ok || hasNum && all[i].ExecutionNumber != num {
			return nil, reqErr(CodeResourceNotFound, "job execution %s of thing %s does not exist", jobID, thing)
		}
		ex = &all[i]
	}
	var doc json.RawMessage
	if withDoc {
		doc = s.deviceDocument(ex.JobID, thing)
	}
	w := ex.wire(doc)
	return executionReply{&w}, nil
}

func (s *Service) update(ctx context.Context, thing, jobID string, f fields, now time.Time) (any, *RequestError) {
	st, ok, e := f.str("status")
	if e != nil {
		return nil, e
	}
	if !ok {
		return nil, reqErr(CodeInvalidRequest, "status is required")
	}
	status := Status(st)
	if !deviceSettable(status) {
		return nil, reqErr(CodeInvalidRequest, "status %q: a device may set IN_PROGRESS, SUCCEEDED, FAILED or REJECTED", st)
	}
	details, hasDetails, e := f.details()
	if e != nil {
		return nil, e
	}
	expected, hasExpected, e := f.integer("expectedVersion")
	if e != nil {
		return nil, e
	}
	num, hasNum, e := f.integer("executionNumber")
	if e != nil {
		return nil, e
	}
	withState, _, e := f.boolean("includeJobExecutionState")
	if e != nil {
		return nil, e
	}
	withDoc, _, e := f.boolean("includeJobDocument")
	if e != nil {
		return nil, e
	}
	step, hasStep, e := f.stepTimeout()
	if e != nil {
		return nil, e
	}
	defer s.lock(thing)()
	all, err := s.executions(thing)
	if err != nil {
		return nil, internal(err)
	}
	i, found := find(all, jobID)
	if !found || hasNum && all[i].ExecutionNumber != num {
		return nil, reqErr(CodeResourceNotFound, "job execution %s of thing %s does not exist", jobID, thing)
	}
	ex := all[i]
	if hasExpected && expected != ex.VersionNumber {
		return nil, &RequestError{Code: CodeVersionMismatch, Message: "the expected version does not match the job execution version", State: &ex}
	}
	switch ex.Status {
	case Canceled, Removed:
		return nil, &RequestError{Code: CodeTerminalStateReached, Message: "the job execution was " + string(ex.Status) + " and can no longer be updated", State: &ex}
	case Succeeded, Failed, Rejected, TimedOut:
		return nil, &RequestError{Code: CodeInvalidStateTransition,
			Message: "the job execution is already " + string(ex.Status) + ", it cannot become " + st, State: &ex}
	}
	before := ex.Status
	ex.Status, ex.LastUpdatedAt = status, now.UnixMilli()
	if before == Queued {
		ex.StartedAt = now.UnixMilli()
	}
	if hasDetails {
		ex.StatusDetails = details
	}
	switch {
	case status.Terminal():
		ex.StepDeadline = 0
	case hasStep:
		ex.StepDeadline = deadline(step, now)
	}
	ex.VersionNumber++
	after := append([]Execution(nil), all...)
	after[i] = ex
	if err := s.save(ctx, ex); err != nil {
		return nil, internal(err)
	}
	s.announce(thing, all, after, before != status, now)
	out := struct {
		ExecutionState *wireState      `json:"executionState,omitempty"`
		JobDocument    json.RawMessage `json:"jobDocument,omitempty"`
	}{}
	if withState {
		out.ExecutionState = ex.state()
	}
	if withDoc {
		out.JobDocument = s.deviceDocument(jobID, thing)
	}
	return out, nil
}
