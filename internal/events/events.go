// Package events fans Umbra's change events (shadow changes, connectivity,
// rollout progress) out to live subscribers: the dashboard and scripts
// reading the HTTP event stream. Publishing never blocks: a subscriber that
// does not keep up loses events and is told how many.
package events

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one change.
type Event struct {
	Type  string          `json:"type"`            // "shadow", "connectivity", "rollout", "job"
	Thing string          `json:"thing,omitempty"` // the thing it concerns, if any
	Time  int64           `json:"time"`            // Unix milliseconds
	Data  json.RawMessage `json:"data"`
}

// Hub distributes events to subscribers.
type Hub struct {
	mu   sync.RWMutex
	subs map[*Subscription]struct{}
}

// Subscription receives events until Close.
type Subscription struct {
	C       <-chan Event
	c       chan Event
	hub     *Hub
	accept  func(Event) bool
	dropped atomic.Int64
}

// Dropped returns and resets how many events were lost since the last call.
func (s *Subscription) Dropped() int64 { return s.dropped.Swap(0) }

// Subscribe returns a subscription with a buffer of size events; accept,
// when set, filters events (it runs on the publisher's goroutine and must
// be cheap).
func (h *Hub) Subscribe(size int, accept func(Event) bool) *Subscription {
	c := make(chan Event, size)
	s := &Subscription{C: c, c: c, hub: h, accept: accept}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[*Subscription]struct{}{}
	}
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Close ends a subscription.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	delete(s.hub.subs, s)
	s.hub.mu.Unlock()
}

// Publish delivers e to every subscriber that accepts it, without waiting.
func (h *Hub) Publish(e Event) {
	if e.Time == 0 {
		e.Time = time.Now().UnixMilli()
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs {
		if s.accept != nil && !s.accept(e) {
			continue
		}
		select {
		case s.c <- e:
		default:
			s.dropped.Add(1)
		}
	}
}

// Subscribers is the number of live subscriptions.
func (h *Hub) Subscribers() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs)
}

// PublishJSON marshals data into an event and publishes it.
func (h *Hub) PublishJSON(typ, thing string, data any) {
	if h == nil {
		return
	}
	b, err := json.Marshal(data)
	if err != nil {
		return
	}
	h.Publish(Event{Type: typ, Thing: thing, Data: b})
}
