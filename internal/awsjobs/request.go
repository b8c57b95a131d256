package awsjobs

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// fields is a request payload's top-level members.
type fields map[string]json.RawMessage

// parsePayload reads a request payload: empty is {}; trailing NULs (C
// clients) are ignored.
func parsePayload(p []byte) (fields, *RequestError) {
	p = bytes.TrimRight(p, "\x00")
	if len(bytes.TrimSpace(p)) == 0 {
		return fields{}, nil
	}
	if !utf8.Valid(p) || !json.Valid(p) {
		return nil, reqErr(CodeInvalidJSON, "the request payload is not valid UTF-8 JSON")
	}
	var f fields
	if err := json.Unmarshal(p, &f); err != nil || f == nil {
		return nil, reqErr(CodeInvalidRequest, "the request payload must be a JSON object")
	}
	for k, v := range f {
		if string(v) == "null" {
			delete(f, k)
		}
	}
	return f, nil
}

// token is the request's clientToken when it is a string (echoed back).
func (f fields) token() string {
	var s string
	if raw, ok := f["clientToken"]; ok && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

func (f fields) checkToken() *RequestError {
	raw, ok := f["clientToken"]
	if !ok {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return reqErr(CodeInvalidRequest, "clientToken must be a string")
	}
	if len(s) > 64 {
		return reqErr(CodeInvalidRequest, "clientToken must be at most 64 characters")
	}
	return nil
}

func (f fields) str(name string) (string, bool, *RequestError) {
	raw, ok := f[name]
	if !ok {
		return "", false, nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false, reqErr(CodeInvalidRequest, "%s must be a string", name)
	}
	return s, true, nil
}

// integer accepts a JSON integer (or a string of digits: the developer
// guide shows expectedVersion as "number").
func (f fields) integer(name string) (int64, bool, *RequestError) {
	raw, ok := f[name]
	if !ok {
		return 0, false, nil
	}
	var n int64
	if json.Unmarshal(raw, &n) == nil {
		return n, true, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		var num json.Number = json.Number(s)
		if v, err := num.Int64(); err == nil {
			return v, true, nil
		}
	}
	return 0, false, reqErr(CodeInvalidRequest, "%s must be an integer", name)
}

func (f fields) boolean(name string) (bool, bool, *RequestError) {
	raw, ok := f[name]
	if !ok {
		return false, false, nil
	}
	var b bool
	if json.Unmarshal(raw, &b) != nil {
		return false, false, reqErr(CodeInvalidRequest, "%s must be a boolean", name)
	}
	return b, true, nil
}

func (f fields) details() (map[string]string, bool, *RequestError) {
	raw, ok := f["statusDetails"]
	if !ok {
		return nil, false, nil
	}
	var m map[string]string
	if json.Unmarshal(raw, &m) != nil {
		return nil, false, reqErr(CodeInvalidRequest, "statusDetails must be an object of string values")
	}
	if err := ValidateStatusDetails(m); err != nil {
		return nil, false, reqErr(CodeInvalidRequest, "%s", err.Error())
	}
	return m, true, nil
}

// stepTimeout reads stepTimeoutInMinutes: 1..10080, or -1 (clear).
func (f fields) stepTimeout() (int64, bool, *RequestError) {
	n, ok, err := f.integer("stepTimeoutInMinutes")
	if err != nil || !ok {
		return 0, ok, err
	}
	if n != -1 && (n < 1 || n > 10080) {
		return 0, false, reqErr(CodeInvalidRequest, "stepTimeoutInMinutes must be within 1-10080, or -1 to clear the step timer")
	}
	return n, true, nil
}
