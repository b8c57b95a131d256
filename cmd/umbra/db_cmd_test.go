package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/store"
)

// umbra runs the CLI in-process (main's code path) and returns its exit
// code and output.
func umbra(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e, nil)
	return code, o.String(), e.String()
}

// fleetDB starts a broker on dir, writes n shadows through the HTTP API
// (enough for the shadows bucket to span several pages) and returns it
// running.
func fleetDB(t *testing.T, dir string, n int) *brokertest.Server {
	t.Helper()
	srv := brokertest.StartWith(t, brokertest.LoopbackOptions(dir))
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				body := fmt.Sprintf(`{"state":{"reported":{"fw":"1.%d","pad":"%s"}}}`, i, strings.Repeat("p", 100))
				resp, err := http.Post(fmt.Sprintf("%s/things/dev-%04d/shadow", srv.HTTPURL(), i), "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("update dev-%04d: %s", i, resp.Status)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return srv
}

func shadowStatus(t *testing.T, srv *brokertest.Server, thing string) int {
	t.Helper()
	resp, err := http.Get(srv.HTTPURL() + "/things/" + thing + "/shadow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// corruptShadowsRoot overwrites the page that holds the root of the
// shadows bucket with garbage.
func corruptShadowsRoot(t *testing.T, path string) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var pgid, size int64
	_ = b.View(func(tx *bolt.Tx) error {
		pgid = int64(tx.Bucket([]byte("shadows")).Root())
		size = int64(tx.DB().Info().PageSize)
		return nil
	})
	_ = b.Close()
	if pgid == 0 {
		t.Fatal("shadows bucket is inline")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5, 0x13, 0xFF, 0x00}, int(size/4)), pgid*size); err != nil {
		t.Fatal(err)
	}
}

// check, backup (online and offline), compact, and a restore from each
// copy: a broker started on the copy serves the shadows.
func TestDBCommands(t *testing.T) {
	dir := t.TempDir()
	out := t.TempDir()
	srv := fleetDB(t, dir, 300)

	// While the broker runs, the offline commands refuse and say why.
	code, _, stderr := umbra("db", "check", "--data-dir", dir)
	if code != 1 || !strings.Contains(stderr, "locked") || !strings.Contains(stderr, "umbra db backup --online") {
		t.Fatalf("check of a running broker's file: exit %d, %s", code, stderr)
	}
	online := filepath.Join(out, "online.db")
	code, stdout, stderr := umbra("db", "backup", "--online", "--server", srv.HTTPURL(), online)
	if code != 0 {
		t.Fatalf("online backup: exit %d: %s", code, stderr)
	}
	t.Log(strings.TrimSpace(stdout))
	if code, _, _ := umbra("db", "backup", "--online", "--server", srv.HTTPURL(), online); code == 0 {
		t.Fatal("online backup overwrote an existing file")
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr = umbra("db", "check", "--data-dir", dir)
	if code != 0 || !strings.Contains(stdout, "ok: no problems found") || !strings.Contains(stdout, "shadows") {
		t.Fatalf("check: exit %d\n%s%s", code, stdout, stderr)
	}
	offline := filepath.Join(out, "offline.db")
	if code, _, stderr := umbra("db", "backup", "--data-dir", dir, offline); code != 0 {
		t.Fatalf("offline backup: exit %d: %s", code, stderr)
	}
	compacted := filepath.Join(out, "compacted.db")
	code, stdout, stderr = umbra("db", "compact", "--data-dir", dir, compacted)
	if code != 0 {
		t.Fatalf("compact: exit %d: %s", code, stderr)
	}
	t.Log(strings.TrimSpace(stdout))

	for _, copy := range []string{online, offline, compacted} {
		restored := t.TempDir()
		if err := os.Rename(copy, filepath.Join(restored, store.FileName)); err != nil {
			t.Fatal(err)
		}
		if code, stdout, stderr := umbra("db", "check", "--data-dir", restored); code != 0 {
			t.Fatalf("check of %s: exit %d\n%s%s", filepath.Base(copy), code, stdout, stderr)
		}
		s := brokertest.StartWith(t, brokertest.LoopbackOptions(restored))
		for _, thing := range []string{"dev-0000", "dev-0299"} {
			if st := shadowStatus(t, s, thing); st != 200 {
				t.Fatalf("broker on %s: GET %s shadow: %d", filepath.Base(copy), thing, st)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// The issue: a corrupt database gave a Go panic trace at start-up. Now
// `umbra serve` (the real binary) exits 1 with an error naming the file and
// the recovery commands; check reports the damage and salvage copies what
// is readable. A 0-byte file is refused rather than started empty.
func TestDBCorruptAndEmptyFiles(t *testing.T) {
	bin := buildUmbra(t)
	made := t.TempDir()
	srv := fleetDB(t, made, 300)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// Damage a copy: the test server's own file must stay sound for the
	// consistency check brokertest runs when the test ends.
	dir := t.TempDir()
	path := filepath.Join(dir, store.FileName)
	data, err := os.ReadFile(filepath.Join(made, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	corruptShadowsRoot(t, path)

	cmd := exec.Command(bin, "serve", "--data-dir", dir, "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", "127.0.0.1:0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	msg := stderr.String()
	t.Logf("umbra serve on a corrupt file: %v\n%s", err, msg)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1", err)
	}
	for _, want := range []string{"corrupt", path, "umbra db check --data-dir " + dir, "umbra db salvage"} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	for _, bad := range []string{"panic", "goroutine "} {
		if strings.Contains(msg, bad) {
			t.Errorf("stderr has %q: a crash, not an error", bad)
		}
	}

	code, stdout, _ := umbra("db", "check", "--data-dir", dir)
	if code != 1 || !strings.Contains(stdout, "PROBLEM:") {
		t.Fatalf("check of a corrupt file: exit %d\n%s", code, stdout)
	}
	salvaged := filepath.Join(t.TempDir(), "salvaged.db")
	code, stdout, stderr2 := umbra("db", "salvage", "--data-dir", dir, salvaged)
	if code != 0 || !strings.Contains(stdout, "LOST: bucket shadows") {
		t.Fatalf("salvage: exit %d\n%s%s", code, stdout, stderr2)
	}
	rep, err := store.Check(salvaged)
	if err != nil || !rep.OK() {
		t.Fatalf("salvaged file: %+v %v", rep, err)
	}

	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, store.FileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := umbra("serve", "--data-dir", empty, "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off", "--http-addr", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errOut, "empty (0 bytes)") || !strings.Contains(errOut, filepath.Join(empty, store.FileName)) {
		t.Fatalf("serve on a 0-byte file: exit %d: %s", code, errOut)
	}
	if fi, err := os.Stat(filepath.Join(empty, store.FileName)); err != nil || fi.Size() != 0 {
		t.Fatalf("the 0-byte file was changed: %v %v", fi, err)
	}
}
