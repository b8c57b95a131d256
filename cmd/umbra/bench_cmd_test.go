package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
)

// umbra bench exits non-zero when the broker rejects shadow updates (here:
// documents over AWS's 8 KB state limit), after printing its table, and
// names the rejections.
func TestBenchFailsOnRejectedUpdates(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "--quiet", "--data-dir", t.TempDir(),
		"--clients", "2", "--duration", "300ms", "--warmup", "100ms", "--rate", "-1", "--payload", "20000",
		"shadow-update"}, &out, &errb, nil)
	if code == 0 {
		t.Fatalf("exit 0 with every update rejected:\n%s\n%s", out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "rejected") || !strings.Contains(out.String(), "REJECTED") {
		t.Errorf("exit %d; stderr %q; table:\n%s", code, errb.String(), out.String())
	}
}

// Every header of the table names one column: as many headers as cells in
// each row; and the run reports the shadow ÷ raw ratio, the percentiles of
// each fixed-rate variant (raw and shadow-update) and, with
// --compare-history, history on ÷ off.
func TestBenchTableHeadersMatchColumns(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "--quiet", "--data-dir", t.TempDir(),
		"--clients", "2", "--duration", "300ms", "--warmup", "100ms", "--rate", "100", "--rate-clients", "5",
		"--compare-history", "raw", "shadow-update"}, &out, &errb, nil)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errb.String(), out.String())
	}
	lines := strings.Split(out.String(), "\n")
	cells := regexp.MustCompile(`\S+(?: \S+)*`) // cells are separated by two spaces or more
	var header int
	rows := 0
	for _, l := range lines {
		n := len(cells.FindAllString(l, -1))
		switch {
		case strings.HasPrefix(strings.TrimSpace(l), "scenario "):
			header = n
		case header > 0 && n > 1 && (strings.HasPrefix(strings.TrimSpace(l), "raw ") || strings.HasPrefix(strings.TrimSpace(l), "shadow-update ")):
			rows++
			if n != header {
				t.Errorf("%d headers, %d cells in %q", header, n, l)
			}
		}
	}
	if header == 0 || rows != 5 {
		t.Fatalf("header %d cells, %d rows:\n%s", header, rows, out.String())
	}
	for _, want := range []string{"durable shadow updates ÷ raw QoS 1 round trips", "history ÷ without", "max rate, history off",
		"shadow-update fixed 100/s: ", "raw fixed 100/s: ", "p99 "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
