package limits

import (
	"net"
	"sync"
)

// Conns caps concurrent connections per source address; with Max 0 (or a
// nil *Conns) there is no cap. The MQTT listeners share one; the HTTP
// listener has its own.
type Conns struct {
	Max int

	mu sync.Mutex
	n  map[string]int // host → open connections
}

// Admit counts a connection from addr (host:port, or a host) unless its
// host is at Max; release, which may be called more than once, uncounts it.
func (l *Conns) Admit(addr string) (release func(), ok bool) {
	if l == nil || l.Max <= 0 {
		return func() {}, true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[host] >= l.Max {
		return nil, false
	}
	if l.n == nil {
		l.n = make(map[string]int)
	}
	l.n[host]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			if l.n[host]--; l.n[host] <= 0 {
				delete(l.n, host)
			}
			l.mu.Unlock()
		})
	}, true
}
