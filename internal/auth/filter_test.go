package auth

import "testing"

func TestMatch(t *testing.T) {
	cases := []struct {
		f, t string
		want bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+", "a", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"#", "$aws/things/x", false},
		{"+/things/x", "$aws/things/x", false},
		{"$aws/things/+/shadow/#", "$aws/things/x/shadow/update", true},
		{"$aws/things/x/shadow/#", "$aws/things/y/shadow/update", false},
		{"a/+/c", "a//c", true},
		{"a/b", "a/b/", false},
	}
	for _, c := range cases {
		if got := Match(c.f, c.t); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.f, c.t, got, c.want)
		}
	}
}

func TestCovers(t *testing.T) {
	cases := []struct {
		grant, sub string
		want       bool
	}{
		{"a/#", "a/b", true},
		{"a/#", "a/+", true},
		{"a/#", "a/#", true},
		{"a/#", "a", true},
		{"a/+", "a/b", true},
		{"a/+", "a/+", true},
		{"a/+", "a/#", false},
		{"a/+", "a/b/c", false},
		{"a/b", "a/+", false},
		{"a/b", "a/b", true},
		{"a/b/#", "a/+/c", false},
		{"#", "x/y", true},
		{"#", "$aws/things/x/shadow/update", false},
		{"+/+", "$SYS/x", false},
		{"$aws/things/d1/shadow/#", "$aws/things/d1/shadow/update/delta", true},
		{"$aws/things/d1/shadow/#", "$aws/things/+/shadow/update/delta", false},
		{"$aws/things/d1/shadow/#", "$aws/things/#", false},
		{"$aws/things/d1/shadow/#", "$aws/#", false},
	}
	for _, c := range cases {
		if got := Covers(c.grant, c.sub); got != c.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", c.grant, c.sub, got, c.want)
		}
	}
}

// Covers must never grant a subscription through which a topic outside the
// grant could be delivered: check it against Match on sample topics.
func FuzzCoversImpliesMatch(f *testing.F) {
	f.Add("a/#", "a/+", "a/b")
	f.Add("a/+", "a/b", "a/b")
	f.Add("$aws/things/d/shadow/#", "$aws/things/d/shadow/+/delta", "$aws/things/d/shadow/update/delta")
	f.Fuzz(func(t *testing.T, grant, sub, topic string) {
		if Covers(grant, sub) && Match(sub, topic) && !Match(grant, topic) {
			t.Fatalf("Covers(%q,%q) but topic %q matches the subscription and not the grant", grant, sub, topic)
		}
	})
}

func TestSharedFilter(t *testing.T) {
	if f, ok := SharedFilter("$share/g/a/#"); !ok || f != "a/#" {
		t.Fatalf("got %q %v", f, ok)
	}
	if _, ok := SharedFilter("a/#"); ok {
		t.Fatal("plain filter reported shared")
	}
}
