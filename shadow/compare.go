package shadow

import (
	"bytes"

	"github.com/umbra-iot/umbra/internal/decimal"
)

// equal is the value equality the delta and convergence use: numbers by exact
// decimal value (1 == 1.0 == 10e-1, and 100000000000000000001 != 1e20, which a
// float64 comparison would confuse), strings after unescaping, arrays element by
// element in order, objects as unordered sets of members.
func equal(a, b *node) bool {
	a.expand()
	b.expand()
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case kindNumber:
		return bytes.Equal(a.raw, b.raw) || numEqual(a.raw, b.raw)
	case kindString:
		if bytes.Equal(a.raw, b.raw) {
			return true
		}
		if bytes.IndexByte(a.raw, '\\') < 0 && bytes.IndexByte(b.raw, '\\') < 0 {
			return false
		}
		return unquote(a.raw) == unquote(b.raw)
	case kindArray:
		if len(a.elems) != len(b.elems) {
			return false
		}
		for i := range a.elems {
			if !equal(a.elems[i], b.elems[i]) {
				return false
			}
		}
		return true
	case kindObject:
		if a.live != b.live {
			return false
		}
		for _, m := range a.members {
			if m.val == nil {
				continue
			}
			bv := b.get(m.name)
			if bv == nil || !equal(m.val, bv) {
				return false
			}
		}
		return true
	}
	return true // null, true, false: the kind is the value
}

// numEqual compares two JSON numbers by exact decimal value, as the fleet
// query language does (internal/decimal).
func numEqual(a, b []byte) bool {
	x, okx := decimal.Parse(string(a))
	y, oky := decimal.Parse(string(b))
	return okx && oky && x.Cmp(&y) == 0
}
