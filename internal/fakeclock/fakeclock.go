// Package fakeclock is a settable clock for tests of code that takes a
// Clock func() time.Time (the registry, the rollout engine, the shadow
// service), so that timeouts and timestamps are driven, not waited for.
package fakeclock

import (
	"sync"
	"time"
)

// Clock reads the time it was set to; safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock reading t.
func New(t time.Time) *Clock { return &Clock{now: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }
