package query

import (
	"github.com/Masterminds/semver/v3"
)

// Record is what evaluation reads of one thing. Values returns every value
// at a field (several for thingGroupNames or an array); nil if absent.
type Record interface {
	Values(field string) []Value
}

// Exister is an optional Record method for field:* (OpExists). Without it a
// field exists when Values returns something; a Record whose fields can
// hold objects (shadow.reported.location = {"lat":…,"lon":…}) implements it
// so that existence also holds for an object-valued path.
type Exister interface {
	Exists(field string) bool
}

// Match reports whether the record satisfies the query. A Query with a nil
// Root matches nothing.
func (q *Query) Match(r Record) bool {
	if q == nil || q.Root == nil {
		return false
	}
	return eval(q.Root, r)
}

// eval walks the tree; its depth is bounded by the parser's limits (the
// binary chains of a 4 KiB query are at most a few hundred deep).
func eval(n Node, r Record) bool {
	switch n := n.(type) {
	case *Term:
		return n.matchRecord(r)
	case *And:
		return eval(n.Left, r) && eval(n.Right, r)
	case *Or:
		return eval(n.Left, r) || eval(n.Right, r)
	case *Not:
		return !eval(n.X, r)
	case *All:
		return true
	case Term:
		return n.matchRecord(r)
	case And:
		return eval(n.Left, r) && eval(n.Right, r)
	case Or:
		return eval(n.Left, r) || eval(n.Right, r)
	case Not:
		return !eval(n.X, r)
	case All:
		return true
	}
	return false
}

func (t *Term) matchRecord(r Record) bool {
	if t.Op == OpExists {
		if e, ok := r.(Exister); ok {
			return e.Exists(t.Field)
		}
		return len(r.Values(t.Field)) > 0
	}
	c := t.compiled()
	for _, v := range r.Values(t.Field) {
		if c.match(t, v) {
			return true
		}
	}
	return false
}

// MatchValue tests one value against the term (the index uses it to test
// indexed values). The literal takes the kind of v where it can: a Number
// v is compared with the literal read as a number when the literal is one,
// a Bool v with the literal read as true/false when it is one; otherwise
// the literal is a String. Then OpEq is EqualFold, the comparisons and
// OpRange use Compare, OpWildcard matches the pattern against v.S
// case-insensitively, and OpExists is true.
func (t *Term) MatchValue(v Value) bool {
	return t.compiled().match(t, v)
}

// compiled is a term's literals parsed once (by Parse), read-only after.
type compiled struct {
	op             Op
	value, lo, hi  string // the texts compiled, to detect later edits
	v, low, high   literal
	pat            []patElem
	loUnb, hiUnb   bool
	loIncl, hiIncl bool
}

// literal is a query literal in the three kinds it can take.
type literal struct {
	str, num, boolean operand
	isNum, isBool     bool
}

// operand is a Value with its number and version readings. done marks a
// reading as computed (nil/false results included), so shared literal
// operands are never written during matching.
type operand struct {
	v       Value
	dec     decimal
	decOK   bool
	decDone bool
	ver     *semver.Version
	verDone bool
}

func (o *operand) number() (*decimal, bool) {
	if !o.decDone {
		o.dec, o.decOK = parseDecimal(o.v.S)
		o.decDone = true
	}
	return &o.dec, o.decOK
}

func (o *operand) version() *semver.Version {
	if !o.verDone {
		o.ver = parseVersion(o.v.S)
		o.verDone = true
	}
	return o.ver
}

func newOperand(v Value) operand {
	o := operand{v: v}
	o.number()
	o.version()
	return o
}

func newLiteral(s string) literal {
	l := literal{str: newOperand(Str(s)), num: newOperand(Num(s))}
	l.isNum = l.num.decOK
	if b, ok := parseBool(s); ok {
		l.isBool = true
		l.boolean = newOperand(Boolean(b))
	}
	return l
}

// forKind is the literal in the kind it takes against a value of kind k.
func (l *literal) forKind(k Kind) *operand {
	switch {
	case k == Number && l.isNum:
		return &l.num
	case k == Bool && l.isBool:
		return &l.boolean
	}
	return &l.str
}

// compareOperands is Compare over operands (sharing parsed readings).
func compareOperands(a, b *operand) int {
	if a.v.Kind == Number && b.v.Kind == Number {
		da, oka := a.number()
		db, okb := b.number()
		if oka && okb {
			return da.Cmp(db)
		}
	}
	if a.v.Kind == Bool && b.v.Kind == Bool {
		return cmpBool(truth(a.v.S), truth(b.v.S))
	}
	if a.v.Kind != Bool && b.v.Kind != Bool {
		if va := a.version(); va != nil {
			if vb := b.version(); vb != nil {
				return va.Compare(vb)
			}
		}
	}
	return foldCompare(a.v.S, b.v.S)
}

// equalOperands is EqualFold over operands.
func equalOperands(a, b *operand) bool {
	if a.v.Kind != b.v.Kind {
		return false
	}
	switch a.v.Kind {
	case Number:
		da, oka := a.number()
		db, okb := b.number()
		if oka != okb {
			return false
		}
		if oka {
			return da.Cmp(db) == 0
		}
	case Bool:
		return truth(a.v.S) == truth(b.v.S)
	}
	return foldCompare(a.v.S, b.v.S) == 0
}

// compiled returns the parsed literals, compiling afresh (not cached) when
// the term was built by hand or edited after Parse.
func (t *Term) compiled() *compiled {
	if c := t.lit; c != nil && c.op == t.Op && c.value == t.Value && c.lo == t.Low && c.hi == t.High &&
		c.loIncl == t.LowIncl && c.hiIncl == t.HighIncl {
		return c
	}
	return compileTerm(t)
}

func newTerm(t Term) *Term {
	out := &t
	out.lit = compileTerm(out)
	return out
}

func compileTerm(t *Term) *compiled {
	c := &compiled{op: t.Op, value: t.Value, lo: t.Low, hi: t.High, loIncl: t.LowIncl, hiIncl: t.HighIncl}
	switch t.Op {
	case OpEq, OpLT, OpLE, OpGT, OpGE:
		c.v = newLiteral(t.Value)
	case OpRange:
		c.loUnb, c.hiUnb = t.Low == "*", t.High == "*"
		if !c.loUnb {
			c.low = newLiteral(t.Low)
		}
		if !c.hiUnb {
			c.high = newLiteral(t.High)
		}
	case OpWildcard:
		c.pat = compilePattern(t.Value)
	}
	return c
}

func (c *compiled) match(t *Term, v Value) bool {
	switch c.op {
	case OpExists:
		return true
	case OpWildcard:
		return matchPattern(c.pat, v.S)
	}
	a := operand{v: v}
	switch c.op {
	case OpEq:
		return equalOperands(&a, c.v.forKind(v.Kind))
	case OpLT:
		return compareOperands(&a, c.v.forKind(v.Kind)) < 0
	case OpLE:
		return compareOperands(&a, c.v.forKind(v.Kind)) <= 0
	case OpGT:
		return compareOperands(&a, c.v.forKind(v.Kind)) > 0
	case OpGE:
		return compareOperands(&a, c.v.forKind(v.Kind)) >= 0
	case OpRange:
		if !c.loUnb {
			d := compareOperands(&a, c.low.forKind(v.Kind))
			if d < 0 || d == 0 && !c.loIncl {
				return false
			}
		}
		if !c.hiUnb {
			d := compareOperands(&a, c.high.forKind(v.Kind))
			if d > 0 || d == 0 && !c.hiIncl {
				return false
			}
		}
		return true
	}
	return false
}

// ---- wildcard patterns ----

type patKind uint8

const (
	patLit  patKind = iota
	patStar         // *
	patOne          // ?
)

type patElem struct {
	kind patKind
	r    rune // folded, for patLit
}

// compilePattern turns a pattern (\ escapes the next character) into
// elements; consecutive stars collapse.
func compilePattern(p string) []patElem {
	out := make([]patElem, 0, len(p))
	for i := 0; i < len(p); {
		c := p[i]
		switch {
		case c == '*':
			if len(out) == 0 || out[len(out)-1].kind != patStar {
				out = append(out, patElem{kind: patStar})
			}
			i++
			continue
		case c == '?':
			out = append(out, patElem{kind: patOne})
			i++
			continue
		case c == '\\' && i+1 < len(p):
			i++
		}
		r, n := nextRune(p, i)
		out = append(out, patElem{kind: patLit, r: foldRune(r)})
		i += n
	}
	return out
}

// matchPattern matches s against the pattern, case-insensitively, rune by
// rune, in O(len(p)·len(s)) at worst (one backtracking point, the last *).
func matchPattern(p []patElem, s string) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		if pi < len(p) {
			switch e := p[pi]; e.kind {
			case patStar:
				starP, starS = pi, si
				pi++
				continue
			case patOne:
				_, n := nextRune(s, si)
				si += n
				pi++
				continue
			default:
				r, n := nextRune(s, si)
				if r == e.r || foldRune(r) == e.r {
					si += n
					pi++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		_, n := nextRune(s, starS)
		starS += n
		pi, si = starP+1, starS
	}
	for pi < len(p) && p[pi].kind == patStar {
		pi++
	}
	return pi == len(p)
}
