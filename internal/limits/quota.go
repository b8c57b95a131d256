package limits

import (
	"cmp"
	"slices"
	"sync"
)

// Retained accounts retained messages to the client that published them and
// keeps each client within MaxMessages and MaxBytes. A retained topic belongs
// to whoever retained on it last. Umbra's principals are per client id (a
// device's client id is its thing name; a service's principal names its
// client id), so per client is per principal.
//
// The zero value has no limits; set the fields before first use.
type Retained struct {
	// MaxMessages caps the retained topics one client owns; <= 0 disables.
	MaxMessages int
	// MaxBytes caps the bytes (topic + payload) of those; <= 0 disables.
	MaxBytes int64

	mu     sync.Mutex
	topics map[string]retainedEntry
	owners map[string]*Usage
}

type retainedEntry struct {
	owner string
	size  int64
}

// Usage is what one client holds.
type Usage struct {
	Messages int
	Bytes    int64
}

// Allow reports whether owner may retain a message of size bytes on topic
// without going over its quota (replacing its own message on that topic
// counts the difference).
func (r *Retained) Allow(owner, topic string, size int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := Usage{}
	if p := r.owners[owner]; p != nil {
		u = *p
	}
	if e, ok := r.topics[topic]; ok && e.owner == owner {
		u.Bytes -= e.size
	} else {
		u.Messages++
	}
	u.Bytes += size
	return (r.MaxMessages <= 0 || u.Messages <= r.MaxMessages) && (r.MaxBytes <= 0 || u.Bytes <= r.MaxBytes)
}

// Set records that owner retained size bytes on topic.
func (r *Retained) Set(owner, topic string, size int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deleteLocked(topic)
	if r.topics == nil {
		r.topics = make(map[string]retainedEntry)
		r.owners = make(map[string]*Usage)
	}
	r.topics[topic] = retainedEntry{owner: owner, size: size}
	u := r.owners[owner]
	if u == nil {
		u = &Usage{}
		r.owners[owner] = u
	}
	u.Messages++
	u.Bytes += size
}

// Delete records that topic holds no retained message any more.
func (r *Retained) Delete(topic string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deleteLocked(topic)
}

func (r *Retained) deleteLocked(topic string) {
	e, ok := r.topics[topic]
	if !ok {
		return
	}
	delete(r.topics, topic)
	u := r.owners[e.owner]
	u.Messages--
	u.Bytes -= e.size
	if u.Messages <= 0 {
		delete(r.owners, e.owner)
	}
}

// Usage is what owner holds now.
func (r *Retained) Usage(owner string) Usage {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u := r.owners[owner]; u != nil {
		return *u
	}
	return Usage{}
}

// Total is what every client holds together.
func (r *Retained) Total() Usage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Usage{Messages: len(r.topics), Bytes: sumBytes(r.owners)}
}

func sumBytes(m map[string]*Usage) int64 {
	var n int64
	for _, u := range m {
		n += u.Bytes
	}
	return n
}

// StoredRetained is a retained message found in storage at start-up.
type StoredRetained struct {
	Owner, Topic string
	Size         int64
	Created      int64 // unix seconds
}

// Load records stored retained messages and returns those that put their
// owner over the quota (for example after the quota was lowered): the
// caller deletes them instead of restoring them. Each owner keeps its most
// recently retained messages that fit.
func (r *Retained) Load(msgs []StoredRetained) (over []StoredRetained) {
	byOwner := map[string][]StoredRetained{}
	for _, m := range msgs {
		byOwner[m.Owner] = append(byOwner[m.Owner], m)
	}
	for _, ms := range byOwner {
		slices.SortFunc(ms, func(a, b StoredRetained) int {
			if c := cmp.Compare(b.Created, a.Created); c != 0 {
				return c
			}
			return cmp.Compare(a.Topic, b.Topic)
		})
		for _, m := range ms {
			if r.Allow(m.Owner, m.Topic, m.Size) {
				r.Set(m.Owner, m.Topic, m.Size)
			} else {
				over = append(over, m)
			}
		}
	}
	return over
}

// Inflight accounts the bytes of QoS 1/2 messages held for each MQTT session
// (sent and unacknowledged, or queued while the client is offline) and keeps
// each within MaxBytes. Entries are keyed by packet id, so recording the
// same message again (a resend) does not count it twice.
type Inflight struct {
	// MaxBytes caps one session's held bytes; <= 0 disables.
	MaxBytes int64

	mu       sync.Mutex
	sessions map[string]*sessionInflight
}

type sessionInflight struct {
	bytes int64
	ids   map[uint16]int64
}

// Reserve records a message of size bytes under packet id for session if
// it fits within the quota, and reports whether it did. A session that
// holds nothing else always gets it. known is false
// when the session has no record yet (after a restart or a clean start):
// the caller should Reset it from the broker's own state and ask again.
func (q *Inflight) Reserve(session string, id uint16, size int64) (ok, known bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.sessions[session]
	if s == nil {
		return false, false
	}
	// A session holding nothing else gets the message whatever its size,
	// so that a quota below the largest message cannot starve it.
	if others := s.bytes - s.ids[id]; q.MaxBytes > 0 && others > 0 && others+size > q.MaxBytes {
		return false, true
	}
	s.put(id, size)
	return true, true
}

// Record records a message whatever the quota (a message the broker holds
// anyway, such as a resend or an acknowledgement waiting for its peer).
func (q *Inflight) Record(session string, id uint16, size int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.sessions[session]; s != nil {
		s.put(id, size)
	}
}

func (s *sessionInflight) put(id uint16, size int64) {
	s.bytes += size - s.ids[id]
	s.ids[id] = size
}

// Release forgets the message under packet id.
func (q *Inflight) Release(session string, id uint16) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.sessions[session]; s != nil {
		s.bytes -= s.ids[id]
		delete(s.ids, id)
	}
}

// Reset replaces what is recorded for session with held (packet id → size),
// the broker's own view.
func (q *Inflight) Reset(session string, held map[uint16]int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := &sessionInflight{ids: held}
	for _, n := range held {
		s.bytes += n
	}
	if q.sessions == nil {
		q.sessions = make(map[string]*sessionInflight)
	}
	q.sessions[session] = s
}

// Forget drops session's record (its session ended).
func (q *Inflight) Forget(session string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.sessions, session)
}

// Held is session's recorded bytes and message count.
func (q *Inflight) Held(session string) (bytes int64, messages int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.sessions[session]; s != nil {
		return s.bytes, len(s.ids)
	}
	return 0, 0
}

// Total is the recorded bytes of every session.
func (q *Inflight) Total() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var n int64
	for _, s := range q.sessions {
		n += s.bytes
	}
	return n
}
