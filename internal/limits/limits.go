// Package limits keeps one client from starving the others: a request rate
// per thing (AWS IoT: 20 shadow requests per second per thing) and a cap on
// requests in flight per principal (AWS: 10 per connection); and quotas on
// what one client makes the broker hold (Retained, Inflight; see quota.go);
// and a cap on connections per source address (Conns; conns.go). The
// broker's options (broker.LimitOptions, QuotaOptions) configure them; the
// mechanisms all live here.
package limits

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Shadow limits shadow requests. The zero value allows everything.
type Shadow struct {
	// PerThing is the sustained request rate per thing; 0 disables.
	PerThing rate.Limit
	// Burst is how many requests a thing may make at once; 0 means PerThing
	// rounded up.
	Burst int
	// InFlight caps concurrent requests per principal; 0 disables.
	InFlight int

	mu        sync.Mutex
	things    map[string]*thingLimit
	inflight  map[string]int
	sinceTidy int
}

type thingLimit struct {
	lim  *rate.Limiter
	last time.Time
}

// Acquire admits one request for thing by principal at now. When admitted,
// release must be called once the request is done.
func (s *Shadow) Acquire(thing, principal string, now time.Time) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.InFlight > 0 {
		if s.inflight[principal] >= s.InFlight {
			return nil, false
		}
	}
	if s.PerThing > 0 {
		if s.things == nil {
			s.things = make(map[string]*thingLimit)
		}
		t := s.things[thing]
		if t == nil {
			burst := s.Burst
			if burst <= 0 {
				burst = max(int(s.PerThing+0.999), 1)
			}
			t = &thingLimit{lim: rate.NewLimiter(s.PerThing, burst)}
			s.things[thing] = t
		}
		t.last = now
		if !t.lim.AllowN(now, 1) {
			return nil, false
		}
		s.tidy(now)
	}
	if s.InFlight <= 0 {
		return func() {}, true
	}
	if s.inflight == nil {
		s.inflight = make(map[string]int)
	}
	s.inflight[principal]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.inflight[principal]--; s.inflight[principal] <= 0 {
				delete(s.inflight, principal)
			}
			s.mu.Unlock()
		})
	}, true
}

// tidy drops, every few thousand requests, the limiters of things idle long
// enough for their bucket to be full again (they would admit a burst anyway),
// so memory follows the active things, not every thing ever seen.
func (s *Shadow) tidy(now time.Time) {
	if s.sinceTidy++; s.sinceTidy < 4096 {
		return
	}
	s.sinceTidy = 0
	refill := time.Duration(float64(time.Second) * float64(max(s.Burst, 1)) / float64(s.PerThing))
	for k, t := range s.things {
		if now.Sub(t.last) > refill+time.Second {
			delete(s.things, k)
		}
	}
}
