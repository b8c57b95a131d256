package shadow

// TopicPrefix starts every shadow topic.
const TopicPrefix = "$aws/things/"

// Op is a shadow operation: the request topic's last level.
type Op string

const (
	OpGet    Op = "get"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
)

// Suffix is the reply level after the operation; SuffixNone is the request
// topic itself.
type Suffix string

const (
	SuffixNone      Suffix = ""
	SuffixAccepted  Suffix = "accepted"
	SuffixRejected  Suffix = "rejected"
	SuffixDelta     Suffix = "delta"     // update only
	SuffixDocuments Suffix = "documents" // update only
)

// Ref names one shadow: a thing's classic shadow (Name "") or one of its named
// shadows.
type Ref struct{ Thing, Name string }

// Prefix is the topic prefix of the shadow: "$aws/things/T/shadow" or
// "$aws/things/T/shadow/name/N".
func (r Ref) Prefix() string {
	if r.Name == "" {
		return TopicPrefix + r.Thing + "/shadow"
	}
	return TopicPrefix + r.Thing + "/shadow/name/" + r.Name
}

// Topic is the topic of op with suffix, e.g. Topic(OpUpdate, SuffixDelta) is
// ".../update/delta" and Topic(OpGet, SuffixNone) is the request topic ".../get".
func (r Ref) Topic(op Op, suffix Suffix) string {
	sep := "/"
	if suffix == SuffixNone {
		sep = ""
	}
	if r.Name == "" { // one concatenation, one allocation
		return TopicPrefix + r.Thing + "/shadow/" + string(op) + sep + string(suffix)
	}
	return TopicPrefix + r.Thing + "/shadow/name/" + r.Name + "/" + string(op) + sep + string(suffix)
}

// String is "T" for a classic shadow and "T/N" for a named one, for logs.
func (r Ref) String() string {
	if r.Name == "" {
		return r.Thing
	}
	return r.Thing + "/" + r.Name
}

// Valid reports whether both names are valid (an empty Name is the classic shadow).
func (r Ref) Valid() bool {
	return ValidThingName(r.Thing) && (r.Name == "" || ValidShadowName(r.Name))
}

// NotFound is the 404 rejection for this shadow: AWS names the shadow, or the
// thing for the classic shadow.
func (r Ref) NotFound() *Error {
	if r.Name == "" {
		return NotFound(r.Thing)
	}
	return NotFound(r.Name)
}

// ValidThingName reports whether s is a valid thing name: 1–128 bytes of
// [a-zA-Z0-9:_-] (AWS API model).
func ValidThingName(s string) bool { return validName(s, 128, false) }

// ValidShadowName reports whether s is a valid named-shadow name: 1–64 bytes of
// [$a-zA-Z0-9:_-]. The '$' follows the AWS API model (Greengrass omits it)
// because AWS itself uses reserved names such as "$package", and a device SDK
// talking to them must work here; see doc.go.
func ValidShadowName(s string) bool { return validName(s, 64, true) }

func validName(s string, maxLen int, dollar bool) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == ':' || c == '_' || c == '-':
		case c == '$' && dollar:
		default:
			return false
		}
	}
	return true
}
