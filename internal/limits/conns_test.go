package limits

import "testing"

func TestConnsCapsPerHost(t *testing.T) {
	l := &Conns{Max: 2}
	r1, ok1 := l.Admit("10.0.0.1:1000")
	_, ok2 := l.Admit("10.0.0.1:1001")
	_, ok3 := l.Admit("10.0.0.1:1002")
	_, other := l.Admit("10.0.0.2:1000")
	if !ok1 || !ok2 || ok3 || !other {
		t.Fatalf("admitted %v %v %v (third over the cap) and another host %v", ok1, ok2, ok3, other)
	}
	r1()
	r1() // twice: counted once
	if _, ok := l.Admit("10.0.0.1:1003"); !ok {
		t.Fatal("a released slot was not reused")
	}
	if _, ok := l.Admit("10.0.0.1:1004"); ok {
		t.Fatal("a double release freed two slots")
	}
	var none *Conns
	if _, ok := none.Admit("x"); !ok {
		t.Fatal("nil Conns refused")
	}
}
