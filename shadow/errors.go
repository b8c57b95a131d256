package shadow

import (
	"errors"
	"strconv"
)

// Error is a shadow rejection: an HTTP status code and the exact message AWS
// puts in the rejected document (spec §4). Clients match on these strings, so
// they are reproduced verbatim, including AWS's own typos.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string {
	if e == nil {
		return "<nil>"
	}
	return strconv.Itoa(e.Code) + " " + e.Message
}

// Is makes errors.Is match any *Error with the same code and message, so a
// caller can test against the sentinels below whichever instance it holds. It
// is nil-safe because a nil *Error stored in an error interface is not nil.
func (e *Error) Is(target error) bool {
	var t *Error
	return e != nil && errors.As(target, &t) && t != nil && t.Code == e.Code && t.Message == e.Message
}

// The fixed rejections. Treat them as constants: callers must not modify them.
var (
	// ErrInvalidJSON: the payload is not one JSON object, has duplicate keys, is
	// empty (an /update), or an array in desired/reported contains null.
	ErrInvalidJSON = &Error{400, "Invalid JSON"}
	// ErrMissingState: an update without "state" (and, unless the shorthand
	// applies, without top-level desired/reported).
	ErrMissingState = &Error{400, "Missing required node: state"}
	// ErrStateNotObject: "state" is neither an object nor null.
	ErrStateNotObject = &Error{400, "State node must be an object"}
	// ErrDesiredNotObject: "desired" is neither an object nor null.
	ErrDesiredNotObject = &Error{400, "Desired node must be an object"}
	// ErrReportedNotObject: "reported" is neither an object nor null.
	ErrReportedNotObject = &Error{400, "Reported node must be an object"}
	// ErrInvalidVersion: "version" is not a non-negative integer, or names a
	// version a not-yet-existing shadow cannot be created with.
	ErrInvalidVersion = &Error{400, "Invalid version"}
	// ErrInvalidClientToken: "clientToken" is not a string or is too long.
	ErrInvalidClientToken = &Error{400, "Invalid clientToken"}
	// ErrVersionConflict: "version" differs from the current version.
	ErrVersionConflict = &Error{409, "Version conflict"}
	// ErrPayloadTooLarge: the request payload, or the merged state, exceeds its limit.
	ErrPayloadTooLarge = &Error{413, "The payload exceeds the maximum size allowed"}
	// ErrUnsupportedEncoding: the payload is not UTF-8 ("documented" is AWS's wording).
	ErrUnsupportedEncoding = &Error{415, "Unsupported documented encoding; supported encoding is UTF-8"}
	// ErrInternal: the stored document could not be read, or another fault that
	// is not the client's.
	ErrInternal = &Error{500, "Internal service failure"}
	// ErrNoShadow is what Get and Delete return for an absent shadow. They do not
	// know the shadow's name, and AWS puts the name in the message, so callers
	// reply with Ref.NotFound() (or NotFound) instead of this value.
	ErrNoShadow = &Error{404, "No shadow exists"}
)

// InvalidNode is the rejection for a key other than desired/reported inside
// "state", e.g. "State contains an invalid node: 'delta'".
func InvalidNode(key string) *Error {
	return &Error{400, "State contains an invalid node: '" + key + "'"}
}

// TooDeep is the nesting rejection; AWS's text names the maximum, so the
// message follows Options.MaxDepth.
func TooDeep(maxDepth int) *Error {
	return &Error{400, "JSON contains too many levels of nesting; maximum is " + strconv.Itoa(maxDepth)}
}

// NotFound is the 404 for a get or delete of an absent shadow. AWS quotes the
// shadow name, and for the classic shadow the thing name.
func NotFound(name string) *Error {
	return &Error{404, "No shadow exists with name: '" + name + "'"}
}

// TooManyRequests is the 429 for throttling. AWS documents the condition but not
// the text; Umbra uses the HTTP reason phrase.
func TooManyRequests() *Error { return &Error{429, "Too Many Requests"} }
