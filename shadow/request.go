package shadow

import (
	"strconv"
	"unicode/utf8"
)

// UpdateRequest is a validated /update payload. It is immutable: Update may
// apply it any number of times (for instance after a store conflict), even
// from several goroutines.
type UpdateRequest struct {
	ClientToken string
	HasToken    bool
	Version     int64
	HasVersion  bool

	stateNull bool  // "state": null clears both sections
	desired   *node // the patch for desired: nil when absent, a null node to clear, else an object
	reported  *node // likewise for reported
	echo      []byte
}

// State is the request's state as /update/accepted echoes it: compact, with the
// shorthand form rewritten as {"desired":…,"reported":…}.
func (r *UpdateRequest) State() []byte { return r.echo }

// ParseUpdate validates an /update payload in the order of spec §3.6:
//
//  1. not UTF-8 → 415; longer than MaxPayloadBytes → 413
//  2. empty, not JSON, duplicate keys, not an object → 400 Invalid JSON
//  3. no "state" (and no shorthand) → 400 Missing required node: state
//  4. "state" not an object or null → 400 State node must be an object
//  5. a key other than desired/reported in state → 400 State contains an invalid node: '<key>'
//  6. desired / reported not an object or null → 400 Desired/Reported node must be an object
//  7. clientToken not a string or too long → 400 Invalid clientToken
//  8. version not a non-negative integer → 400 Invalid version
//  9. desired or reported deeper than MaxDepth → 400 JSON contains too many levels of nesting; maximum is N,
//     then an array containing null inside desired/reported → 400 Invalid JSON
//
// Steps 10 (throttling) and 11-12 (version match, merged size) belong to the
// caller and to Update. Once the payload parses as an object, a valid
// clientToken is returned even when a later step fails, so the rejection can
// echo it. The payload is copied; the caller may reuse its buffer.
func ParseUpdate(payload []byte, o Options) (req *UpdateRequest, clientToken string, hasToken bool, err *Error) {
	o = o.Normalize()
	if !utf8.Valid(payload) {
		return nil, "", false, ErrUnsupportedEncoding
	}
	if len(payload) > o.MaxPayloadBytes {
		return nil, "", false, ErrPayloadTooLarge
	}
	root, ok := parseJSON(append([]byte(nil), TrimNUL(payload)...))
	if !ok || root.kind != kindObject {
		return nil, "", false, ErrInvalidJSON
	}
	tokNode := root.get("clientToken")
	if tokNode != nil && tokNode.kind == kindString {
		if t := unquote(tokNode.raw); len(t) <= o.MaxClientTokenBytes {
			clientToken, hasToken = t, true
		}
	}
	reject := func(e *Error) (*UpdateRequest, string, bool, *Error) {
		return nil, clientToken, hasToken, e
	}

	r := &UpdateRequest{}
	state := root.get("state")
	if state == nil {
		if o.Strict {
			return reject(ErrMissingState)
		}
		// The seed's shorthand: top-level desired/reported without "state".
		desired, reported := root.get("desired"), root.get("reported")
		if desired == nil && reported == nil {
			return reject(ErrMissingState)
		}
		state = newObject()
		for _, m := range root.members {
			if m.name == "desired" || m.name == "reported" {
				state.set(m.name, m.rawName, m.val)
			}
		}
	}
	switch state.kind {
	case kindNull:
		r.stateNull = true
	case kindObject:
		for _, m := range state.members {
			if m.name != "desired" && m.name != "reported" {
				return reject(InvalidNode(m.name))
			}
		}
	default:
		return reject(ErrStateNotObject)
	}
	r.desired, r.reported = state.get("desired"), state.get("reported")
	if r.desired != nil && r.desired.kind != kindObject && r.desired.kind != kindNull {
		return reject(ErrDesiredNotObject)
	}
	if r.reported != nil && r.reported.kind != kindObject && r.reported.kind != kindNull {
		return reject(ErrReportedNotObject)
	}
	if tokNode != nil && tokNode.kind != kindNull {
		if !hasToken {
			return reject(ErrInvalidClientToken)
		}
		r.ClientToken, r.HasToken = clientToken, true
	}
	if v := root.get("version"); v != nil && v.kind != kindNull {
		n, ok := parseVersion(v)
		if !ok {
			return reject(ErrInvalidVersion)
		}
		r.Version, r.HasVersion = n, true
	}
	for _, sec := range [...]*node{r.desired, r.reported} {
		if sec != nil && int(sec.height) > o.MaxDepth {
			return reject(TooDeep(o.MaxDepth))
		}
	}
	for _, sec := range [...]*node{r.desired, r.reported} {
		if sec != nil && nullInArray(sec, false) {
			return reject(ErrInvalidJSON)
		}
	}
	r.echo = appendNode(nil, state)
	return r, clientToken, hasToken, nil
}

// TrimNUL returns payload without the NUL bytes (0x00) at its very end. C
// firmware often publishes a JSON C string including its terminator (the AWS
// Embedded C shadow demo, Espressif's ESP32 thing_shadow example), and AWS IoT
// accepts such payloads; see "Trailing NUL bytes" in the package doc. Only
// the trailing run is removed: a NUL anywhere else stays and makes the payload
// invalid JSON.
func TrimNUL(payload []byte) []byte {
	n := len(payload)
	for n > 0 && payload[n-1] == 0 {
		n--
	}
	return payload[:n]
}

// parseVersion accepts only the plain integer form 0|[1-9][0-9]* that fits in
// int64: a fraction (1.0), an exponent (1e2), a sign, a string → Invalid version.
func parseVersion(v *node) (int64, bool) {
	if v.kind != kindNumber {
		return 0, false
	}
	for _, c := range v.raw {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(v.raw), 10, 64)
	return n, err == nil
}

// nullInArray reports whether some array below n (or n itself, when inArray)
// contains null at any depth. n's height was checked, so recursion is bounded.
func nullInArray(n *node, inArray bool) bool {
	switch n.kind {
	case kindNull:
		return inArray
	case kindObject:
		for _, m := range n.members {
			if nullInArray(m.val, inArray) {
				return true
			}
		}
	case kindArray:
		for _, e := range n.elems {
			if nullInArray(e, true) {
				return true
			}
		}
	}
	return false
}

// ParseTokenOnly reads the clientToken of a /get or /delete payload. AWS ignores
// the content of these payloads, so anything that is not a JSON object (empty,
// malformed, invalid UTF-8, too large) simply carries no token; an object with a
// clientToken that is not a string, or too long, is 400 Invalid clientToken.
func ParseTokenOnly(payload []byte, o Options) (clientToken string, hasToken bool, err *Error) {
	o = o.Normalize()
	if len(payload) == 0 || len(payload) > o.MaxPayloadBytes || !utf8.Valid(payload) {
		return "", false, nil
	}
	root, ok := parseJSON(TrimNUL(payload))
	if !ok || root.kind != kindObject {
		return "", false, nil
	}
	tok := root.get("clientToken")
	if tok == nil || tok.kind == kindNull {
		return "", false, nil
	}
	if tok.kind != kindString {
		return "", false, ErrInvalidClientToken
	}
	t := unquote(tok.raw)
	if len(t) > o.MaxClientTokenBytes {
		return "", false, ErrInvalidClientToken
	}
	return t, true, nil
}
