package shadow

import "unicode/utf8"

// The shadow core keeps JSON as a small ordered tree whose scalars are the exact
// bytes the client sent. Nothing is ever decoded into float64 or map[string]any:
// numbers keep their precision, keys keep their order, strings keep their escapes.
//
// The parser (parse.go) is iterative, so a hostile payload of 100k '[' costs
// memory proportional to its size and nothing more. Every recursive walk runs
// only on trees whose height was checked first: request sections against
// Options.MaxDepth, stored state against maxStoredDepth. Stored metadata is
// parsed lazily and only ever expanded one level at a time along such paths.

type kind uint8

const (
	kindNull kind = iota
	kindFalse
	kindTrue
	kindNumber
	kindString
	kindObject
	kindArray
	kindRaw // unparsed stored text (see parseLazy); expanded before any inspection
)

// indexAbove is the member count above which an object keeps a name index, so
// duplicate-key detection and lookups stay linear for objects with many keys.
const indexAbove = 64

type node struct {
	kind   kind
	height int32 // containers: 1 + the tallest child; scalars and raw nodes: 0
	live   int32 // objects: members whose val is non-nil

	// raw is the JSON text: for scalars exactly as sent (strings keep their
	// quotes), for kindRaw the unparsed container, and for the containers that
	// are members of the root their text as parsed, which goes stale once edited
	// (document.go copies stored sections through with it, before any edit).
	raw []byte

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
	if n != nil && n.kind == kindRaw {
		n.expand()
	}
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

func (n *node) isObject() bool {
	if n != nil && n.kind == kindRaw {
		n.expand()
	}
	return n != nil && n.kind == kindObject
}

// isDeletion reports whether a patch value deletes its key: null, or an empty
// object (Greengrass treats {} exactly like null; see doc.go).
func (n *node) isDeletion() bool {
	return n.kind == kindNull || (n.kind == kindObject && n.live == 0)
}

// wellKnownNames are the member names of the shadow document format, read
// only after init.
var wellKnownNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"state", "desired", "reported", "delta", "metadata", "timestamp", "version", "clientToken"} {
		m[n] = n
	}
	return m
}()

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
		// The member names every document repeats (the metadata tree holds
		// a "timestamp" per leaf) are shared, not copied: a map lookup
		// keyed by string(body) does not allocate.
		if s, ok := wellKnownNames[string(body)]; ok {
			return s
		}
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
