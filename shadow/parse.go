package shadow

// parseJSON parses one complete JSON text. It rejects anything RFC 8259 rejects,
// plus duplicate keys within an object (compared after unescaping). It does not
// check UTF-8: callers that need it check the whole payload first.
func parseJSON(b []byte) (*node, bool) {
	p := parser{b: b, lazy: -1}
	return p.run()
}

// parseLazy is parseJSON for stored text, where most of the tree is only ever
// copied through: every container with at least depth enclosing containers
// (and, if member is set, inside the root's member of that name) becomes a
// kindRaw node holding its text. Raw text is still checked for syntax but not
// for duplicate keys; node.expand materialises it on demand.
func parseLazy(b []byte, depth int, member string) (*node, bool) {
	p := parser{b: b, lazy: depth, lazyMember: member}
	return p.run()
}

// expand turns a raw node into the container it holds, one level deep (its
// own nested containers stay raw). Raw text that does not parse again (a
// duplicate key, which the lazy pass does not look for) becomes an empty
// object: only stored metadata is ever raw, and losing a damaged part of it is
// better than failing every later update of the shadow.
func (n *node) expand() {
	if n.kind != kindRaw {
		return
	}
	m, ok := parseLazy(n.raw, 1, "")
	if !ok {
		*n = node{kind: kindObject, height: 1}
		return
	}
	*n = *m
}

// parser is an iterative JSON parser: an explicit stack of open containers
// replaces recursion. Children are collected on scratch stacks and copied into
// exactly sized slices when their container closes; nodes and those slices are
// carved from chunked arenas. A parse therefore costs a few allocations per
// kilobyte, not one per value.
type parser struct {
	b          []byte
	i          int
	lazy       int    // see parseLazy; < 0 for none
	lazyMember string // see parseLazy
	lazyRoot   *node  // the root's member named lazyMember

	frames  []frame
	members []member // scratch: members of the open objects
	elems   []*node  // scratch: elements of the open arrays

	nodeArena   []node
	memberArena []member
	elemArena   []*node
	chunks      [3]int // the last chunk size of each arena
}

// frame is one open container.
type frame struct {
	n     *node          // nil inside raw text
	kind  kind           // kindObject or kindArray
	start int            // offset of the opening bracket
	first int            // where its children start on the scratch stack
	index map[string]int // name → scratch offset - first, once an object has more than indexAbove members
}

func (p *parser) alloc(k kind) *node {
	if len(p.nodeArena) == 0 {
		p.nodeArena = make([]node, p.chunk(0, 24, 1))
	}
	n := &p.nodeArena[0]
	p.nodeArena = p.nodeArena[1:]
	n.kind = k
	return n
}

// chunk sizes the next chunk of arena a: the first from the input length
// (about one item per bytesPer input bytes), later ones twice the previous,
// never fewer than need items, and otherwise between 4 and 512.
func (p *parser) chunk(a, bytesPer, need int) int {
	size := len(p.b) / bytesPer
	if last := p.chunks[a]; last > 0 {
		size = 2 * last
	}
	size = min(max(size, 4), 512)
	p.chunks[a] = size
	return max(size, need)
}

// The slices handed out have their capacity capped, so appending to one later
// (an update adding a member) reallocates instead of overwriting a neighbour.
// Large objects and arrays get a slice of their own rather than a new chunk
// that would strand the rest of the current one.
func (p *parser) takeMembers(src []member) []member {
	var dst []member
	switch {
	case len(src) <= len(p.memberArena):
	case len(src) >= 16:
		dst = make([]member, len(src))
	default:
		p.memberArena = make([]member, p.chunk(1, 48, len(src)))
	}
	if dst == nil {
		dst = p.memberArena[:len(src):len(src)]
		p.memberArena = p.memberArena[len(src):]
	}
	copy(dst, src)
	return dst
}

func (p *parser) takeElems(src []*node) []*node {
	var dst []*node
	switch {
	case len(src) <= len(p.elemArena):
	case len(src) >= 16:
		dst = make([]*node, len(src))
	default:
		p.elemArena = make([]*node, p.chunk(2, 64, len(src)))
	}
	if dst == nil {
		dst = p.elemArena[:len(src):len(src)]
		p.elemArena = p.elemArena[len(src):]
	}
	copy(dst, src)
	return dst
}

type parseState uint8

const (
	wantValue parseState = iota
	wantKey
	afterValue
)

func (p *parser) inRaw() bool { return len(p.frames) > 0 && p.frames[len(p.frames)-1].n == nil }

// attach adds a finished (or just opened) value to the open container, or
// makes it the root.
func (p *parser) attach(root **node, pending *member, n *node) {
	if len(p.frames) == 0 {
		*root = n
		return
	}
	f := &p.frames[len(p.frames)-1]
	if f.kind == kindArray {
		p.elems = append(p.elems, n)
		return
	}
	pending.val = n
	if p.members == nil {
		p.members = make([]member, 0, min(64, 4+len(p.b)/64))
	}
	p.members = append(p.members, *pending)
	if f.index != nil {
		f.index[pending.name] = len(p.members) - 1 - f.first
	} else if len(p.members)-f.first > indexAbove {
		f.index = make(map[string]int, 2*indexAbove)
		for i, m := range p.members[f.first:] {
			f.index[m.name] = i
		}
	}
	if len(p.frames) == 1 && p.lazyMember != "" && pending.name == p.lazyMember {
		p.lazyRoot = n
	}
}

// duplicate reports whether the innermost open object already has name.
func (p *parser) duplicate(name string) bool {
	f := &p.frames[len(p.frames)-1]
	if f.index != nil {
		_, dup := f.index[name]
		return dup
	}
	for _, m := range p.members[f.first:] {
		if m.name == name {
			return true
		}
	}
	return false
}

func (p *parser) open(root **node, pending *member, k kind) {
	start := p.i - 1
	f := frame{kind: k, start: start}
	switch {
	case p.inRaw():
	case p.lazy >= 0 && len(p.frames) >= p.lazy &&
		(p.lazyMember == "" || len(p.frames) >= 2 && p.frames[1].n == p.lazyRoot):
		// The start of raw text: frames below stay nil until it closes.
	default:
		f.n = p.alloc(k)
		p.attach(root, pending, f.n)
	}
	if k == kindObject {
		f.first = len(p.members)
	} else {
		f.first = len(p.elems)
	}
	p.frames = append(p.frames, f)
}

func (p *parser) close(root **node, pending *member) {
	f := p.frames[len(p.frames)-1]
	p.frames = p.frames[:len(p.frames)-1]
	if f.n == nil {
		if !p.inRaw() { // the outermost raw container closed
			n := p.alloc(kindRaw)
			n.raw = p.b[f.start:p.i]
			p.attach(root, pending, n)
		}
		return
	}
	n := f.n
	var h int32
	if f.kind == kindObject {
		n.members = p.takeMembers(p.members[f.first:])
		p.members = p.members[:f.first]
		n.live = int32(len(n.members))
		n.index = f.index
		for _, m := range n.members {
			h = max(h, m.val.height)
		}
	} else {
		n.elems = p.takeElems(p.elems[f.first:])
		p.elems = p.elems[:f.first]
		for _, e := range n.elems {
			h = max(h, e.height)
		}
	}
	n.height = 1 + h
	if len(p.frames) == 1 {
		n.raw = p.b[f.start:p.i]
	}
}

func (p *parser) run() (*node, bool) {
	var (
		root    *node
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
			c := p.b[p.i]
			if c == '{' || c == '[' {
				p.i++
				k := kindObject
				if c == '[' {
					k = kindArray
				}
				p.open(&root, &pending, k)
				p.ws()
				if p.i < len(p.b) && (c == '{' && p.b[p.i] == '}' || c == '[' && p.b[p.i] == ']') {
					p.i++
					p.close(&root, &pending)
					state = afterValue
				} else if c == '{' {
					state = wantKey
				}
				continue
			}
			var (
				k   kind
				raw []byte
				ok  bool
			)
			start := p.i
			switch {
			case c == '"':
				k = kindString
				raw, ok = p.str()
			case c == '-' || (c >= '0' && c <= '9'):
				k = kindNumber
				raw, ok = p.num()
			default:
				k, ok = p.literal()
				raw = p.b[start:p.i]
			}
			if !ok {
				return nil, false
			}
			if !p.inRaw() {
				n := p.alloc(k)
				n.raw = raw
				p.attach(&root, &pending, n)
			}
			state = afterValue
		case wantKey:
			p.ws()
			if p.i >= len(p.b) || p.b[p.i] != '"' {
				return nil, false
			}
			raw, ok := p.str()
			if !ok {
				return nil, false
			}
			if !p.inRaw() {
				name := unquote(raw)
				if p.duplicate(name) {
					return nil, false
				}
				pending = member{name: name, rawName: raw}
			}
			p.ws()
			if p.i >= len(p.b) || p.b[p.i] != ':' {
				return nil, false
			}
			p.i++
			state = wantValue
		case afterValue:
			p.ws()
			if len(p.frames) == 0 {
				return root, p.i == len(p.b)
			}
			if p.i >= len(p.b) {
				return nil, false
			}
			k := p.frames[len(p.frames)-1].kind
			c := p.b[p.i]
			p.i++
			switch {
			case c == ',' && k == kindObject:
				state = wantKey
			case c == ',':
				state = wantValue
			case c == '}' && k == kindObject, c == ']' && k == kindArray:
				p.close(&root, &pending)
			default:
				return nil, false
			}
		}
	}
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
