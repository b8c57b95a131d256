package gctune

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		live, headroom uint64
		want           int
	}{
		{16 << 20, 64 << 20, 400}, // small fleet: goal live + 64 MiB
		{20 << 20, 64 << 20, 320}, // rounded up
		{64 << 20, 64 << 20, 100}, // live = headroom: Go's default already gives it
		{1 << 30, 64 << 20, 100},  // large fleet: unchanged
		{1 << 20, 64 << 20, 2000}, // start-up: bounded
		{0, 64 << 20, 2000},       // no reading yet
		{40 << 20, 64 << 20, 160},
	} {
		if got := Percent(c.live, c.headroom, 100); got != c.want {
			t.Errorf("Percent(%d MiB live, %d MiB headroom) = %d, want %d", c.live>>20, c.headroom>>20, got, c.want)
		}
	}
}

// gcPercent reads GOGC without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestTunesAfterCollections: with a small live heap the tuner raises GOGC
// after a collection; with a live heap larger than the headroom it brings
// GOGC back to 100; Stop restores 100; GOGC in the environment leaves the
// runtime alone.
func TestTunesAfterCollections(t *testing.T) {
	if Start(DefaultHeadroom, []string{"GOGC=50"}) != nil {
		t.Fatal("tuner started although GOGC is set")
	}
	tu := Start(DefaultHeadroom, nil)
	defer tu.Stop()
	waitPercent := func(ok func(int) bool, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			runtime.GC() // the cleanup runs after a collection
			if p := gcPercent(); ok(p) && tu.Current() == p {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC %d (tuner %d)", what, gcPercent(), tu.Current())
			}
			runtime.Gosched()
		}
	}
	waitPercent(func(p int) bool { return p > 400 }, "small live heap")
	big := make([]byte, 3*DefaultHeadroom) // live heap past the headroom
	for i := range big {
		big[i] = byte(i)
	}
	waitPercent(func(p int) bool { return p == 100 }, "live heap past the headroom")
	runtime.KeepAlive(big)
	big = nil
	waitPercent(func(p int) bool { return p > 400 }, "heap small again")
	tu.Stop()
	if p := gcPercent(); p != 100 {
		t.Fatalf("after Stop: GOGC %d", p)
	}
}
