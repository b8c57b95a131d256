// Package keyed provides a mutex per key, created on demand and dropped
// when no one holds or waits for it: the per-shadow and per-thing locks
// that serialise changes to one record while others proceed.
package keyed

import "sync"

// Mutex is a set of mutexes by key. The zero value is ready to use.
type Mutex[K comparable] struct {
	mu sync.Mutex
	m  map[K]*entry
}

type entry struct {
	mu      sync.Mutex
	waiters int
}

// Lock locks key and returns the function that unlocks it.
func (k *Mutex[K]) Lock(key K) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[K]*entry)
	}
	e := k.m[key]
	if e == nil {
		e = &entry{}
		k.m[key] = e
	}
	e.waiters++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.waiters--; e.waiters == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// Len is how many keys are locked or waited for (for tests).
func (k *Mutex[K]) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}
