package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/umbra-iot/umbra/brokertest"
)

// TestShadowNumbersExact: shadows keep numbers as they were sent, so the CLI
// must neither round them on the way in (update) nor on the way out (get).
func TestShadowNumbersExact(t *testing.T) {
	bin := buildUmbra(t)
	srv := brokertest.Start(t)
	r := &cliRunner{t: t, bin: bin, home: t.TempDir(), srv: srv.HTTPURL()}

	// Desired differs from reported by the last digit only, so it is not
	// pruned by convergence and both sections are printed.
	r.ok("shadow", "update", "num-1", "--desired", "big:=100000000000000000003",
		"--desired", "half:=1.50", "--desired", "huge:=1e401")
	r.ok("shadow", "update", "num-1", `{"state":{"reported":{"big":100000000000000000001,"half":1.5,"huge":1e400,"nested":{"n":-0.10}}}}`)
	out := r.ok("shadow", "get", "num-1")
	for _, want := range [][2]string{
		{"desired", "big 100000000000000000003"},
		{"desired", "huge 1e401"},
		{"reported", "big 100000000000000000001"},
		{"reported", "half 1.5"},
		{"reported", "huge 1e400"},
		{"reported", "nested.n -0.10"},
		{"delta", "big 100000000000000000003"},
	} {
		k, v, _ := strings.Cut(want[1], " ")
		re := regexp.MustCompile(`(?m)^` + want[0] + `\s+` + regexp.QuoteMeta(k) + `\s+` + regexp.QuoteMeta(v) + `$`)
		if !re.MatchString(out) {
			t.Errorf("shadow get lacks %s %s = %s:\n%s", want[0], k, v, out)
		}
	}
	// 1.50 and 1.5 are the same number: desired.half converged and was pruned.
	if regexp.MustCompile(`(?m)^desired\s+half`).MatchString(out) {
		t.Errorf("desired.half should have converged with reported 1.5:\n%s", out)
	}
	if js := r.ok("shadow", "get", "num-1", "--json"); !strings.Contains(js, "100000000000000000001") || !strings.Contains(js, "1e400") || !strings.Contains(js, "-0.10") {
		t.Errorf("shadow get --json changed a number:\n%s", js)
	}
	if _, errs, code := r.run("shadow", "update", "num-1", "--desired", "x:=1 2"); code != 2 || !strings.Contains(errs, "must be JSON") {
		t.Errorf("a value with trailing data: exit %d, %s", code, errs)
	}
}
