package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// ServiceConfig is a service principal from the configuration.
type ServiceConfig struct {
	Name string `yaml:"name"`
	// PasswordBcrypt is the bcrypt hash of the MQTT password
	// (`umbra keygen` prints one).
	PasswordBcrypt string `yaml:"password_bcrypt"`
	Rules          `yaml:",inline"`
	// ClientIDs are the thing names this service may use as its MQTT
	// client id (taking over that thing's session): exact names, a prefix
	// ending in "*", or "*" for every thing. Without a grant a service
	// whose client id names a registered thing is refused.
	ClientIDs []string `yaml:"client_ids,omitempty"`
}

// MayUseClientID reports whether the service is granted the client id of
// the thing named thing.
func (s ServiceConfig) MayUseClientID(thing string) bool {
	for _, g := range s.ClientIDs {
		if prefix, ok := strings.CutSuffix(g, "*"); ok {
			if strings.HasPrefix(thing, prefix) {
				return true
			}
		} else if g == thing {
			return true
		}
	}
	return false
}

// Role is an API caller's role.
type Role string

const (
	RoleViewer   Role = "viewer"   // read anything
	RoleOperator Role = "operator" // + change shadows, run jobs and rollouts
	RoleAdmin    Role = "admin"    // + registry, credentials, configuration
)

var roleRank = map[Role]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}

// Allows reports whether r includes the rights of need.
func (r Role) Allows(need Role) bool { return roleRank[r] >= roleRank[need] && roleRank[need] > 0 }

// APIKeyConfig is an API key from the configuration. Only the SHA-256 of
// the key is kept: API keys are 256-bit random values, for which a fast
// hash is safe and a slow one would cost every request.
type APIKeyConfig struct {
	Name   string `yaml:"name"`
	SHA256 string `yaml:"sha256"`
	Role   Role   `yaml:"role"`
}

// APIPrincipal is an authenticated API caller.
type APIPrincipal struct {
	Name string
	Role Role
}

// Policy holds the configured principals and answers authorization
// questions. It is immutable once built.
type Policy struct {
	services map[string]ServiceConfig
	apiKeys  map[[32]byte]APIPrincipal
}

// NewPolicy validates the configured principals.
func NewPolicy(services []ServiceConfig, keys []APIKeyConfig) (*Policy, error) {
	p := &Policy{services: map[string]ServiceConfig{}, apiKeys: map[[32]byte]APIPrincipal{}}
	var errs []error
	for i, s := range services {
		where := fmt.Sprintf("auth.services[%d] (%q)", i, s.Name)
		if !plainLevel(s.Name) {
			errs = append(errs, fmt.Errorf("%s: name must be non-empty without / + #", where))
		}
		if _, dup := p.services[s.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: duplicate service name", where))
		}
		if _, err := bcrypt.Cost([]byte(s.PasswordBcrypt)); err != nil {
			errs = append(errs, fmt.Errorf("%s: password_bcrypt is not a bcrypt hash: %v", where, err))
		}
		for _, f := range append(append([]string{}, s.Publish...), s.Subscribe...) {
			probe := strings.NewReplacer("{clientid}", "x", "{username}", "x").Replace(f)
			if !ValidFilter(probe) {
				errs = append(errs, fmt.Errorf("%s: %q is not a valid topic filter", where, f))
			}
		}
		for _, g := range s.ClientIDs {
			if g == "" || strings.ContainsAny(strings.TrimSuffix(g, "*"), "*/+#\x00") {
				errs = append(errs, fmt.Errorf("%s: client_ids entry %q: want a thing name, a prefix ending in *, or *", where, g))
			}
		}
		p.services[s.Name] = s
	}
	for i, k := range keys {
		where := fmt.Sprintf("auth.api_keys[%d] (%q)", i, k.Name)
		sum, err := hex.DecodeString(k.SHA256)
		if err != nil || len(sum) != 32 {
			errs = append(errs, fmt.Errorf("%s: sha256 must be 64 hex digits", where))
			continue
		}
		if roleRank[k.Role] == 0 {
			errs = append(errs, fmt.Errorf("%s: role %q: want viewer, operator or admin", where, k.Role))
		}
		if k.Name == "" {
			errs = append(errs, fmt.Errorf("%s: name is required", where))
		}
		p.apiKeys[[32]byte(sum)] = APIPrincipal{Name: k.Name, Role: k.Role}
	}
	return p, errors.Join(errs...)
}

// Service returns the configured service of that name.
func (p *Policy) Service(name string) (ServiceConfig, bool) {
	s, ok := p.services[name]
	return s, ok
}

// CheckServicePassword verifies a service's MQTT password.
func (p *Policy) CheckServicePassword(name string, password []byte) bool {
	s, ok := p.services[name]
	return ok && bcrypt.CompareHashAndPassword([]byte(s.PasswordBcrypt), password) == nil
}

// APIKey returns the principal of an API key.
func (p *Policy) APIKey(key string) (APIPrincipal, bool) {
	sum := sha256.Sum256([]byte(key))
	for h, pr := range p.apiKeys {
		if subtle.ConstantTimeCompare(h[:], sum[:]) == 1 {
			return pr, true
		}
	}
	return APIPrincipal{}, false
}

// HasAPIKeys reports whether any API key is configured.
func (p *Policy) HasAPIKeys() bool { return len(p.apiKeys) > 0 }
