package shadow

import "strings"

// Topic is a parsed shadow topic: which shadow, which operation, and which
// reply (SuffixNone for the request topic).
type Topic struct {
	Ref    Ref
	Op     Op
	Suffix Suffix
}

// ParseTopic reports whether topic is a well-formed shadow topic, request or
// reply, with valid names:
//
//	$aws/things/{thing}/shadow/{op}[/{suffix}]
//	$aws/things/{thing}/shadow/name/{shadow}/{op}[/{suffix}]
//
// op is get, update or delete; suffix is accepted or rejected for every op, and
// also delta or documents for update. Anything else (unknown stubs, bad names,
// wildcards, empty or extra levels) is not a shadow topic and callers ignore it;
// AWS documents no behaviour for unknown stubs (spec §10.13). A level "name"
// right after "shadow" always introduces a named shadow.
// ParseTopic does not allocate.
func ParseTopic(topic string) (Topic, bool) {
	rest, ok := strings.CutPrefix(topic, TopicPrefix)
	if !ok {
		return Topic{}, false
	}
	thing, rest, ok := strings.Cut(rest, "/")
	if !ok || !ValidThingName(thing) {
		return Topic{}, false
	}
	rest, ok = strings.CutPrefix(rest, "shadow/")
	if !ok {
		return Topic{}, false
	}
	t := Topic{Ref: Ref{Thing: thing}}
	if after, named := strings.CutPrefix(rest, "name/"); named {
		name, r, ok := strings.Cut(after, "/")
		if !ok || !ValidShadowName(name) {
			return Topic{}, false
		}
		t.Ref.Name = name
		rest = r
	}
	op, suffix, _ := strings.Cut(rest, "/")
	switch Op(op) {
	case OpGet, OpUpdate, OpDelete:
		t.Op = Op(op)
	default:
		return Topic{}, false
	}
	switch Suffix(suffix) {
	case SuffixAccepted, SuffixRejected:
	case SuffixDelta, SuffixDocuments:
		if t.Op != OpUpdate {
			return Topic{}, false
		}
	case SuffixNone:
		if strings.HasSuffix(rest, "/") { // ".../get/" has an empty extra level
			return Topic{}, false
		}
	default:
		return Topic{}, false
	}
	t.Suffix = Suffix(suffix)
	return t, true
}
