// Package decimal compares numbers as written in JSON and in the fleet
// query language by their exact decimal value: 1 == 1.0 == 10e-1, and
// 100000000000000000001 != 1e20, which float64 would confuse. The shadow
// delta and the query language both use it, so a value is equal in both.
package decimal

import (
	"math/big"
	"strconv"
	"strings"
)

// Decimal is a number reduced to sign, significant digits and exponent:
// value = ±0.d₁d₂…dₙ × 10^exp with d₁ ≠ 0 and dₙ ≠ 0. The digits are the
// concatenation of intPart and fracPart, indexed [lo, hi). Zero has lo == hi.
type Decimal struct {
	neg               bool
	intPart, fracPart string
	lo, hi            int
	exp               int64
	bigExp            *big.Int // set when exp does not fit comfortably
}

func (d *Decimal) digit(i int) byte {
	if i < len(d.intPart) {
		return d.intPart[i]
	}
	return d.fracPart[i-len(d.intPart)]
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// Parse reads [+-] digits [. digits] [(e|E) [+-] digits], with at
// least one digit before or after the point (JSON numbers, and also "+1",
// "01", ".5", "5."). It does not allocate unless the exponent is huge.
func Parse(s string) (Decimal, bool) {
	var d Decimal
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		d.neg = s[i] == '-'
		i++
	}
	st := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	d.intPart = s[st:i]
	if i < len(s) && s[i] == '.' {
		i++
		st = i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		d.fracPart = s[st:i]
	}
	if len(d.intPart)+len(d.fracPart) == 0 {
		return d, false
	}
	var expText string
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		st = i
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		ds := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if i == ds {
			return d, false
		}
		expText = s[st:i]
	}
	if i != len(s) {
		return d, false
	}
	n := len(d.intPart) + len(d.fracPart)
	d.lo, d.hi = 0, n
	for d.lo < n && d.digit(d.lo) == '0' {
		d.lo++
	}
	if d.lo == n {
		d.neg = false // -0 == 0
		return d, true
	}
	for d.digit(d.hi-1) == '0' {
		d.hi--
	}
	shift := int64(len(d.intPart)) - int64(d.lo)
	if expText == "" {
		d.exp = shift
		return d, true
	}
	if e, err := strconv.ParseInt(expText, 10, 64); err == nil && e > -(1<<62) && e < 1<<62 {
		d.exp = e + shift
		return d, true
	}
	b, ok := new(big.Int).SetString(strings.TrimPrefix(expText, "+"), 10)
	if !ok {
		return d, false
	}
	d.bigExp = b.Add(b, big.NewInt(shift))
	return d, true
}

// IsZero reports whether d is 0 (of either sign).
func (d *Decimal) IsZero() bool { return d.lo == d.hi }

func (d *Decimal) cmpExp(o *Decimal) int {
	if d.bigExp == nil && o.bigExp == nil {
		switch {
		case d.exp < o.exp:
			return -1
		case d.exp > o.exp:
			return 1
		}
		return 0
	}
	return d.expBig().Cmp(o.expBig())
}

func (d *Decimal) expBig() *big.Int {
	if d.bigExp != nil {
		return d.bigExp
	}
	return big.NewInt(d.exp)
}

// Cmp orders by value: -1, 0 or 1.
func (d *Decimal) Cmp(o *Decimal) int {
	dz, oz := d.IsZero(), o.IsZero()
	switch {
	case dz && oz:
		return 0
	case dz:
		if o.neg {
			return 1
		}
		return -1
	case oz:
		if d.neg {
			return -1
		}
		return 1
	case d.neg != o.neg:
		if d.neg {
			return -1
		}
		return 1
	}
	m := d.cmpMagnitude(o)
	if d.neg {
		return -m
	}
	return m
}

func (d *Decimal) cmpMagnitude(o *Decimal) int {
	if c := d.cmpExp(o); c != 0 {
		return c
	}
	i, j := d.lo, o.lo
	for i < d.hi && j < o.hi {
		a, b := d.digit(i), o.digit(j)
		if a != b {
			if a < b {
				return -1
			}
			return 1
		}
		i++
		j++
	}
	switch {
	case i < d.hi:
		return 1
	case j < o.hi:
		return -1
	}
	return 0
}

// Canonical is a text equal for equal values: "0", or [-]0.DIGITSeEXP.
func (d *Decimal) Canonical() string {
	if d.IsZero() {
		return "0"
	}
	var b strings.Builder
	if d.neg {
		b.WriteByte('-')
	}
	b.WriteString("0.")
	for i := d.lo; i < d.hi; i++ {
		b.WriteByte(d.digit(i))
	}
	b.WriteByte('e')
	if d.bigExp != nil {
		b.WriteString(d.bigExp.String())
	} else {
		b.WriteString(strconv.FormatInt(d.exp, 10))
	}
	return b.String()
}
