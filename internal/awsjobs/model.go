package awsjobs

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// Status of a job execution (AWS's JobExecutionStatus).
type Status string

const (
	Queued     Status = "QUEUED"
	InProgress Status = "IN_PROGRESS"
	Succeeded  Status = "SUCCEEDED"
	Failed     Status = "FAILED"
	TimedOut   Status = "TIMED_OUT"
	Rejected   Status = "REJECTED"
	Removed    Status = "REMOVED"
	Canceled   Status = "CANCELED"
)

// Terminal reports whether no further change is possible.
func (s Status) Terminal() bool { return s != Queued && s != InProgress }

// Failure reports whether the status counts as a failure (AWS abort
// criteria's failure types: FAILED, REJECTED, TIMED_OUT).
func (s Status) Failure() bool { return s == Failed || s == Rejected || s == TimedOut }

// deviceSettable are the statuses a device may report.
func deviceSettable(s Status) bool {
	return s == InProgress || s == Succeeded || s == Failed || s == Rejected
}

// Error codes of a rejected request (AWS's RejectedErrorCode).
const (
	CodeInvalidTopic           = "InvalidTopic"
	CodeInvalidJSON            = "InvalidJson"
	CodeInvalidRequest         = "InvalidRequest"
	CodeInvalidStateTransition = "InvalidStateTransition"
	CodeResourceNotFound       = "ResourceNotFound"
	CodeVersionMismatch        = "VersionMismatch"
	CodeInternalError          = "InternalError"
	CodeRequestThrottled       = "RequestThrottled"
	CodeTerminalStateReached   = "TerminalStateReached"
)

// Execution is one thing's execution of one job, as stored. Times are Unix
// milliseconds; the MQTT API shows them in seconds.
type Execution struct {
	JobID           string            `json:"jobId"`
	Thing           string            `json:"thingName"`
	Status          Status            `json:"status"`
	StatusDetails   map[string]string `json:"statusDetails,omitempty"`
	QueuedAt        int64             `json:"queuedAt"`
	StartedAt       int64             `json:"startedAt,omitempty"`
	LastUpdatedAt   int64             `json:"lastUpdatedAt"`
	VersionNumber   int64             `json:"versionNumber"`
	ExecutionNumber int64             `json:"executionNumber"`
	// StepDeadline is when the step timer expires (0: none).
	StepDeadline int64 `json:"stepDeadline,omitempty"`
}

// wireExecution is AWS's JobExecution.
type wireExecution struct {
	JobID           string            `json:"jobId"`
	ThingName       string            `json:"thingName"`
	JobDocument     json.RawMessage   `json:"jobDocument,omitempty"`
	Status          Status            `json:"status"`
	StatusDetails   map[string]string `json:"statusDetails,omitempty"`
	QueuedAt        int64             `json:"queuedAt"`
	StartedAt       int64             `json:"startedAt,omitempty"`
	LastUpdatedAt   int64             `json:"lastUpdatedAt"`
	VersionNumber   int64             `json:"versionNumber"`
	ExecutionNumber int64             `json:"executionNumber"`
}

// wireSummary is AWS's JobExecutionSummary.
type wireSummary struct {
	JobID           string `json:"jobId"`
	QueuedAt        int64  `json:"queuedAt"`
	StartedAt       int64  `json:"startedAt,omitempty"`
	LastUpdatedAt   int64  `json:"lastUpdatedAt"`
	VersionNumber   int64  `json:"versionNumber"`
	ExecutionNumber int64  `json:"executionNumber"`
}

// wireState is AWS's JobExecutionState.
type wireState struct {
	Status        Status            `json:"status"`
	StatusDetails map[string]string `json:"statusDetails,omitempty"`
	VersionNumber int64             `json:"versionNumber"`
}

func secs(ms int64) int64 { return ms / 1000 }

func (e Execution) wire(doc json.RawMessage) wireExecution {
	return wireExecution{JobID: e.JobID, ThingName: e.Thing, JobDocument: doc, Status: e.Status, StatusDetails: e.StatusDetails,
		QueuedAt: secs(e.QueuedAt), StartedAt: secs(e.StartedAt), LastUpdatedAt: secs(e.LastUpdatedAt),
		VersionNumber: e.VersionNumber, ExecutionNumber: e.ExecutionNumber}
}

func (e Execution) summary() wireSummary {
	return wireSummary{JobID: e.JobID, QueuedAt: secs(e.QueuedAt), StartedAt: secs(e.StartedAt), LastUpdatedAt: secs(e.LastUpdatedAt),
		VersionNumber: e.VersionNumber, ExecutionNumber: e.ExecutionNumber}
}

func (e Execution) state() *wireState {
	return &wireState{Status: e.Status, StatusDetails: e.StatusDetails, VersionNumber: e.VersionNumber}
}

// errorResponse is AWS's ErrorResponse.
type errorResponse struct {
	Code           string     `json:"code"`
	Message        string     `json:"message"`
	ClientToken    string     `json:"clientToken,omitempty"`
	Timestamp      int64      `json:"timestamp"`
	ExecutionState *wireState `json:"executionState,omitempty"`
}

// RequestError is a rejected request.
type RequestError struct {
	Code    string
	Message string
	State   *Execution // the current execution, for VersionMismatch and state errors
}

func (e *RequestError) Error() string { return e.Code + ": " + e.Message }

func reqErr(code, format string, args ...any) *RequestError {
	return &RequestError{Code: code, Message: fmt.Sprintf(format, args...)}
}

var (
	jobIDPattern  = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	detailKeyPatt = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)
)

// ValidJobID reports whether id is a valid AWS job id ([a-zA-Z0-9_-],
// 1-64 characters).
func ValidJobID(id string) bool { return jobIDPattern.MatchString(id) }

// ValidateStatusDetails checks a statusDetails map as AWS does.
func ValidateStatusDetails(m map[string]string) error {
	for k, v := range m {
		if !detailKeyPatt.MatchString(k) {
			return fmt.Errorf("statusDetails key %q: want 1-128 characters of [a-zA-Z0-9:_-]", k)
		}
		if v == "" || len(v) > 1024 || strings.IndexFunc(v, unicode.IsControl) >= 0 {
			return fmt.Errorf("statusDetails[%q]: want 1-1024 characters without control characters", k)
		}
	}
	return nil
}
