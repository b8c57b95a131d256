package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/sim"
)

// The README's "OTA end to end" block, verbatim, in sh with the umbra
// binary built from this tree, against an in-process Umbra: the pushed
// image is rolled out in two waves, every simulated device downloads it
// from Umbra, verifies its SHA-256 and reports 1.1.0.
func TestREADMEOTAEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a rollout with real downloads on a simulated fleet")
	}
	run := runREADMEBlock(t, "TestREADMEOTAEndToEnd", 4*time.Minute, "", "awk", "head", "tail")
	srv, dir := run.srv, run.dir

	img, err := os.ReadFile(filepath.Join(dir, "fw-1.1.0.bin"))
	if err != nil || len(img) != 1_500_000 {
		t.Fatalf("the block's image: %d bytes, %v", len(img), err)
	}
	sum := sha256.Sum256(img)
	want := hex.EncodeToString(sum[:])
	text := run.out
	for _, s := range []string{"state completed", fmt.Sprintf("%s  20", want), "20 images verified"} {
		if !strings.Contains(text, s) {
			t.Errorf("the block's output lacks %q", s)
		}
	}
	for i := range 20 {
		id := fmt.Sprintf(sim.DefaultIDPattern, i)
		desired, reported := shadowOf(t, srv, id)
		if reported["firmware_version"] != "1.1.0" || reported["ota_sha256"] != want || reported["ota_status"] != "succeeded" {
			t.Errorf("%s reported %v", id, reported)
		}
		if _, ok := desired["ota_url"]; ok {
			t.Errorf("%s: desired ota_url not converged: %v", id, desired)
		}
	}
	// Umbra served the image (every device downloaded all of it).
	resp, err := http.Get(srv.HTTPURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), "umbra_artifact_downloads_total 20\n") {
		t.Errorf("metrics: %s", grepPrefix(string(m), "umbra_artifact"))
	}
}

func grepPrefix(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
