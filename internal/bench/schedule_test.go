package bench

import (
	"testing"
	"time"
)

// TestFixedRateSendsAtIntendedTime: the fixed-rate sender sends update seq
// as soon as its intended time (seq/rate) has come, not a period later,
// since the latency it reports runs from that intended time.
func TestFixedRateSendsAtIntendedTime(t *testing.T) {
	for _, rate := range []float64{200, 1000, 5000, 333} {
		period := time.Duration(float64(time.Second) / rate)
		if got := dueBy(0, rate); got != 1 {
			t.Fatalf("rate %g: %d due at the start, want 1 (update 0)", rate, got)
		}
		for seq := int64(1); seq < 2000; seq += 7 {
			intended := time.Duration(float64(seq) / rate * float64(time.Second))
			if due := dueBy(intended+time.Microsecond, rate); due <= seq {
				t.Fatalf("rate %g: update %d not due just after its intended time %s (due %d)", rate, seq, intended, due)
			}
			if due := dueBy(intended-period/10, rate); due > seq {
				t.Fatalf("rate %g: update %d due before its intended time %s (due %d)", rate, seq, intended, due)
			}
		}
	}
	if dueBy(-time.Millisecond, 1000) != 0 {
		t.Fatal("updates due before the start")
	}
}
