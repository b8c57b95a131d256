// Package gctune gives Go's garbage collector a floor of headroom, so that a
// broker with a small live heap does not collect many times a second.
//
// Why: with GOGC=100 the heap goal is twice the live heap. Umbra's live heap
// is small for a small fleet (15-30 MiB), while a busy broker allocates
// hundreds of MiB per second (every MQTT packet, every shadow document), so
// it collected about 20 times a second under load. Each collection scans
// every goroutine's stack (two or more per MQTT connection), and mutator
// assists and mark workers took about a fifth of the CPU of a durable shadow
// update (BENCHMARKS.md, issue 17). A goal of at least live + Headroom
// removes most of that for a fixed, small amount of memory, and changes
// nothing for a large fleet, whose live heap already gives the collector
// room: there GOGC stays at its usual 100.
//
// It is the binary's choice, not the library's: `umbra serve` and the
// in-process `umbra bench` start it; a program embedding the broker package
// keeps its own GC settings. GOGC set in the environment (any value,
// including off) turns it off, and GOMEMLIMIT still bounds the heap.
package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// DefaultHeadroom is the heap growth allowed beyond the live heap before a
// collection starts, when the live heap is small.
const DefaultHeadroom = 64 << 20

// maxPercent bounds GOGC when the live heap is tiny (at start-up).
const maxPercent = 2000

// Tuner adjusts GOGC after every garbage collection.
type Tuner struct {
	headroom uint64
	base     int // GOGC when headroom needs no more
	percent  atomic.Int64
	stopped  atomic.Bool
	sample   []metrics.Sample
	mu       sync.Mutex
}

// Start tunes GOGC so that the heap goal is at least the live heap plus
// headroom, re-evaluated after every collection, and never below base
// (100, Go's default). It returns nil, and does nothing, when GOGC is set in
// env, the environment of the process ("KEY=value" entries).
func Start(headroom uint64, env []string) *Tuner {
	for _, kv := range env {
		if len(kv) >= 5 && kv[:5] == "GOGC=" {
			return nil
		}
	}
	t := &Tuner{headroom: headroom, base: 100, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.percent.Store(int64(t.base))
	t.arm()
	runtime.GC() // a first reading of the live heap
	return t
}

// arm attaches the tuning to the next collection: a sentinel object whose
// cleanup runs once it has been collected, and arms the next one.
func (t *Tuner) arm() {
	sentinel := new([16]byte)
	runtime.AddCleanup(sentinel, func(t *Tuner) {
		if t.stopped.Load() {
			return
		}
		t.tune()
		t.arm()
	}, t)
}

// tune sets GOGC from the live heap the last collection marked.
func (t *Tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	p := Percent(t.sample[0].Value.Uint64(), t.headroom, t.base)
	cur := int(t.percent.Load())
	// SetGCPercent stops the world briefly: only for a change of 10 % or
	// more, or back to base.
	if p == cur || (p != t.base && max(p-cur, cur-p) < cur/10) {
		return
	}
	debug.SetGCPercent(p)
	t.percent.Store(int64(p))
}

// Percent is the GOGC that gives a heap goal of at least live + headroom,
// between base and maxPercent.
func Percent(live, headroom uint64, base int) int {
	if live == 0 {
		return maxPercent
	}
	p := int((headroom*100 + live - 1) / live)
	return min(max(p, base), maxPercent)
}

// Current is the GOGC the tuner last set.
func (t *Tuner) Current() int { return int(t.percent.Load()) }

// Stop ends the tuning and restores GOGC to base.
func (t *Tuner) Stop() {
	if t == nil || t.stopped.Swap(true) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	debug.SetGCPercent(t.base)
	t.percent.Store(int64(t.base))
}
