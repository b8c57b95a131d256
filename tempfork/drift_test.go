package tempfork_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"go/format"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The import path the fork's packages had upstream and have here.
const (
	upstreamImport = "github.com/mochi-mqtt/server/v2"
	forkImport     = "github.com/umbra-iot/umbra/tempfork/mochi"
)

// record is mochi.upstream: which release, which directories, which files
// are Umbra's own.
type record struct {
	module string // path@version
	keep   []string
	own    []string
}

func readRecord(t *testing.T) record {
	t.Helper()
	f, err := os.Open("mochi.upstream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		switch key {
		case "module":
			r.module = val
		case "keep":
			r.keep = append(r.keep, val)
		case "own":
			r.own = append(r.own, val)
		default:
			t.Fatalf("mochi.upstream: unknown line %q", line)
		}
	}
	if r.module == "" || len(r.keep) == 0 {
		t.Fatal("mochi.upstream: needs a module line and keep lines")
	}
	return r
}

// upstreamDir downloads the release through the module proxy (or finds it
// in the module cache) and returns its directory.
func upstreamDir(t *testing.T, module string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = t.TempDir() // outside any module: a plain download
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.Output()
	var dl struct{ Dir, Error string }
	_ = json.Unmarshal(out, &dl)
	if err != nil || dl.Dir == "" {
		msg := dl.Error
		if msg == "" {
			msg = err.Error()
		}
		if os.Getenv("CI") == "" {
			t.Skipf("cannot fetch %s to compare the fork with (%s); CI runs this check", module, msg)
		}
		t.Fatalf("go mod download %s: %s", module, msg)
	}
	return dl.Dir
}

// copyUpstream writes the kept upstream files into dst with the imports
// rewritten (and gofmt-sorted), which is what the fork was before Umbra's patch.
func copyUpstream(t *testing.T, src, dst string, keep []string) {
	t.Helper()
	for _, dir := range keep {
		entries, err := os.ReadDir(filepath.Join(src, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || !(strings.HasSuffix(name, ".go") || (dir == "." && name == "LICENSE.md")) {
				continue
			}
			data, err := os.ReadFile(filepath.Join(src, dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(name, ".go") {
				data = bytes.ReplaceAll(data, []byte(`"`+upstreamImport), []byte(`"`+forkImport))
				// gofmt sorts the rewritten imports; the patch then holds
				// only Umbra's changes.
				if data, err = format.Source(data); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
			writeFile(t, filepath.Join(dst, dir, name), data)
		}
	}
}

// copyFork copies the fork as it is in the tree, without Umbra's own files.
func copyFork(t *testing.T, dst string, own []string) {
	t.Helper()
	err := filepath.WalkDir("mochi", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel("mochi", p)
		if slices.Contains(own, filepath.ToSlash(rel)) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		writeFile(t, filepath.Join(dst, rel), data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func git(t *testing.T, dir string, args ...string) ([]byte, error) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is needed to apply mochi.patch")
	}
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && stderr.Len() > 0 {
		err = errors.New(strings.TrimSpace(stderr.String()))
	}
	return out, err
}

// TestForkMatchesUpstreamPlusPatch: tempfork/mochi is exactly the upstream
// release named in mochi.upstream, imports rewritten, plus mochi.patch. A
// change to the fork that is not in the patch (or a patch that no longer
// applies) fails here, so the record of what Umbra changed in Mochi stays
// true and an upgrade is "fetch the new release, apply the patch".
func TestForkMatchesUpstreamPlusPatch(t *testing.T) {
	rec := readRecord(t)
	src := upstreamDir(t, rec.module)
	work := t.TempDir()
	want, have := filepath.Join(work, "a"), filepath.Join(work, "b")
	copyUpstream(t, src, want, rec.keep)
	copyFork(t, have, rec.own)

	if os.Getenv("UMBRA_TEMPFORK_UPDATE") != "" {
		out, err := git(t, work, "diff", "--no-index", "--no-color", "a", "b")
		var exit *exec.ExitError
		if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
			t.Fatalf("git diff: %v", err)
		}
		if err := os.WriteFile("mochi.patch", out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote mochi.patch (%d bytes)", len(out))
	}

	patch, err := filepath.Abs("mochi.patch")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := git(t, want, "apply", "--whitespace=nowarn", "-p2", patch); err != nil {
		t.Fatalf("mochi.patch does not apply to %s: %v", rec.module, err)
	}
	out, err := git(t, work, "diff", "--no-index", "--stat", "a", "b")
	if err != nil || len(out) > 0 {
		t.Fatalf("tempfork/mochi differs from %s + mochi.patch:\n%s\n"+
			"If the change is intended, describe it in mochi/UMBRA-PATCHES.md and run\n"+
			"  UMBRA_TEMPFORK_UPDATE=1 go test ./tempfork -run TestForkMatchesUpstreamPlusPatch", rec.module, out)
	}
}
