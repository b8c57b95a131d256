package limits

import "testing"

func TestRetainedQuota(t *testing.T) {
	r := &Retained{MaxMessages: 2, MaxBytes: 100}
	if !r.Allow("a", "t1", 40) {
		t.Fatal("first message refused")
	}
	r.Set("a", "t1", 40)
	r.Set("a", "t2", 40)
	if r.Allow("a", "t3", 1) {
		t.Fatal("third topic allowed over a count of 2")
	}
	if !r.Allow("a", "t2", 60) || r.Allow("a", "t2", 61) {
		t.Fatal("replacing own topic: want the difference counted")
	}
	if !r.Allow("b", "t3", 100) || r.Allow("b", "t3", 101) {
		t.Fatal("another owner's quota is its own")
	}
	r.Set("b", "t1", 10) // b takes t1 over from a
	if u := r.Usage("a"); u != (Usage{1, 40}) {
		t.Fatalf("a after losing t1: %+v", u)
	}
	r.Delete("t2")
	if u := r.Usage("a"); u != (Usage{}) {
		t.Fatalf("a after delete: %+v", u)
	}
	if tot := r.Total(); tot != (Usage{1, 10}) {
		t.Fatalf("total %+v", tot)
	}
}

func TestRetainedLoadKeepsNewestWithinQuota(t *testing.T) {
	r := &Retained{MaxMessages: 2, MaxBytes: 1000}
	over := r.Load([]StoredRetained{
		{Owner: "a", Topic: "old", Size: 10, Created: 1},
		{Owner: "a", Topic: "new", Size: 10, Created: 3},
		{Owner: "a", Topic: "mid", Size: 10, Created: 2},
		{Owner: "b", Topic: "b1", Size: 10, Created: 1},
	})
	if len(over) != 1 || over[0].Topic != "old" {
		t.Fatalf("over = %+v, want the oldest of a", over)
	}
	if u := r.Usage("a"); u != (Usage{2, 20}) {
		t.Fatalf("a: %+v", u)
	}
}

func TestInflightQuota(t *testing.T) {
	q := &Inflight{MaxBytes: 100}
	if _, known := q.Reserve("s", 1, 10); known {
		t.Fatal("unknown session reported known")
	}
	q.Reset("s", map[uint16]int64{1: 30})
	if ok, _ := q.Reserve("s", 2, 70); !ok {
		t.Fatal("70 more refused at 30/100")
	}
	if ok, _ := q.Reserve("s", 3, 1); ok {
		t.Fatal("allowed over quota")
	}
	q.Record("s", 2, 70) // a resend counts once
	if b, n := q.Held("s"); b != 100 || n != 2 {
		t.Fatalf("held %d bytes %d messages", b, n)
	}
	q.Release("s", 1)
	q.Release("s", 2)
	if ok, _ := q.Reserve("s", 4, 500); !ok {
		t.Fatal("an empty session must get one message of any size")
	}
	if ok, _ := q.Reserve("s", 5, 1); ok {
		t.Fatal("second message allowed beside an oversized one")
	}
	q.Forget("s")
	if q.Total() != 0 {
		t.Fatal("forgotten session still counted")
	}
}
