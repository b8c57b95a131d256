package shadow

import "unicode/utf8"

// The shadow core keeps JSON as a small ordered tree whose scalars are the exact
// bytes the client sent. Nothing is ever decoded into float64 or map[string]any:
// numbers keep their precision, keys keep their order, strings keep their escapes.
//
// The parser is iterative (an explicit stack, no recursion), so a hostile payload
// of 100k '[' costs memory proportional to its size and nothing more. Every
// recursive walk elsewhere in the package runs only on trees whose height was
// checked first (request sections against Options.MaxDepth, stored documents
// against maxStoredDepth).

type kind uint8

const (
	kindNull kind = iota
	kindFalse
	kindTrue
	kindNumber
	kindString
	kindObject
	kindArray
)

// indexAbove is the member count above which an object keeps a name index, so
// duplicate-key detection and lookups stay linear for objects with many keys.
const indexAbove = 8

type node struct {
	kind    kind
	height  int32          // containers: 1 + the tallest child; scalars: 0
	live    int32          // objects: members whose val is non-nil
	raw     []byte         // scalars: JSON text as sent (strings keep their quotes)
	members []member       // objects, in document order; val == nil marks a deleted member
	index   map[string]int // objects with more than indexAbove members: name → position in members
	elems   []*node        // arrays
}

type member struct {
	name    string // decoded key, used for identity
	rawName []byte // key as sent, quotes included, used for output
	val     *node
}

// Nodes reachable from a parsed request are never mutated after parsing (an
// UpdateRequest may be applied several times, even concurrently); only trees
// parsed from a stored document, or built fresh during an update, are edited.

func newObject() *node { return &node{kind: kindObject, height: 1} }

// get returns the value of the member called name, or nil. n may be nil or a
// non-object, which simply has no members.
func (n *node) get(name string) *node {
	if i := n.find(name); i >= 0 {
		return n.members[i].val
	}
	return nil
}

func (n *node) find(name string) int {
	if n == nil || n.kind != kindObject {
		return -1
	}
	if n.index != nil {
		if i, ok := n.index[name]; ok {
			return i
		}
		return -1
	}
	for i := range n.members {
		if n.members[i].val != nil && n.members[i].name == name {
			return i
		}
	}
	return -1
}

// set replaces the value of an existing member in place (keeping its position)
// or appends a new member.
func (n *node) set(name string, rawName []byte, v *node) {
	if i := n.find(name); i >= 0 {
		n.members[i].val = v
		return
	}
	n.members = append(n.members, member{name: name, rawName: rawName, val: v})
	n.live++
	if n.index != nil {
		n.index[name] = len(n.members) - 1
	} else if len(n.members) > indexAbove {
		n.buildIndex()
	}
}

// del removes a member, leaving a hole that output and iteration skip.
func (n *node) del(name string) {
	i := n.find(name)
	if i < 0 {
		return
	}
	n.members[i].val = nil
	n.live--
	if n.index != nil {
		delete(n.index, name)
	}
}

func (n *node) buildIndex() {
	n.index = make(map[string]int, len(n.members)*2)
	for i, m := range n.members {
		if m.val != nil {
			n.index[m.name] = i
		}
	}
}

func (n *node) isObject() bool { return n != nil && n.kind == kindObject }

// isDeletion reports whether a patch value deletes its key: null, or an empty
// object (Greengrass treats {} exactly like null; see doc.go).
func (n *node) isDeletion() bool {
	return n.kind == kindNull || (n.kind == kindObject && n.live == 0)
}

// parseJSON parses one complete JSON text. It rejects anything RFC 8259 rejects,
// plus duplicate keys within an object (compared after unescaping). It does not
// check UTF-8: callers that need it check the whole payload first.
func parseJSON(b []byte) (*node, bool) {
	p := parser{b: b}
	return p.run()
}

type parser struct {
	b     []byte
	i     int
	arena []node
}

// alloc hands out nodes from chunks, which keeps the allocation count of a
// parse roughly logarithmic in the number of nodes.
func (p *parser) alloc(k kind) *node {
	if len(p.arena) == 0 {
		size := 16
		if guess := len(p.b) / 16; guess > size {
			size = min(guess, 512)
		}
		p.arena = make([]node, size)
	}
	n := &p.arena[0]
	p.arena = p.arena[1:]
	n.kind = k
	return n
}

type parseState uint8

const (
	wantValue parseState = iota
	wantKey
	afterValue
)

func (p *parser) run() (*node, bool) {
	var (
		root    *node
		stack   []*node
		pending member // key waiting for its value when the parent is an object
		state   = wantValue
	)
	for {
		switch state {
		case wantValue:
			p.ws()
			if p.i >= len(p.b) {
				return nil, false
			}
			var n *node
			switch c := p.b[p.i]; {
			case c == '{':
				p.i++
				n = p.alloc(kindObject)
			case c == '[':
				p.i++
				n = p.alloc(kindArray)
			case c == '"':
				raw, ok := p.str()
				if !ok {
					return nil, false
				}
				n = p.alloc(kindString)
				n.raw = raw
			case c == '-' || (c >= '0' && c <= '9'):
				raw, ok := p.num()
				if !ok {
					return nil, false
				}
				n = p.alloc(kindNumber)
				n.raw = raw
			default:
				k, ok := p.literal()
				if !ok {
					return nil, false
				}
				n = p.alloc(k)
				n.raw = p.b[p.i-literalLen(k) : p.i]
			}
			if len(stack) == 0 {
				root = n
			} else if parent := stack[len(stack)-1]; parent.kind == kindObject {
				pending.val = n
				parent.members = append(parent.members, pending)
				parent.live++
				if parent.index != nil {
					parent.index[pending.name] = len(parent.members) - 1
				} else if len(parent.members) > indexAbove {
					parent.buildIndex()
				}
			} else {
				parent.elems = append(parent.elems, n)
			}
			if n.kind != kindObject && n.kind != kindArray {
				state = afterValue
				continue
			}
			stack = append(stack, n)
			p.ws()
			if p.i < len(p.b) && (p.b[p.i] == '}' && n.kind == kindObject || p.b[p.i] == ']' && n.kind == kindArray) {
				p.i++
				n.height = 1
				stack = stack[:len(stack)-1]
				state = afterValue
			} else if n.kind == kindObject {
				state = wantKey
			}
		case wantKey:
			p.ws()
			if p.i >= len(p.b) || p.b[p.i] != '"' {
				return nil, false
			}
			raw, ok := p.str()
			if !ok {
				return nil, false
			}
			name := unquote(raw)
			if stack[len(stack)-1].find(name) >= 0 {
				return nil, false // duplicate key
			}
			pending = member{name: name, rawName: raw}
			p.ws()
			if p.i >= len(p.b) || p.b[p.i] != ':' {
				return nil, false
			}
			p.i++
			state = wantValue
		case afterValue:
			p.ws()
			if len(stack) == 0 {
				return root, p.i == len(p.b)
			}
			if p.i >= len(p.b) {
				return nil, false
			}
			top := stack[len(stack)-1]
			c := p.b[p.i]
			p.i++
			switch {
			case c == ',' && top.kind == kindObject:
				state = wantKey
			case c == ',':
				state = wantValue
			case c == '}' && top.kind == kindObject, c == ']' && top.kind == kindArray:
				top.height = 1 + childHeight(top)
				stack = stack[:len(stack)-1]
			default:
				return nil, false
			}
		}
	}
}

func childHeight(n *node) int32 {
	var h int32
	for _, m := range n.members {
		h = max(h, m.val.height)
	}
	for _, e := range n.elems {
		h = max(h, e.height)
	}
	return h
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// str scans a string starting at the opening quote and returns its raw text.
func (p *parser) str() ([]byte, bool) {
	start := p.i
	p.i++
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return p.b[start:p.i], true
		case c < 0x20:
			return nil, false
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return nil, false
			}
			switch p.b[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(p.b) {
					return nil, false
				}
				for _, h := range p.b[p.i+2 : p.i+6] {
					if hexVal(h) < 0 {
						return nil, false
					}
				}
				p.i += 6
			default:
				return nil, false
			}
		default:
			p.i++
		}
	}
	return nil, false
}

// num scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *parser) num() ([]byte, bool) {
	start := p.i
	if p.b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case p.digits() == 0:
		return nil, false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return nil, false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return nil, false
		}
	}
	return p.b[start:p.i], true
}

func (p *parser) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

func (p *parser) literal() (kind, bool) {
	rest := p.b[p.i:]
	for _, k := range [...]kind{kindTrue, kindFalse, kindNull} {
		lit := literalText(k)
		if len(rest) >= len(lit) && string(rest[:len(lit)]) == lit {
			p.i += len(lit)
			return k, true
		}
	}
	return 0, false
}

func literalText(k kind) string {
	switch k {
	case kindTrue:
		return "true"
	case kindFalse:
		return "false"
	}
	return "null"
}

func literalLen(k kind) int { return len(literalText(k)) }

func hexVal(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return rune(c-'A') + 10
	}
	return -1
}

// unquote decodes the raw text of a string the parser accepted. Lone or
// mismatched surrogates decode to U+FFFD, as encoding/json does.
func unquote(raw []byte) string {
	body := raw[1 : len(raw)-1]
	esc := false
	for _, c := range body {
		if c == '\\' {
			esc = true
			break
		}
	}
	if !esc {
		return string(body)
	}
	out := make([]byte, 0, len(body))
	for i := 0; i < len(body); {
		c := body[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch body[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(body[i+2:])
			i += 6
			if r >= 0xD800 && r < 0xDC00 && i+6 <= len(body) && body[i] == '\\' && body[i+1] == 'u' {
				if lo := hex4(body[i+2:]); lo >= 0xDC00 && lo < 0xE000 {
					r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
					i += 6
				}
			}
			if r >= 0xD800 && r < 0xE000 {
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, body[i+1])
		}
		i += 2
	}
	return string(out)
}

func hex4(b []byte) rune {
	return hexVal(b[0])<<12 | hexVal(b[1])<<8 | hexVal(b[2])<<4 | hexVal(b[3])
}
