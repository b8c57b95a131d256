package shadow

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// The exact strings of spec §4: clients match on them.
func TestErrorMessages(t *testing.T) {
	for _, c := range []struct {
		err  *Error
		code int
		msg  string
	}{
		{ErrInvalidJSON, 400, "Invalid JSON"},
		{ErrMissingState, 400, "Missing required node: state"},
		{ErrStateNotObject, 400, "State node must be an object"},
		{ErrDesiredNotObject, 400, "Desired node must be an object"},
		{ErrReportedNotObject, 400, "Reported node must be an object"},
		{ErrInvalidVersion, 400, "Invalid version"},
		{ErrInvalidClientToken, 400, "Invalid clientToken"},
		{InvalidNode("delta"), 400, "State contains an invalid node: 'delta'"},
		{TooDeep(6), 400, "JSON contains too many levels of nesting; maximum is 6"},
		{TooDeep(8), 400, "JSON contains too many levels of nesting; maximum is 8"},
		{NotFound("MyThing"), 404, "No shadow exists with name: 'MyThing'"},
		{ErrVersionConflict, 409, "Version conflict"},
		{ErrPayloadTooLarge, 413, "The payload exceeds the maximum size allowed"},
		{ErrUnsupportedEncoding, 415, "Unsupported documented encoding; supported encoding is UTF-8"},
		{TooManyRequests(), 429, "Too Many Requests"},
		{ErrInternal, 500, "Internal service failure"},
	} {
		if c.err.Code != c.code || c.err.Message != c.msg {
			t.Errorf("got %d %q, want %d %q", c.err.Code, c.err.Message, c.code, c.msg)
		}
		if got, want := c.err.Error(), fmt.Sprintf("%d %s", c.code, c.msg); got != want {
			t.Errorf("Error() = %q, want %q", got, want)
		}
	}
}

func TestErrorIs(t *testing.T) {
	var err error = &Error{409, "Version conflict"}
	if !errors.Is(err, ErrVersionConflict) {
		t.Error("a fresh *Error with the same code and message should match the sentinel")
	}
	if errors.Is(err, ErrInvalidVersion) {
		t.Error("different errors matched")
	}
	if !errors.Is(fmt.Errorf("store: %w", NotFound("T")), NotFound("T")) {
		t.Error("wrapped *Error did not match")
	}
	var typedNil *Error
	err = typedNil
	if errors.Is(err, ErrNoShadow) || typedNil.Error() != "<nil>" {
		t.Error("a nil *Error must be safe to inspect")
	}
}

func TestRejected(t *testing.T) {
	now := time.Unix(1591057529, 0)
	for _, c := range []struct {
		err   *Error
		token string
		has   bool
		want  string
	}{
		{ErrVersionConflict, "tok", true, `{"code":409,"message":"Version conflict","timestamp":1591057529,"clientToken":"tok"}`},
		{NotFound("T"), "", false, `{"code":404,"message":"No shadow exists with name: 'T'","timestamp":1591057529}`},
		{InvalidNode(`a"b`), "", true, `{"code":400,"message":"State contains an invalid node: 'a\"b'","timestamp":1591057529,"clientToken":""}`},
		{nil, "", false, `{"code":500,"message":"Internal service failure","timestamp":1591057529}`},
	} {
		if got := string(Rejected(c.err, c.token, c.has, now)); got != c.want {
			t.Errorf("Rejected = %s\nwant       %s", got, c.want)
		}
	}
}

func TestAppendString(t *testing.T) {
	for in, want := range map[string]string{
		"plain":          `"plain"`,
		`q"b\`:           `"q\"b\\"`,
		"<&>":            `"<&>"`,
		"\n\r\t\x00\x1f": `"\n\r\t\u0000\u001f"`,
		"é😀":             `"é😀"`,
		"bad\xffutf8":    `"bad\ufffdutf8"`,
	} {
		if got := string(appendString(nil, in)); got != want {
			t.Errorf("appendString(%q) = %s, want %s", in, got, want)
		}
	}
}
