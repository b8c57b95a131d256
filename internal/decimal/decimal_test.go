package decimal

import "testing"

func TestCmp(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"1", "1.0", 0},
		{"1", "10e-1", 0},
		{"0", "-0.000e5", 0},
		{"100000000000000000001", "1e20", 1},
		{"1.50", "1.5", 0},
		{"-2", "1", -1},
		{"1e400", "1e399", 1},
		{"1e99999999999999999999", "1e99999999999999999998", 1},
		{"-1e99999999999999999999", "1", -1},
		{"0.1", "0.10000000000000001", -1},
	}
	for _, c := range cases {
		x, okx := Parse(c.a)
		y, oky := Parse(c.b)
		if !okx || !oky {
			t.Fatalf("Parse(%q, %q): %v %v", c.a, c.b, okx, oky)
		}
		if got := x.Cmp(&y); got != c.want {
			t.Errorf("Cmp(%s, %s) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := y.Cmp(&x); got != -c.want {
			t.Errorf("Cmp(%s, %s) = %d, want %d", c.b, c.a, got, -c.want)
		}
		if (x.Canonical() == y.Canonical()) != (c.want == 0) {
			t.Errorf("Canonical(%s) = %s, Canonical(%s) = %s", c.a, x.Canonical(), c.b, y.Canonical())
		}
	}
	for _, bad := range []string{"", "-", ".", "1e", "1e+", "0x1", "1 ", "NaN"} {
		if _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
