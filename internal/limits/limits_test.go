package limits

import (
	"testing"
	"time"
)

func TestPerThingRateWithInjectedClock(t *testing.T) {
	s := &Shadow{PerThing: 20, Burst: 20}
	now := time.Unix(1000, 0)
	for i := range 20 {
		if _, ok := s.Acquire("t1", "p", now); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if _, ok := s.Acquire("t1", "p", now); ok {
		t.Fatal("21st request in the same instant admitted")
	}
	if _, ok := s.Acquire("t2", "p", now); !ok {
		t.Fatal("another thing must have its own bucket")
	}
	if _, ok := s.Acquire("t1", "p", now.Add(50*time.Millisecond)); !ok {
		t.Fatal("one token refills every 50 ms at 20/s")
	}
	if _, ok := s.Acquire("t1", "p", now.Add(50*time.Millisecond)); ok {
		t.Fatal("only one token had refilled")
	}
}

func TestInFlightPerPrincipal(t *testing.T) {
	s := &Shadow{InFlight: 2}
	now := time.Now()
	r1, ok1 := s.Acquire("a", "conn", now)
	_, ok2 := s.Acquire("b", "conn", now)
	_, ok3 := s.Acquire("c", "conn", now)
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("admitted %v %v %v, want true true false", ok1, ok2, ok3)
	}
	if _, ok := s.Acquire("c", "other", now); !ok {
		t.Fatal("another principal has its own allowance")
	}
	r1()
	r1() // releasing twice must not free a second slot
	if _, ok := s.Acquire("c", "conn", now); !ok {
		t.Fatal("released slot not reusable")
	}
	if _, ok := s.Acquire("d", "conn", now); ok {
		t.Fatal("double release freed two slots")
	}
}

func TestZeroValueAllowsEverything(t *testing.T) {
	var s Shadow
	for range 1000 {
		rel, ok := s.Acquire("t", "p", time.Now())
		if !ok {
			t.Fatal("refused")
		}
		rel()
	}
}

func TestIdleThingsAreForgotten(t *testing.T) {
	s := &Shadow{PerThing: 1000, Burst: 1}
	now := time.Unix(0, 0)
	for i := range 5000 {
		s.Acquire(string(rune('a'+i%26))+string(rune(i)), "p", now)
		now = now.Add(time.Millisecond)
	}
	if n := len(s.things); n > 4096 {
		t.Fatalf("%d limiters kept for 5000 things of which few are recent", n)
	}
}
