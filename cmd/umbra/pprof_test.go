package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// `umbra serve --pprof` serves the runtime profiles on a listener of its
// own, named in the banner; the API listener does not serve them.
func TestServePprofOnItsOwnListener(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--data-dir", t.TempDir(), "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off",
			"--http-addr", "127.0.0.1:0", "--pprof", "127.0.0.1:0"}, pw, io.Discard, nil)
		pw.Close()
	}()
	var pprofURL, httpURL string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "pprof":
			pprofURL = f[1]
		case len(f) == 2 && f[0] == "HTTP":
			httpURL = f[1]
		case len(f) > 0 && f[0] == "data":
			get := func(url string) (int, string) {
				resp, err := http.Get(url)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body)
			}
			if pprofURL == "" || httpURL == "" {
				t.Fatalf("banner without pprof or HTTP line (pprof %q, http %q)", pprofURL, httpURL)
			}
			if code, body := get(pprofURL + "goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
				t.Errorf("pprof goroutine profile: %d %.200s", code, body)
			}
			if code, _ := get(httpURL + "/debug/pprof/"); code != http.StatusNotFound {
				t.Errorf("API listener serves /debug/pprof/: %d", code)
			}
			cancel()
		}
	}
	if code := <-done; code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestServePprofRefusesNonLoopback(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"serve", "--data-dir", t.TempDir(), "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off",
		"--http-addr", "127.0.0.1:0", "--pprof", "0.0.0.0:6060"}, io.Discard, &stderr, nil)
	if code == 0 || !strings.Contains(stderr.String(), "loopback only") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}
