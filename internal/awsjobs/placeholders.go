package awsjobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// Artifact placeholders: a job document of a job or rollout that names a
// firmware artifact refers to the image with ${umbra:artifact.NAME} in its
// string values, and each device reads the document with the placeholders
// replaced by its own values (the way AWS substitutes
// ${aws:iot:s3-presigned-url:...}), rendered afresh every time the
// document is sent (start-next, {jobId}/get, {jobId}/update with
// includeJobDocument, notify-next), so the URL's download token is minted
// when the device reads it. The stored document keeps the placeholders.
//
//   - ${umbra:artifact.url}: this device's download URL (its own token)
//   - ${umbra:artifact.sha256}: the image's SHA-256 (hex)
//   - ${umbra:artifact.size}: the image's size in bytes: a JSON number when
//     the placeholder is the whole string ("size": "${umbra:artifact.size}"
//     becomes "size": 1500000), its decimal digits inside a longer string
//   - ${umbra:artifact.version}: the artifact's version
//   - ${umbra:artifact.signature}: the base64 signature over the SHA-256
//     digest (only for a signed artifact)
//
// Any other ${umbra:...} is an error; other ${...} text (AWS's own
// placeholders) is left alone. Placeholders are not allowed in keys.

// PlaceholderPrefix starts every Umbra placeholder.
const PlaceholderPrefix = "${umbra:"

// Placeholder names.
const (
	PlaceURL       = "artifact.url"
	PlaceSHA256    = "artifact.sha256"
	PlaceSize      = "artifact.size"
	PlaceVersion   = "artifact.version"
	PlaceSignature = "artifact.signature"
)

var placeholderNames = []string{PlaceURL, PlaceSHA256, PlaceSize, PlaceVersion, PlaceSignature}

// ArtifactValues are one device's values for the placeholders.
type ArtifactValues struct {
	URL       string
	SHA256    string
	Size      int64
	Version   string
	Signature string // base64; "" when unsigned
}

// ErrPlaceholder is an unknown or misplaced placeholder.
var ErrPlaceholder = errors.New("invalid placeholder")

// Placeholders lists the ${umbra:...} placeholders a job document uses
// (sorted names without the ${umbra: } wrapping), or an error naming an
// unknown one or one in a key.
func Placeholders(doc []byte) ([]string, error) {
	used := map[string]bool{}
	err := walkStrings(doc, func(s string, key bool) (string, error) {
		names, err := scan(s)
		if err != nil {
			return "", err
		}
		if key && len(names) > 0 {
			return "", fmt.Errorf("%w: %q is a key; placeholders are substituted in string values only", ErrPlaceholder, s)
		}
		for _, n := range names {
			used[n] = true
		}
		return "", nil
	}, nil)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(used))
	for n := range used {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// scan returns the placeholder names in s.
func scan(s string) ([]string, error) {
	var names []string
	for {
		i := strings.Index(s, PlaceholderPrefix)
		if i < 0 {
			return names, nil
		}
		rest := s[i+len(PlaceholderPrefix):]
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			return nil, fmt.Errorf("%w: %q has no closing }", ErrPlaceholder, s[i:])
		}
		name := rest[:end]
		known := false
		for _, k := range placeholderNames {
			known = known || name == k
		}
		if !known {
			return nil, fmt.Errorf("%w: unknown placeholder %s%s}; known: %s", ErrPlaceholder, PlaceholderPrefix, name, knownList())
		}
		names = append(names, name)
		s = rest[end+1:]
	}
}

func knownList() string {
	var b []string
	for _, n := range placeholderNames {
		b = append(b, PlaceholderPrefix+n+"}")
	}
	return strings.Join(b, ", ")
}

// RenderDocument returns doc with its placeholders replaced by v.
func RenderDocument(doc []byte, v ArtifactValues) ([]byte, error) {
	values := map[string]string{PlaceURL: v.URL, PlaceSHA256: v.SHA256, PlaceSize: strconv.FormatInt(v.Size, 10),
		PlaceVersion: v.Version, PlaceSignature: v.Signature}
	var out bytes.Buffer
	err := walkStrings(doc, func(s string, key bool) (string, error) {
		if key || !strings.Contains(s, PlaceholderPrefix) {
			return s, nil
		}
		for name, val := range values {
			s = strings.ReplaceAll(s, PlaceholderPrefix+name+"}", val)
		}
		return s, nil
	}, &out)
	if err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// sizeWhole is the string value that renders as the size as a number.
const sizeWhole = PlaceholderPrefix + PlaceSize + "}"

// walkStrings decodes doc token by token, calling fn on every string (key
// tells whether it is an object key); with out, it writes the document
// back compactly, each string replaced by fn's result (a value that is
// exactly the size placeholder is written as the number).
func walkStrings(doc []byte, fn func(s string, key bool) (string, error), out *bytes.Buffer) error {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	type frame struct {
		obj bool
		n   int // tokens written in this container
	}
	var stack []frame
	enc := func(s string) {
		var b bytes.Buffer
		e := json.NewEncoder(&b)
		e.SetEscapeHTML(false)
		_ = e.Encode(s)
		out.Write(bytes.TrimRight(b.Bytes(), "\n"))
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		key := false
		if len(stack) > 0 {
			top := &stack[len(stack)-1]
			if d, ok := tok.(json.Delim); !ok || d == '{' || d == '[' {
				if out != nil {
					switch {
					case top.obj && top.n%2 == 1:
						out.WriteByte(':')
					case top.n > 0:
						out.WriteByte(',')
					}
				}
				key = top.obj && top.n%2 == 0
				top.n++
			}
		}
		switch t := tok.(type) {
		case json.Delim:
			if out != nil {
				out.WriteByte(byte(t))
			}
			if t == '{' || t == '[' {
				stack = append(stack, frame{obj: t == '{'})
			} else {
				stack = stack[:len(stack)-1]
			}
		case string:
			r, err := fn(t, key)
			if err != nil {
				return err
			}
			if out == nil {
				continue
			}
			if !key && t == sizeWhole {
				out.WriteString(r) // the size's digits: a number
			} else {
				enc(r)
			}
		case json.Number:
			if out != nil {
				out.WriteString(t.String())
			}
		case bool:
			if out != nil {
				out.WriteString(strconv.FormatBool(t))
			}
		case nil:
			if out != nil {
				out.WriteString("null")
			}
		}
	}
}
