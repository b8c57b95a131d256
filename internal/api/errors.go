package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/internal/rollout"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/registry/query"
	"github.com/umbra-iot/umbra/shadow"
)

// One error path: every handler returns an error, and WriteError writes
// every error the HTTP listener answers (handlers, authentication, browser
// protection, unknown routes and wrong methods, the dashboard's files) as
// one JSON document, the shape MQTT clients get on a shadow's /rejected:
//
//	{"code": 404, "message": "...", "field": "pageSize", "timestamp": 1733346000}
//
// field is present when one field of the request is to blame. The AWS
// rest-json exception name goes in the X-Amzn-ErrorType header, which AWS
// SDKs read.

// Error is an API error: the HTTP status, a message, and the offending
// field when one is to blame.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

// Errorf makes an *Error with status code blaming field ("" for none).
func Errorf(code int, field, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Field: field}
}

// errorDoc is the JSON error document.
type errorDoc struct {
	Code      int    `json:"code"`
	Message   string `json:"message"`
	Field     string `json:"field,omitempty"`
	Timestamp int64  `json:"timestamp"`
}

// awsErrorTypes maps a status to the AWS rest-json exception name.
var awsErrorTypes = map[int]string{
	400: "InvalidRequestException",
	401: "UnauthorizedException",
	403: "ForbiddenException",
	404: "ResourceNotFoundException",
	405: "MethodNotAllowedException",
	409: "ConflictException",
	413: "RequestEntityTooLargeException",
	415: "UnsupportedDocumentEncodingException",
	429: "ThrottlingException",
	500: "InternalFailureException",
	503: "ServiceUnavailableException",
}

// rejection is the shadow service's own rejected document for a request
// (the error document plus the request's clientToken), written as it is.
type rejection struct {
	err *shadow.Error
	doc []byte
}

func (r *rejection) Error() string { return r.err.Error() }

// WriteError writes err as the JSON error document. Errors of the packages
// behind the API map to their statuses (a field error to 400 naming the
// field, not found to 404, conflicts to 409); any other error is a 500
// whose detail is not shown.
func WriteError(w http.ResponseWriter, err error) {
	var rej *rejection
	if errors.As(err, &rej) {
		writeRaw(w, rej.err.Code, rej.doc)
		return
	}
	e := toError(err)
	body, _ := json.Marshal(errorDoc{Code: e.Code, Message: e.Message, Field: e.Field, Timestamp: time.Now().Unix()})
	writeRaw(w, e.Code, append(body, '\n'))
}

// toError maps err to an *Error.
func toError(err error) *Error {
	var (
		ae  *Error
		se  *shadow.Error
		rfe *registry.FieldError
		ofe *rollout.FieldError
		qse *query.SyntaxError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &se):
		return &Error{Code: se.Code, Message: se.Message}
	case errors.As(err, &rfe):
		return &Error{Code: 400, Message: rfe.Msg, Field: rfe.Field}
	case errors.As(err, &ofe):
		msg := ofe.Msg
		if _, joined := err.(interface{ Unwrap() []error }); joined {
			msg = err.Error() // several fields: name them all
		}
		return &Error{Code: 400, Message: msg, Field: ofe.Field}
	case errors.As(err, &qse):
		return &Error{Code: 400, Message: qse.Error(), Field: "query"}
	case errors.As(err, &mbe):
		return &Error{Code: 413, Message: fmt.Sprintf("request body larger than %d bytes", mbe.Limit)}
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, rollout.ErrNotFound):
		return &Error{Code: 404, Message: err.Error()}
	case errors.Is(err, rollout.ErrPlanChanged):
		return &Error{Code: 409, Message: err.Error(), Field: "plan"}
	case errors.Is(err, registry.ErrExists), errors.Is(err, registry.ErrVersionConflict),
		errors.Is(err, registry.ErrInUse), errors.Is(err, rollout.ErrState):
		return &Error{Code: 409, Message: err.Error()}
	default:
		return &Error{Code: 500, Message: "Internal service failure"}
	}
}

// HandlerFunc is an API handler: it writes its answer on success and returns
// the failure otherwise, which ServeHTTP writes with WriteError.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

func (h HandlerFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h(w, r); err != nil {
		WriteError(w, err)
	}
}

// Infallible adapts a handler that writes its own answers (the metrics
// exposition) to a HandlerFunc.
func Infallible(h http.Handler) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		h.ServeHTTP(w, r)
		return nil
	}
}

// Routes answers r with mux, writing the mux's own refusals (no route: 404;
// a route for other methods: 405 with its Allow header) as JSON errors.
func Routes(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, pattern := mux.Handler(r); pattern == "" {
			// No pattern is matched: the handler is the mux's 404 or 405.
			// Run it on a scratch writer for its status and Allow header.
			rec := &statusRecorder{header: http.Header{}}
			h.ServeHTTP(rec, r)
			switch rec.status {
			case http.StatusMethodNotAllowed:
				MethodNotAllowed(w, r, rec.header.Get("Allow"))
				return
			case http.StatusNotFound:
				WriteError(w, Errorf(404, "", "Not Found: no route for %s %s (the API is described at /openapi.json)", r.Method, r.URL.Path))
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// statusRecorder keeps the status and header a handler writes.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *statusRecorder) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(b), nil
}

// MethodNotAllowed writes a 405 naming the allowed methods.
func MethodNotAllowed(w http.ResponseWriter, r *http.Request, allowed ...string) {
	allow := strings.Join(allowed, ", ")
	w.Header().Set("Allow", allow)
	WriteError(w, Errorf(405, "", "Method Not Allowed: %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
}

// NotFound writes a 404 naming the path.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteError(w, Errorf(404, "", "Not Found: nothing at %s", r.URL.Path))
}

// writeJSON writes v as the JSON body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeRaw writes an already-encoded JSON body.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	if t, ok := awsErrorTypes[status]; ok && status >= 400 {
		w.Header().Set("X-Amzn-ErrorType", t)
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func badRequest(format string, args ...any) *Error { return Errorf(400, "", format, args...) }

func nowUnix() int64 { return time.Now().Unix() }
