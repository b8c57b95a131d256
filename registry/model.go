package registry

import (
	"fmt"
	"regexp"
	"sort"
)

// Thing is a registered device.
type Thing struct {
	Name       string            `json:"thingName"`
	Type       string            `json:"thingTypeName,omitempty"`
	Attributes map[string]string `json:"attributes"`
	Version    int64             `json:"version"`
	CreatedAt  int64             `json:"createdAt"` // Unix seconds
	UpdatedAt  int64             `json:"updatedAt"`
}

// ThingType describes a kind of thing and the attributes it expects.
type ThingType struct {
	Name        string   `json:"thingTypeName"`
	Description string   `json:"description,omitempty"`
	Attributes  []string `json:"searchableAttributes,omitempty"`
	Deprecated  bool     `json:"deprecated"`
	CreatedAt   int64    `json:"createdAt"`
}

// Group is a static group (explicit members, optional parent) or, when
// Query is set, a dynamic group whose members are the things matching it.
type Group struct {
	Name        string `json:"groupName"`
	Parent      string `json:"parentGroupName,omitempty"`
	Description string `json:"description,omitempty"`
	Query       string `json:"queryString,omitempty"`
	CreatedAt   int64  `json:"createdAt"`
}

// Dynamic reports whether membership follows a query.
func (g Group) Dynamic() bool { return g.Query != "" }

// Connectivity is a thing's live MQTT presence.
type Connectivity struct {
	Connected        bool   `json:"connected"`
	Timestamp        int64  `json:"timestamp"` // ms of the last connect or disconnect
	LastConnect      int64  `json:"lastConnectedAt,omitempty"`
	LastDisconnect   int64  `json:"lastDisconnectedAt,omitempty"`
	DisconnectReason string `json:"disconnectReason,omitempty"`
	ClientAddress    string `json:"clientAddress,omitempty"`
	ProtocolVersion  byte   `json:"protocolVersion,omitempty"`
	Version          int64  `json:"versionNumber"` // connect count; connect and its disconnect share it
}

// Limits on registry data (AWS IoT's where it has them).
const (
	MaxAttributes        = 50
	MaxAttributeKeyLen   = 128
	MaxAttributeValueLen = 800
	MaxDescriptionLen    = 2028
)

var (
	nameRE = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)
	keyRE  = regexp.MustCompile(`^[a-zA-Z0-9_.,@/:#-]{1,128}$`)
	valRE  = regexp.MustCompile(`^[a-zA-Z0-9_.,@/:#=\[\]\- ]{0,800}$`)
)

// FieldError is a validation error that names the offending field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// ValidName reports whether s is a valid thing, type or group name.
func ValidName(s string) bool { return nameRE.MatchString(s) }

func validateName(field, s string) error {
	if !ValidName(s) {
		return fieldErr(field, "%q is not a valid name (1-128 characters of a-z A-Z 0-9 : _ -)", s)
	}
	return nil
}

// validateAttributes checks keys and values against AWS IoT's rules.
func validateAttributes(attrs map[string]string) error {
	if len(attrs) > MaxAttributes {
		return fieldErr("attributes", "%d attributes, at most %d", len(attrs), MaxAttributes)
	}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !keyRE.MatchString(k) {
			return fieldErr("attributes."+k, "invalid attribute name (1-128 characters of a-z A-Z 0-9 _ . , @ / : # -)")
		}
		if !valRE.MatchString(attrs[k]) {
			return fieldErr("attributes."+k, "invalid value %q (at most 800 characters of a-z A-Z 0-9 _ . , @ / : # = [ ] - and space)", attrs[k])
		}
	}
	return nil
}
