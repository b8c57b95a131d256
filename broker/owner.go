package broker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// owner starts and owns the broker's background goroutines (the rollout
// engine, the HTTP server, the commit probe). Each runs with a context that
// Stop cancels, and Stop waits for all of them: Shutdown stops the owner
// before it closes the database, so no goroutine of the broker outlives
// Shutdown or touches a closed store. Nothing may be started with a bare
// go statement in the broker but through Go (per-connection goroutines
// belong to their listener, which Mochi's Close waits for).
type owner struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	stopped bool
	running map[string]int // name → how many run
	wg      sync.WaitGroup
}

func newOwner() *owner {
	o := &owner{running: map[string]int{}}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	return o
}

// Go runs f in a new goroutine named name, with a context that ends when
// Stop is called. After Stop it starts nothing and reports false.
func (o *owner) Go(name string, f func(ctx context.Context)) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped {
		return false
	}
	o.running[name]++
	o.wg.Add(1)
	go func() {
		defer func() {
			o.mu.Lock()
			if o.running[name]--; o.running[name] == 0 {
				delete(o.running, name)
			}
			o.mu.Unlock()
			o.wg.Done()
		}()
		f(o.ctx)
	}()
	return true
}

// Stop cancels the goroutines' context and waits until all have returned,
// or until ctx ends: then the error names those still running.
func (o *owner) Stop(ctx context.Context) error {
	o.mu.Lock()
	o.stopped = true
	o.mu.Unlock()
	o.cancel()
	done := make(chan struct{})
	go func() { // ends when the last goroutine does
		o.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		o.mu.Lock()
		names := slices.Sorted(maps.Keys(o.running))
		o.mu.Unlock()
		return fmt.Errorf("background goroutines still running (%v): %w", names, ctx.Err())
	}
}
