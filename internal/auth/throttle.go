package auth

import (
	"sync"
	"sync/atomic"
	"time"
)

// ThrottleConfig limits password guessing. Checking a password costs a
// bcrypt (tens of milliseconds of CPU): eight guessers took more than a
// core. After FailuresPerClient failed logins for one client id, or
// FailuresPerAddress from one source address, further password logins for
// that key are refused without any bcrypt for a back-off that doubles with
// each further failure (from one second up to MaxBackoff). A key's count
// is forgotten after Forget without failures.
type ThrottleConfig struct {
	FailuresPerClient  int           `yaml:"failures_per_client"`  // 0: DefaultFailuresPerClient; negative: no per-client limit
	FailuresPerAddress int           `yaml:"failures_per_address"` // 0: DefaultFailuresPerAddress; negative: no per-address limit
	MaxBackoff         time.Duration `yaml:"max_backoff"`          // 0: DefaultMaxBackoff
	Forget             time.Duration `yaml:"forget"`               // 0: DefaultThrottleForget
}

// Default login throttling.
const (
	DefaultFailuresPerClient  = 5
	DefaultFailuresPerAddress = 20
	DefaultMaxBackoff         = time.Minute
	DefaultThrottleForget     = 15 * time.Minute
	// maxThrottleKeys bounds the table; a full table forgets keys that
	// are not backing off (so a flood of addresses cannot grow memory).
	maxThrottleKeys = 100_000
)

// Throttle counts failed logins per key (source address, client id).
type Throttle struct {
	cfg   ThrottleConfig
	Clock func() time.Time // nil: time.Now

	mu   sync.Mutex
	keys map[string]*failures

	throttled atomic.Uint64
}

type failures struct {
	n     int
	last  time.Time
	until time.Time
}

// NewThrottle applies the defaults to cfg.
func NewThrottle(cfg ThrottleConfig) *Throttle {
	if cfg.FailuresPerClient == 0 {
		cfg.FailuresPerClient = DefaultFailuresPerClient
	}
	if cfg.FailuresPerAddress == 0 {
		cfg.FailuresPerAddress = DefaultFailuresPerAddress
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Forget <= 0 {
		cfg.Forget = DefaultThrottleForget
	}
	return &Throttle{cfg: cfg, keys: map[string]*failures{}}
}

func (t *Throttle) now() time.Time {
	if t.Clock != nil {
		return t.Clock()
	}
	return time.Now()
}

func clientKey(id string) string { return "c\x00" + id }
func addressKey(a string) string { return "a\x00" + a }
func (t *Throttle) limit(key string) int {
	if key[0] == 'c' {
		return t.cfg.FailuresPerClient
	}
	return t.cfg.FailuresPerAddress
}

// Blocked reports whether a password login for clientID from address
// must be refused now, and counts it as throttled if so.
func (t *Throttle) Blocked(clientID, address string) bool {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range []string{clientKey(clientID), addressKey(address)} {
		if f, ok := t.keys[k]; ok && now.Before(f.until) {
			t.throttled.Add(1)
			return true
		}
	}
	return false
}

// Failed records a failed login (credentials checked and wrong).
func (t *Throttle) Failed(clientID, address string) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range []string{clientKey(clientID), addressKey(address)} {
		limit := t.limit(k)
		if limit < 0 {
			continue
		}
		f, ok := t.keys[k]
		if !ok {
			if len(t.keys) >= maxThrottleKeys {
				t.prune(now)
			}
			f = &failures{}
			t.keys[k] = f
		} else if now.Sub(f.last) > t.cfg.Forget {
			*f = failures{}
		}
		f.n++
		f.last = now
		if over := f.n - limit; over >= 0 {
			d := time.Second << min(over, 30)
			f.until = now.Add(min(d, t.cfg.MaxBackoff))
		}
	}
}

// Succeeded forgets the failures of a client id that logged in (its
// address keeps its count: one good login must not reset a guesser).
func (t *Throttle) Succeeded(clientID string) {
	t.mu.Lock()
	delete(t.keys, clientKey(clientID))
	t.mu.Unlock()
}

// prune drops keys not backing off; with the lock held.
func (t *Throttle) prune(now time.Time) {
	for k, f := range t.keys {
		if !now.Before(f.until) {
			delete(t.keys, k)
		}
	}
}

// Throttled is the number of logins refused unchecked by the throttle.
func (t *Throttle) Throttled() uint64 { return t.throttled.Load() }
