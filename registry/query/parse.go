package query

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits. Both are checked before any work that depends on them, so a
// hostile query costs at most linear time and bounded stack.
const (
	// MaxQueryBytes bounds a query's text, and also its canonical form
	// (String), which can be longer than the source when field groups are
	// written out; so any accepted query's String is accepted too.
	MaxQueryBytes = 4096
	// MaxDepth bounds nesting: each "(" (including a field group's) and
	// each NOT or "-" is one level.
	MaxDepth = 32
)

type parser struct {
	src   string
	pos   int
	depth int
}

// group is the field a field group ("thingName:(tv* OR radio*)") applies to.
type group struct {
	field string // canonical
	raw   string // as written, for messages
	typ   FieldType
}

// Parse parses a fleet query. Every error is a *SyntaxError.
func Parse(q string) (*Query, error) {
	if len(q) > MaxQueryBytes {
		return nil, &SyntaxError{Pos: MaxQueryBytes, Msg: fmt.Sprintf("query is %d bytes, longer than the %d allowed", len(q), MaxQueryBytes)}
	}
	p := &parser{src: q}
	p.skipSpace()
	if p.eof() {
		return nil, p.errf(p.pos, "empty query: expected a clause such as thingName:sensor-1, or * for every thing")
	}
	root, err := p.parseOr(nil, "")
	if err != nil {
		return nil, err
	}
	if !p.eof() { // parseOr stops only at the end or at a ")" it did not open
		return nil, p.errf(p.pos, `unbalanced ")"`)
	}
	out := &Query{Root: root, Source: q}
	if n := len(out.String()); n > MaxQueryBytes {
		return nil, p.errf(0, "query is %d bytes in canonical form (field groups written out, operators spelled), longer than the %d allowed", n, MaxQueryBytes)
	}
	return out, nil
}

// MustParse is Parse that panics on error, for queries in code and tests.
func MustParse(q string) *Query {
	out, err := Parse(q)
	if err != nil {
		panic(err)
	}
	return out
}

func (p *parser) errf(pos int, format string, args ...any) *SyntaxError {
	return &SyntaxError{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) eof() bool { return p.pos >= len(p.src) }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// isStopByte ends a bare value or range bound.
func isStopByte(c byte) bool {
	switch c {
	case '(', ')', '"', '[', ']', '{', '}', '<', '>':
		return true
	}
	return isSpace(c)
}

// isSpecialValueByte can't appear unescaped in a bare literal.
func isSpecialValueByte(c byte) bool {
	switch c {
	case '\\', '*', '?', '~', '^':
		return true
	}
	return isStopByte(c)
}

func (p *parser) skipSpace() {
	for p.pos < len(p.src) && isSpace(p.src[p.pos]) {
		p.pos++
	}
}

// delimAt reports whether a word ending at i ends there: end, space or a
// parenthesis follows.
func (p *parser) delimAt(i int) bool {
	return i >= len(p.src) || isSpace(p.src[i]) || p.src[i] == '(' || p.src[i] == ')'
}

// valueEndAt reports whether a value may end at i: end, space or ")".
func (p *parser) valueEndAt(i int) bool {
	return i >= len(p.src) || isSpace(p.src[i]) || p.src[i] == ')'
}

// keyword returns the operator word at the position, if any.
func (p *parser) keyword() string {
	rest := p.src[p.pos:]
	for _, k := range [...]string{"AND", "OR", "NOT"} {
		if strings.HasPrefix(rest, k) && p.delimAt(p.pos+len(k)) {
			return k
		}
	}
	return ""
}

// charAt quotes the character at i for a message.
func (p *parser) charAt(i int) string {
	r, n := utf8.DecodeRuneInString(p.src[i:])
	if r == utf8.RuneError && n == 1 {
		return fmt.Sprintf(`byte 0x%02x`, p.src[i])
	}
	return fmt.Sprintf("%q", string(r))
}

func (p *parser) enter(pos int) error {
	p.depth++
	if p.depth > MaxDepth {
		return p.errf(pos, "nesting deeper than %d levels (each parenthesis and each NOT or - is one)", MaxDepth)
	}
	return nil
}

// parseOr: and ( OR and )*
func (p *parser) parseOr(g *group, after string) (Node, error) {
	left, err := p.parseAnd(g, after)
	if err != nil {
		return nil, err
	}
	for {
		p.skipSpace()
		if p.keyword() != "OR" {
			return left, nil
		}
		p.pos += 2
		right, err := p.parseAnd(g, `"OR"`)
		if err != nil {
			return nil, err
		}
		left = &Or{Left: left, Right: right}
	}
}

// parseAnd: unary ( [AND] unary )*
func (p *parser) parseAnd(g *group, after string) (Node, error) {
	left, err := p.parseUnary(g, after)
	if err != nil {
		return nil, err
	}
	for {
		p.skipSpace()
		if p.eof() || p.src[p.pos] == ')' {
			return left, nil
		}
		kw := p.keyword()
		if kw == "OR" {
			return left, nil
		}
		next := ""
		if kw == "AND" {
			p.pos += 3
			next = `"AND"`
		}
		right, err := p.parseUnary(g, next)
		if err != nil {
			return nil, err
		}
		left = &And{Left: left, Right: right}
	}
}

// parseUnary: ( NOT | - ) unary | primary
func (p *parser) parseUnary(g *group, after string) (Node, error) {
	p.skipSpace()
	start := p.pos
	op := ""
	switch {
	case p.keyword() == "NOT":
		op = "NOT"
	case !p.eof() && p.src[p.pos] == '-':
		op = "-"
	default:
		return p.parsePrimary(g, after)
	}
	p.pos += len(op)
	if err := p.enter(start); err != nil {
		return nil, err
	}
	x, err := p.parseUnary(g, `"`+op+`"`)
	if err != nil {
		return nil, err
	}
	p.depth--
	return &Not{X: x}, nil
}

// parsePrimary: ( or ) | clause, or in a field group ( or ) | value
func (p *parser) parsePrimary(g *group, after string) (Node, error) {
	p.skipSpace()
	what := "clause"
	if g != nil {
		what = "value"
	}
	if p.eof() {
		if after == "" {
			return nil, p.errf(p.pos, "expected a %s", what)
		}
		return nil, p.errf(p.pos, "expected a %s after %s", what, after)
	}
	switch c := p.src[p.pos]; c {
	case '(':
		open := p.pos
		if err := p.enter(open); err != nil {
			return nil, err
		}
		p.pos++
		x, err := p.parseOr(g, `"("`)
		if err != nil {
			return nil, err
		}
		if err := p.closeParen(open); err != nil {
			return nil, err
		}
		return x, nil
	case ')':
		if after != "" {
			return nil, p.errf(p.pos, `expected a %s after %s, found ")"`, what, after)
		}
		return nil, p.errf(p.pos, `unbalanced ")"`)
	}
	if kw := p.keyword(); kw == "AND" || kw == "OR" {
		if after != "" {
			return nil, p.errf(p.pos, `expected a %s after %s, found "%s"`, what, after, kw)
		}
		return nil, p.errf(p.pos, `unexpected "%s": expected a %s before it`, kw, what)
	}
	if g != nil {
		return p.parseGroupItem(g)
	}
	return p.parseClause()
}

// closeParen expects the ")" matching the "(" at open.
func (p *parser) closeParen(open int) error {
	p.skipSpace()
	if p.eof() {
		return p.errf(p.pos, `expected ")" to close the "(" at position %d`, open+1)
	}
	// parseOr stops only at the end or at ")".
	p.pos++
	p.depth--
	return nil
}

func (p *parser) scanField() int {
	i := p.pos
	for i < len(p.src) {
		r, n := utf8.DecodeRuneInString(p.src[i:])
		if r == utf8.RuneError && n == 1 || !isFieldRune(r) {
			break
		}
		i += n
	}
	return i
}

// parseClause: * | *:* | field (: valueExpr | cmp value)
func (p *parser) parseClause() (Node, error) {
	start := p.pos
	c := p.src[start]
	if c == '*' {
		if p.delimAt(start + 1) {
			p.pos++
			return &All{}, nil
		}
		if strings.HasPrefix(p.src[start:], "*:*") && p.delimAt(start+3) {
			p.pos += 3
			return &All{}, nil
		}
		return nil, p.errf(start, `a clause can't start with a wildcard: "*" alone matches every thing, and a field comes first, as in thingName:sensor-*`)
	}
	end := p.scanField()
	if end == start {
		return nil, p.unexpectedAtClause(start)
	}
	raw := p.src[start:end]
	p.pos = end
	p.skipSpace()
	if p.eof() || (p.src[p.pos] != ':' && p.src[p.pos] != '<' && p.src[p.pos] != '>') {
		_, _, fe := validateField(raw)
		switch {
		case fe == nil:
			return nil, p.errf(end, `expected ":" or a comparison (<, <=, >, >=) after "%s"`, raw)
		case fe.msg != "":
			return nil, p.errf(start+fe.off, "%s", fe.msg)
		case strings.Contains(raw, ".") || suggestField(raw) != "":
			return nil, p.errf(start, "%s", unknownField(raw))
		}
		return nil, p.errf(start, `expected a field before the value "%s": a clause is field:value, as in thingName:%s`, raw, raw)
	}
	field, typ, fe := checkField(raw)
	if fe != nil {
		return nil, p.errf(start+fe.off, "%s", fe.msg)
	}
	if p.src[p.pos] != ':' {
		return p.parseComparison(field, raw, raw, typ, start)
	}
	p.pos++
	p.skipSpace()
	if !p.eof() && (p.src[p.pos] == '<' || p.src[p.pos] == '>') {
		return p.parseComparison(field, raw, raw+":", typ, start)
	}
	return p.parseValueExpr(field, raw, typ, start)
}

func (p *parser) unexpectedAtClause(i int) error {
	switch c := p.src[i]; c {
	case '"':
		return p.errf(i, `expected a field, found a quoted value; a value needs a field, as in attributes.name:"hall 2"`)
	case '[', '{':
		return p.errf(i, `expected a field, found a range; a range needs a field, as in shadow.reported.temp:[10 TO 20]`)
	case ']', '}':
		return p.errf(i, `unexpected %q: no range is open`, string(c))
	case ':', '<', '>':
		return p.errf(i, `expected a field name before %q`, string(c))
	}
	return p.errf(i, `unexpected %s: expected a field name such as thingName or attributes.location`, p.charAt(i))
}

// parseValueExpr reads what follows "field:": a field group, a range, or a
// single value.
func (p *parser) parseValueExpr(field, raw string, typ FieldType, termPos int) (Node, error) {
	ctx := raw + ":"
	vpos := p.pos
	if p.eof() {
		return nil, p.errf(vpos, `expected a value after "%s"`, ctx)
	}
	if kw := p.keyword(); kw != "" {
		return nil, p.errf(vpos, `expected a value after "%s", found %s (quote it to search for the word: "%s")`, ctx, kw, kw)
	}
	switch p.src[vpos] {
	case ')', ']', '}':
		return nil, p.errf(vpos, `expected a value after "%s", found %s`, ctx, p.charAt(vpos))
	case '(':
		if err := p.enter(vpos); err != nil {
			return nil, err
		}
		p.pos++
		x, err := p.parseOr(&group{field: field, raw: raw, typ: typ}, `"`+ctx+`("`)
		if err != nil {
			return nil, err
		}
		if err := p.closeParen(vpos); err != nil {
			return nil, err
		}
		return x, nil
	case '[', '{':
		return p.parseRange(field, raw, typ, termPos)
	}
	return p.parseSingleValue(field, raw, typ, termPos, ctx)
}

// parseGroupItem reads one value inside a field group.
func (p *parser) parseGroupItem(g *group) (Node, error) {
	vpos := p.pos
	switch p.src[vpos] {
	case '[', '{':
		return p.parseRange(g.field, g.raw, g.typ, vpos)
	case '<', '>':
		return p.parseComparison(g.field, g.raw, "", g.typ, vpos)
	case ']', '}':
		return nil, p.errf(vpos, `unexpected %s: no range is open`, p.charAt(vpos))
	}
	return p.parseSingleValue(g.field, g.raw, g.typ, vpos, "")
}

// parseSingleValue reads a quoted value, "*" (exists), or a bare value or
// wildcard pattern. ctx is the text the value follows, for messages.
func (p *parser) parseSingleValue(field, raw string, typ FieldType, termPos int, ctx string) (Node, error) {
	vpos := p.pos
	c := p.src[vpos]
	if c == '"' {
		lit, err := p.scanQuoted()
		if err != nil {
			return nil, err
		}
		if err := p.checkValueEnd("quoted value"); err != nil {
			return nil, err
		}
		if err := p.checkType(raw, typ, lit, vpos); err != nil {
			return nil, err
		}
		return newTerm(Term{Field: field, Op: OpEq, Value: lit, Pos: termPos}), nil
	}
	if c == '*' && p.valueEndAt(vpos+1) {
		p.pos++
		return newTerm(Term{Field: field, Op: OpExists, Pos: termPos}), nil
	}
	if isStopByte(c) {
		if ctx != "" {
			return nil, p.errf(vpos, `expected a value after "%s", found %s`, ctx, p.charAt(vpos))
		}
		return nil, p.errf(vpos, `expected a value, found %s`, p.charAt(vpos))
	}
	lit, pat, wild, err := p.scanBare()
	if err != nil {
		return nil, err
	}
	if err := p.checkValueEnd("value"); err != nil {
		return nil, err
	}
	if wild {
		if pat[0] == '*' || pat[0] == '?' {
			return nil, p.errf(vpos, `a value can't start with a wildcard ("*" or "?"); "*" alone tests that the field exists`)
		}
		if typ == NumberType || typ == BoolType {
			return nil, p.errf(vpos, `wildcards apply to text, and %s is a %s`, raw, typeName(typ))
		}
		return newTerm(Term{Field: field, Op: OpWildcard, Value: pat, Pos: termPos}), nil
	}
	if err := p.checkType(raw, typ, lit, vpos); err != nil {
		return nil, err
	}
	return newTerm(Term{Field: field, Op: OpEq, Value: lit, Pos: termPos}), nil
}

// checkValueEnd requires the end, a space or ")" after a value.
func (p *parser) checkValueEnd(what string) error {
	if p.valueEndAt(p.pos) {
		return nil
	}
	return p.errf(p.pos, `unexpected %s after the %s; quote the value to include it, or put a space before the next clause`, p.charAt(p.pos), what)
}

// parseComparison reads <, <=, >, >= and a value. ctx is what precedes the
// operator, for messages (the field, with ":" for the field:>v form; "" in
// a group).
func (p *parser) parseComparison(field, raw, ctx string, typ FieldType, termPos int) (Node, error) {
	opStart := p.pos
	op := OpLT
	if p.src[p.pos] == '>' {
		op = OpGT
	}
	p.pos++
	if p.pos < len(p.src) && p.src[p.pos] == '=' {
		op++ // OpLT→OpLE, OpGT→OpGE
		p.pos++
	}
	ctx += p.src[opStart:p.pos]
	p.skipSpace()
	vpos := p.pos
	if p.eof() {
		return nil, p.errf(vpos, `expected a value after "%s"`, ctx)
	}
	if kw := p.keyword(); kw != "" {
		return nil, p.errf(vpos, `expected a value after "%s", found %s (quote it to search for the word: "%s")`, ctx, kw, kw)
	}
	var lit string
	switch c := p.src[vpos]; {
	case c == '"':
		var err error
		if lit, err = p.scanQuoted(); err != nil {
			return nil, err
		}
		if err := p.checkValueEnd("quoted value"); err != nil {
			return nil, err
		}
	case c == '*' && p.valueEndAt(vpos+1):
		return nil, p.errf(vpos, `expected a value after "%s", found "*"; a comparison needs a value (for "exists" write field:*)`, ctx)
	case isStopByte(c):
		return nil, p.errf(vpos, `expected a value after "%s", found %s`, ctx, p.charAt(vpos))
	default:
		l, _, wild, err := p.scanBare()
		if err != nil {
			return nil, err
		}
		if wild {
			return nil, p.errf(vpos, `wildcards can't be used in a comparison; quote the value to compare with * or ? literally`)
		}
		if err := p.checkValueEnd("value"); err != nil {
			return nil, err
		}
		lit = l
	}
	if err := p.checkType(raw, typ, lit, vpos); err != nil {
		return nil, err
	}
	return newTerm(Term{Field: field, Op: op, Value: lit, Pos: termPos}), nil
}

// parseRange reads [low TO high] with [ ] inclusive and { } exclusive ends.
func (p *parser) parseRange(field, raw string, typ FieldType, termPos int) (Node, error) {
	open := p.pos
	t := Term{Field: field, Op: OpRange, Pos: termPos, LowIncl: p.src[open] == '['}
	p.pos++
	p.skipSpace()
	lowPos := p.pos
	low, err := p.scanBound(fmt.Sprintf("%q", p.src[open:open+1]), "lower")
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if !strings.HasPrefix(p.src[p.pos:], "TO") || !(p.pos+2 == len(p.src) || isSpace(p.src[p.pos+2]) || p.src[p.pos+2] == '"') {
		return nil, p.errf(p.pos, `expected "TO" after the range's lower bound`)
	}
	p.pos += 2
	p.skipSpace()
	highPos := p.pos
	high, err := p.scanBound(`"TO"`, "upper")
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.eof() || (p.src[p.pos] != ']' && p.src[p.pos] != '}') {
		return nil, p.errf(p.pos, `expected "]" or "}" to close the range opened at position %d`, open+1)
	}
	t.HighIncl = p.src[p.pos] == ']'
	p.pos++
	if err := p.checkValueEnd("range"); err != nil {
		return nil, err
	}
	if low != "*" {
		if err := p.checkType(raw, typ, low, lowPos); err != nil {
			return nil, err
		}
	}
	if high != "*" {
		if err := p.checkType(raw, typ, high, highPos); err != nil {
			return nil, err
		}
	}
	t.Low, t.High = low, high
	return newTerm(t), nil
}

// scanBound reads a range bound: a quoted or bare literal, or * (none).
func (p *parser) scanBound(after, which string) (string, error) {
	start := p.pos
	if p.eof() {
		return "", p.errf(start, "expected the range's %s bound after %s", which, after)
	}
	c := p.src[start]
	if c == '"' {
		return p.scanQuoted()
	}
	if isStopByte(c) {
		return "", p.errf(start, "expected the range's %s bound after %s, found %s (use * for no bound)", which, after, p.charAt(start))
	}
	lit, _, wild, err := p.scanBare()
	if err != nil {
		return "", err
	}
	rawText := p.src[start:p.pos]
	if rawText == "*" {
		return "*", nil
	}
	if wild {
		return "", p.errf(start, `wildcards can't be used in a range bound; quote the bound to match * or ? literally`)
	}
	if which == "lower" && rawText == "TO" {
		return "", p.errf(start, `expected the range's lower bound before "TO" (use * for no bound)`)
	}
	return lit, nil
}

// scanQuoted reads "…" with \" and \\ (and \ before any character) escapes.
func (p *parser) scanQuoted() (string, error) {
	start := p.pos
	i := start + 1
	// Fast path: no escapes.
	if j := strings.IndexAny(p.src[i:], `"\`); j >= 0 && p.src[i+j] == '"' {
		p.pos = i + j + 1
		return p.src[i : i+j], nil
	}
	var b strings.Builder
	for i < len(p.src) {
		c := p.src[i]
		if c == '"' {
			p.pos = i + 1
			return b.String(), nil
		}
		if c == '\\' {
			i++
			if i >= len(p.src) {
				break
			}
			c = p.src[i]
		}
		b.WriteByte(c)
		i++
	}
	return "", p.errf(start, `unterminated quoted value: expected a closing "`)
}

// scanBare reads a bare value up to a stop byte. lit is the value with
// escapes removed; pat the wildcard pattern (escapes kept only before * ?
// and \); wild whether an unescaped * or ? occurs.
func (p *parser) scanBare() (lit, pat string, wild bool, err error) {
	start := p.pos
	escaped := false
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == '\\':
			if p.pos+1 >= len(p.src) {
				return "", "", false, p.errf(p.pos, `expected a character after "\" (escape)`)
			}
			_, n := utf8.DecodeRuneInString(p.src[p.pos+1:])
			p.pos += 1 + n
			escaped = true
			continue
		case isStopByte(c):
		case c == '~':
			return "", "", false, p.errf(p.pos, `fuzzy search ("~") is not supported; write \~ or quote the value to match it literally`)
		case c == '^':
			return "", "", false, p.errf(p.pos, `boosting ("^") is not supported; write \^ or quote the value to match it literally`)
		case c == '*' || c == '?':
			wild = true
			p.pos++
			continue
		default:
			p.pos++
			continue
		}
		break
	}
	raw := p.src[start:p.pos]
	if !escaped {
		return raw, raw, wild, nil
	}
	var lb, pb strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '\\' {
			i++
			c = raw[i]
			lb.WriteByte(c)
			if c == '*' || c == '?' || c == '\\' {
				pb.WriteByte('\\')
			}
			pb.WriteByte(c)
			continue
		}
		lb.WriteByte(c)
		pb.WriteByte(c)
	}
	return lb.String(), pb.String(), wild, nil
}

func typeName(t FieldType) string {
	switch t {
	case NumberType:
		return "number"
	case BoolType:
		return "boolean"
	case StringType:
		return "string"
	}
	return "value"
}

// checkType rejects literals a typed managed field can never hold.
func (p *parser) checkType(raw string, typ FieldType, lit string, pos int) error {
	switch typ {
	case NumberType:
		if !IsNumber(lit) {
			return p.errf(pos, "%s is a number: expected a number, found %q", raw, lit)
		}
	case BoolType:
		if _, ok := parseBool(lit); !ok {
			return p.errf(pos, "%s is a boolean: expected true or false, found %q", raw, lit)
		}
	}
	return nil
}
