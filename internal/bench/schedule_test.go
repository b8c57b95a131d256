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

// TestServerUpdateP99: the broker's p99 comes from the update buckets of
// umbra_shadow_request_seconds only, between two readings, interpolated
// within the bucket as histogram_quantile does.
func TestServerUpdateP99(t *testing.T) {
	a, b := map[float64]float64{}, map[float64]float64{}
	for _, l := range []struct {
		labels string
		val    float64
	}{
		{`op="get",le="0.001"`, 500}, // another op: ignored
		{`op="update",le="0.001"`, 100},
		{`op="update",le="0.002"`, 100},
		{`op="update",le="0.004"`, 100},
		{`op="update",le="+Inf"`, 100},
	} {
		addUpdateBucket(a, l.labels, l.val)
	}
	// Between the readings: 900 updates within 1 ms, 80 in (1, 2] ms, 20
	// in (2, 4] ms; the 990th is the 10th of the 20, half way in (2, 4].
	for _, l := range []struct {
		labels string
		val    float64
	}{
		{`op="update",le="0.001"`, 1000},
		{`op="update",le="0.002"`, 1080},
		{`op="update",le="0.004"`, 1100},
		{`op="update",le="+Inf"`, 1100},
	} {
		addUpdateBucket(b, l.labels, l.val)
	}
	if got := bucketQuantile(0.99, a, b); got < 0.00299 || got > 0.00301 {
		t.Fatalf("p99 %g s, want 0.003", got)
	}
	if got := bucketQuantile(0.5, a, b); got < 0.00055 || got > 0.00056 {
		t.Fatalf("p50 %g s, want 500/900 of the first bucket, 0.000556", got)
	}
	if got := bucketQuantile(0.99, b, b); got != 0 {
		t.Fatalf("no updates between the readings: %g", got)
	}
}
