package shadow

import (
	"strconv"
	"unicode/utf8"
)

// appendNode writes n as compact JSON. Scalars and keys are copied verbatim, so a
// number the client sent as 1.50 or 1e400 comes back byte for byte; deleted
// members (holes) are skipped. The depth of n is bounded by the caller (see
// jsontree.go).
func appendNode(dst []byte, n *node) []byte {
	switch n.kind {
	case kindObject:
		dst = append(dst, '{')
		first := true
		for _, m := range n.members {
			if m.val == nil {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, m.rawName...)
			dst = append(dst, ':')
			dst = appendNode(dst, m.val)
		}
		return append(dst, '}')
	case kindArray:
		dst = append(dst, '[')
		for i, e := range n.elems {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendNode(dst, e)
		}
		return append(dst, ']')
	}
	return append(dst, n.raw...)
}

// objWriter writes an object member by member; it exists so the reply builders
// read like the documents they produce.
type objWriter struct {
	buf   []byte
	first bool
}

func newObj(dst []byte) objWriter { return objWriter{buf: append(dst, '{'), first: true} }

func (w *objWriter) key(k string) {
	if !w.first {
		w.buf = append(w.buf, ',')
	}
	w.first = false
	w.buf = append(w.buf, '"')
	w.buf = append(w.buf, k...) // keys written here are fixed ASCII names
	w.buf = append(w.buf, '"', ':')
}

func (w *objWriter) raw(k string, v []byte) {
	w.key(k)
	w.buf = append(w.buf, v...)
}

func (w *objWriter) node(k string, n *node) {
	w.key(k)
	w.buf = appendNode(w.buf, n)
}

func (w *objWriter) int(k string, v int64) {
	w.key(k)
	w.buf = strconv.AppendInt(w.buf, v, 10)
}

func (w *objWriter) str(k, v string) {
	w.key(k)
	w.buf = appendString(w.buf, v)
}

func (w *objWriter) token(token string, has bool) {
	if has {
		w.str("clientToken", token)
	}
}

func (w *objWriter) close() []byte { return append(w.buf, '}') }

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Unlike encoding/json it does not escape
// <, > and &, which AWS does not do either; invalid UTF-8 becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
