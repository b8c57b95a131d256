package shadow

import (
	"bytes"
	"math/big"
	"strconv"
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

// decimal is a JSON number reduced to sign, significant digits (no leading or
// trailing zeros) and the exponent e such that value = 0.digits × 10^e.
type decimal struct {
	neg    bool
	digits []byte
	exp    int64    // valid when bigExp is nil
	bigExp *big.Int // used when the written exponent does not fit comfortably in int64
}

func parseDecimal(raw []byte) decimal {
	var d decimal
	i := 0
	if raw[0] == '-' {
		d.neg = true
		i++
	}
	start := i
	for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
		i++
	}
	intPart := raw[start:i]
	var frac []byte
	if i < len(raw) && raw[i] == '.' {
		i++
		fs := i
		for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
			i++
		}
		frac = raw[fs:i]
	}
	var expText []byte
	if i < len(raw) {
		expText = raw[i+1:] // after 'e' or 'E'
	}
	digits := make([]byte, 0, len(intPart)+len(frac))
	digits = append(append(digits, intPart...), frac...)
	point := int64(len(intPart))
	lead := 0
	for lead < len(digits) && digits[lead] == '0' {
		lead++
	}
	digits = digits[lead:]
	point -= int64(lead)
	end := len(digits)
	for end > 0 && digits[end-1] == '0' {
		end--
	}
	d.digits = digits[:end]
	if len(d.digits) == 0 {
		return decimal{} // zero, whatever its sign or exponent
	}
	// Trim a leading '+' and leading zeros so the length test below is about
	// magnitude, not notation.
	if len(expText) > 0 && expText[0] == '+' {
		expText = expText[1:]
	}
	neg := len(expText) > 0 && expText[0] == '-'
	if neg {
		expText = expText[1:]
	}
	for len(expText) > 1 && expText[0] == '0' {
		expText = expText[1:]
	}
	if len(expText) <= 17 {
		e := int64(0)
		if len(expText) > 0 {
			e, _ = strconv.ParseInt(string(expText), 10, 64)
		}
		if neg {
			e = -e
		}
		d.exp = point + e
		return d
	}
	d.bigExp, _ = new(big.Int).SetString(string(expText), 10)
	if neg {
		d.bigExp.Neg(d.bigExp)
	}
	d.bigExp.Add(d.bigExp, big.NewInt(point))
	return d
}

func numEqual(a, b []byte) bool {
	x, y := parseDecimal(a), parseDecimal(b)
	if x.neg != y.neg || !bytes.Equal(x.digits, y.digits) {
		return false
	}
	if x.bigExp == nil && y.bigExp == nil {
		return x.exp == y.exp
	}
	return x.bigInt().Cmp(y.bigInt()) == 0
}

func (d decimal) bigInt() *big.Int {
	if d.bigExp != nil {
		return d.bigExp
	}
	return big.NewInt(d.exp)
}
