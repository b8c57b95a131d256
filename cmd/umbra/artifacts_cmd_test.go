package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/umbra-iot/umbra/brokertest"
)

// umbra artifacts push|ls|get|url|rm against a real server: the pushed
// image is served back byte for byte from the device URL, a Range request
// gets its slice, and rm refuses while a rollout references it.
func TestArtifactsCLI(t *testing.T) {
	bin := buildUmbra(t)
	srv := brokertest.Start(t)
	r := &cliRunner{t: t, bin: bin, home: t.TempDir(), srv: srv.HTTPURL()}
	img := make([]byte, 200_000)
	_, _ = rand.Read(img)
	fw := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(fw, img, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	id := hex.EncodeToString(sum[:])

	out := r.ok("artifacts", "push", fw, "--version", "1.2.0", "--type", "esp32")
	if !strings.Contains(out, id[:12]) || !strings.Contains(out, "1.2.0") || !strings.Contains(out, "200000") {
		t.Fatalf("push: %s", out)
	}
	if _, errs, code := r.run("artifacts", "push", fw, "--type", "esp32"); code != 2 || !strings.Contains(errs, "--version and --type are required") {
		t.Fatalf("push without version: exit %d %s", code, errs)
	}
	// Another image under the same version: the server's 409, exit 1.
	other := filepath.Join(t.TempDir(), "other.bin")
	_ = os.WriteFile(other, []byte("another image"), 0o600)
	if _, errs, code := r.run("artifacts", "push", other, "--version", "1.2.0", "--type", "esp32"); code != 1 || !strings.Contains(errs, "already another image") {
		t.Fatalf("conflicting push: exit %d %s", code, errs)
	}
	if out := r.ok("artifacts", "ls"); !strings.Contains(out, id[:12]) {
		t.Fatalf("ls: %s", out)
	}
	if out := r.ok("artifacts", "get", "esp32@1.2.0"); !strings.Contains(out, id) {
		t.Fatalf("get: %s", out)
	}
	u := strings.TrimSpace(r.ok("artifacts", "url", "esp32@1.2.0", "--thing", "dev-1"))
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, img) {
		t.Fatalf("download: HTTP %d, %d bytes", resp.StatusCode, len(got))
	}

	r.ok("things", "create", "dev-1")
	spec := filepath.Join(t.TempDir(), "spec.json")
	_ = os.WriteFile(spec, []byte(`{"name":"fw","target":"*","artifact":"esp32@1.2.0","waves":[{"name":"all","percent":100}]}`), 0o600)
	r.ok("rollouts", "create", "-f", spec)
	if _, errs, code := r.run("artifacts", "rm", "esp32@1.2.0"); code != 1 || !strings.Contains(errs, "is referenced by rollout") {
		t.Fatalf("rm while referenced: exit %d %s", code, errs)
	}
}
