package query

import (
	"strconv"
	"strings"
)

// Query is a parsed query. Root is never nil for a Query from Parse; Source
// is the text it was parsed from.
type Query struct {
	Root   Node
	Source string
}

// Node is a node of the query tree: *All, *And, *Or, *Not or *Term. Parse
// builds pointers; the value forms (All{}, And{…}, …) are Nodes too and are
// accepted everywhere a Node is read.
type Node interface{ node() }

// All matches every thing ("*" alone, or "*:*").
type All struct{}

// And matches when both sides match (explicit AND, or clauses side by side).
type And struct{ Left, Right Node }

// Or matches when either side matches.
type Or struct{ Left, Right Node }

// Not matches when X does not (NOT x, -x), including things that lack X's
// field altogether.
type Not struct{ X Node }

// Term is one test on one field. A thing matches when any of its values at
// Field satisfies the test (OpExists: when it has any value there).
type Term struct {
	Field string // canonical field, e.g. "attributes.location", "shadow.name.cfg.reported.x"
	Op    Op
	// Value is the literal (unquoted, unescaped) for OpEq and the
	// comparisons; for OpWildcard it is the pattern, where * and ? are
	// wildcards and a backslash makes the next character literal (\*, \?,
	// \\). Empty for OpRange, OpExists.
	Value string
	// OpRange bounds; "*" means unbounded on that side.
	Low, High         string
	LowIncl, HighIncl bool
	// Pos is the byte offset in the source of the clause (its field) or,
	// inside a field group, of the value.
	Pos int

	lit *compiled // set by Parse; see match.go
}

func (All) node()  {}
func (And) node()  {}
func (Or) node()   {}
func (Not) node()  {}
func (Term) node() {}

// Op is the test a Term makes.
type Op int

// Ops. The zero Op is OpEq.
const (
	OpEq       Op = iota // field:value
	OpLT                 // field<value
	OpLE                 // field<=value
	OpGT                 // field>value
	OpGE                 // field>=value
	OpRange              // field:[low TO high], {…}, mixed
	OpExists             // field:*
	OpWildcard           // field:pat*er?n
)

// String returns the operator as written in the canonical form.
func (o Op) String() string {
	switch o {
	case OpEq:
		return ":"
	case OpLT:
		return "<"
	case OpLE:
		return "<="
	case OpGT:
		return ">"
	case OpGE:
		return ">="
	case OpRange:
		return ":[]"
	case OpExists:
		return ":*"
	case OpWildcard:
		return ":~"
	}
	return "Op(" + strconv.Itoa(int(o)) + ")"
}

// Terms returns the query's terms in source order.
func (q *Query) Terms() []*Term {
	var out []*Term
	var walk func(Node)
	walk = func(n Node) {
		switch n := n.(type) {
		case *And:
			walk(n.Left)
			walk(n.Right)
		case And:
			walk(n.Left)
			walk(n.Right)
		case *Or:
			walk(n.Left)
			walk(n.Right)
		case Or:
			walk(n.Left)
			walk(n.Right)
		case *Not:
			walk(n.X)
		case Not:
			walk(n.X)
		case *Term:
			out = append(out, n)
		case Term:
			out = append(out, &n)
		}
	}
	if q != nil {
		walk(q.Root)
	}
	return out
}

// Equal reports whether two queries have the same tree, ignoring Source
// and positions (pointer and value forms of a node are equal).
func (q *Query) Equal(o *Query) bool {
	if q == nil || o == nil {
		return q == o
	}
	return EqualNodes(q.Root, o.Root)
}

// EqualNodes reports whether two trees are the same, ignoring positions.
func EqualNodes(a, b Node) bool {
	a, b = deref(a), deref(b)
	switch a := a.(type) {
	case nil:
		return b == nil
	case All:
		_, ok := b.(All)
		return ok
	case And:
		b, ok := b.(And)
		return ok && EqualNodes(a.Left, b.Left) && EqualNodes(a.Right, b.Right)
	case Or:
		b, ok := b.(Or)
		return ok && EqualNodes(a.Left, b.Left) && EqualNodes(a.Right, b.Right)
	case Not:
		b, ok := b.(Not)
		return ok && EqualNodes(a.X, b.X)
	case Term:
		b, ok := b.(Term)
		return ok && a.Field == b.Field && a.Op == b.Op && a.Value == b.Value &&
			a.Low == b.Low && a.High == b.High && a.LowIncl == b.LowIncl && a.HighIncl == b.HighIncl
	}
	return false
}

// deref turns pointer nodes into values (nil pointers into nil).
func deref(n Node) Node {
	switch n := n.(type) {
	case *All:
		if n == nil {
			return nil
		}
		return *n
	case *And:
		if n == nil {
			return nil
		}
		return *n
	case *Or:
		if n == nil {
			return nil
		}
		return *n
	case *Not:
		if n == nil {
			return nil
		}
		return *n
	case *Term:
		if n == nil {
			return nil
		}
		return *n
	}
	return n
}

// Precedences for printing.
const (
	precOr = 1 + iota
	precAnd
	precNot
	precAtom
)

// String returns the canonical form: every operator spelled out (AND, OR,
// NOT; never implicit AND or "-"), field groups expanded, parentheses only
// where precedence needs them, values quoted or escaped only where needed.
// Parse(q.String()) yields an Equal query whose String is the same.
func (q *Query) String() string {
	if q == nil || q.Root == nil {
		return ""
	}
	var b strings.Builder
	writeNode(&b, q.Root, precOr)
	return b.String()
}

func writeNode(b *strings.Builder, n Node, ctx int) {
	n = deref(n)
	prec := precAtom
	switch n.(type) {
	case Or:
		prec = precOr
	case And:
		prec = precAnd
	case Not:
		prec = precNot
	}
	if prec < ctx {
		b.WriteByte('(')
		defer b.WriteByte(')')
	}
	switch n := n.(type) {
	case nil:
		b.WriteString("()") // unreachable for parsed queries; never re-parses
	case All:
		b.WriteByte('*')
	case Or:
		writeNode(b, n.Left, precOr)
		b.WriteString(" OR ")
		writeNode(b, n.Right, precAnd)
	case And:
		writeNode(b, n.Left, precAnd)
		b.WriteString(" AND ")
		writeNode(b, n.Right, precNot)
	case Not:
		b.WriteString("NOT ")
		writeNode(b, n.X, precNot)
	case Term:
		writeTerm(b, &n)
	}
}

func writeTerm(b *strings.Builder, t *Term) {
	b.WriteString(t.Field)
	switch t.Op {
	case OpEq:
		b.WriteByte(':')
		writeLiteral(b, t.Value, false)
	case OpLT, OpLE, OpGT, OpGE:
		b.WriteString(t.Op.String())
		if strings.HasPrefix(t.Value, "=") {
			writeQuoted(b, t.Value) // x>"=5" is not x>=5
		} else {
			writeLiteral(b, t.Value, false)
		}
	case OpExists:
		b.WriteString(":*")
	case OpWildcard:
		b.WriteByte(':')
		writePattern(b, t.Value)
	case OpRange:
		b.WriteByte(':')
		if t.LowIncl {
			b.WriteByte('[')
		} else {
			b.WriteByte('{')
		}
		writeBound(b, t.Low)
		b.WriteString(" TO ")
		writeBound(b, t.High)
		if t.HighIncl {
			b.WriteByte(']')
		} else {
			b.WriteByte('}')
		}
	default:
		b.WriteString(":?")
	}
}

func writeBound(b *strings.Builder, s string) {
	if s == "*" {
		b.WriteByte('*')
		return
	}
	writeLiteral(b, s, true)
}

// needsQuote reports whether literal s can't be written bare after ':' (or
// as a range bound).
func needsQuote(s string, bound bool) bool {
	if s == "" || s == "AND" || s == "OR" || s == "NOT" || (bound && s == "TO") {
		return true
	}
	for i := 0; i < len(s); i++ {
		if isSpecialValueByte(s[i]) {
			return true
		}
	}
	return false
}

func writeLiteral(b *strings.Builder, s string, bound bool) {
	if !needsQuote(s, bound) {
		b.WriteString(s)
		return
	}
	writeQuoted(b, s)
}

func writeQuoted(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}

// writePattern writes a wildcard pattern bare, escaping literal characters
// that are special in a bare value.
func writePattern(b *strings.Builder, p string) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '\\' && i+1 < len(p) {
			i++
			b.WriteByte('\\')
			b.WriteByte(p[i])
			continue
		}
		if c != '*' && c != '?' && isSpecialValueByte(c) {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
}
