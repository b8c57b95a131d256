package reliability

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// httpNewRequest is http.NewRequest that takes a possibly nil *bytes.Reader
// (a nil pointer in an io.Reader is not a nil reader).
func httpNewRequest(method, url string, body *bytes.Reader) (*http.Request, error) {
	if body == nil {
		return http.NewRequest(method, url, nil)
	}
	req, err := http.NewRequest(method, url, body)
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, err
}

// metrics reads /metrics and returns every unlabelled sample, plus labelled
// ones under their full name with labels.
func metrics(ctx context.Context, base string) (map[string]float64, error) {
	code, body, err := httpDo(ctx, "GET", base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, &httpStatusError{code, string(body)}
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

type httpStatusError struct {
	code int
	body string
}

func (e *httpStatusError) Error() string { return "HTTP " + strconv.Itoa(e.code) + ": " + e.body }

// metricValue reads one metric, failing the test if it is missing.
func metricValue(t testing.TB, base, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := metrics(ctx, base)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	v, ok := m[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
	return v
}

// waitMetric waits (bounded) until a metric has the wanted value.
func waitMetric(t testing.TB, base, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var got float64
	for time.Now().Before(deadline) {
		if got = metricValue(t, base, name); got == want {
			return
		}
		<-tick.C
	}
	t.Errorf("%s = %v, want %v (waited 10s)", name, got, want)
}
