package auth

import (
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/fakeclock"
)

func TestThrottleBacksOffAndForgets(t *testing.T) {
	clock := fakeclock.New(time.Unix(1e9, 0))
	th := NewThrottle(ThrottleConfig{FailuresPerClient: 2, FailuresPerAddress: 100, MaxBackoff: 8 * time.Second, Forget: time.Hour})
	th.Clock = clock.Now
	th.Failed("d", "10.0.0.1")
	if th.Blocked("d", "10.0.0.1") {
		t.Fatal("blocked after one failure")
	}
	th.Failed("d", "10.0.0.1") // limit reached: 1 s
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		if !th.Blocked("d", "10.0.0.2") {
			t.Fatalf("not blocked at the start of a %v back-off", want)
		}
		clock.Add(want - time.Millisecond)
		if !th.Blocked("d", "10.0.0.2") {
			t.Fatalf("back-off shorter than %v", want)
		}
		clock.Add(time.Millisecond)
		if th.Blocked("d", "10.0.0.2") {
			t.Fatalf("back-off longer than %v", want)
		}
		th.Failed("d", "10.0.0.1")
	}
	if th.Blocked("other", "10.0.0.2") {
		t.Fatal("another client id blocked")
	}
	th.Succeeded("d")
	if th.Blocked("d", "10.0.0.2") {
		t.Fatal("blocked after a successful login")
	}
	// Failures older than Forget are forgotten.
	th.Failed("e", "a")
	clock.Add(2 * time.Hour)
	th.Failed("e", "a")
	if th.Blocked("e", "a") {
		t.Fatal("old failure still counted")
	}
	if th.Throttled() == 0 {
		t.Fatal("throttled refusals not counted")
	}
}
