package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// SecretCost is the bcrypt cost of device secrets and service passwords.
const SecretCost = bcrypt.DefaultCost

// NewSecret returns a random 256-bit secret, URL-safe base64 without
// padding (43 characters), usable as an MQTT password or API key.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// HashSecret returns the bcrypt hash stored for a device secret.
func HashSecret(secret string) ([]byte, error) {
	return bcrypt.GenerateFromPassword([]byte(secret), SecretCost)
}

// SHA256Hex is the form in which API keys are configured.
func SHA256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Verifier checks device secrets against their bcrypt hashes. bcrypt costs
// tens of milliseconds of CPU by design; a fleet reconnecting at once after
// a network outage would otherwise pay that per device on every reconnect.
// After one successful bcrypt check the verifier remembers a SHA-256 of the
// secret (in memory only, bound to the stored hash), so later connects of
// the same device with the same secret cost a hash; rotating or deleting
// the secret changes the stored hash and so invalidates the entry.
type Verifier struct {
	mu    sync.Mutex
	known map[string]verified
}

type verified struct {
	stored string // the bcrypt hash this entry was checked against
	sum    [32]byte
}

// Verify reports whether secret matches the stored bcrypt hash for thing.
func (v *Verifier) Verify(thing string, stored []byte, secret []byte) bool {
	sum := sha256.Sum256(secret)
	v.mu.Lock()
	e, ok := v.known[thing]
	v.mu.Unlock()
	if ok && e.stored == string(stored) {
		return subtle.ConstantTimeCompare(e.sum[:], sum[:]) == 1
	}
	if bcrypt.CompareHashAndPassword(stored, secret) != nil {
		return false
	}
	v.mu.Lock()
	if v.known == nil {
		v.known = make(map[string]verified)
	}
	v.known[thing] = verified{stored: string(stored), sum: sum}
	v.mu.Unlock()
	return true
}

// Known reports whether secret is the one last verified for thing against
// this stored hash: a SHA-256, never a bcrypt. It lets a device that
// logged in before through while its name or address is throttled.
func (v *Verifier) Known(thing string, stored []byte, secret []byte) bool {
	sum := sha256.Sum256(secret)
	v.mu.Lock()
	e, ok := v.known[thing]
	v.mu.Unlock()
	return ok && e.stored == string(stored) && subtle.ConstantTimeCompare(e.sum[:], sum[:]) == 1
}

// Forget drops what the verifier remembers of thing.
func (v *Verifier) Forget(thing string) {
	v.mu.Lock()
	delete(v.known, thing)
	v.mu.Unlock()
}
