package release_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

const modulePath = "github.com/umbra-iot/umbra"

// version is what the test proxy serves the working tree as.
const version = "v0.99.0"

// TestModuleFromAProxy serves this working tree from a file:// module proxy,
// as the Go module proxy would serve a tagged release, then
//   - installs the CLI with `go install github.com/umbra-iot/umbra/cmd/umbra@v0.99.0`
//     (a replace directive in go.mod, or a fork in a directory with its own
//     go.mod, which the module zip leaves out, makes this fail), and
//   - builds and runs a program in another module that embeds the broker and
//     checks the behaviour of Mochi patch 4 (testdata/embedder), so an
//     embedder is shown to get the patched Mochi.
//
// Dependencies come from the local module cache (served as a second file://
// proxy) into a module cache of the test's own, so the test needs no network
// beyond what building Umbra needed.
func TestModuleFromAProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Umbra twice from a module proxy")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	proxy := filepath.Join(tmp, "proxy")
	serveModule(t, root, proxy)

	modcache := goEnv(t, "GOMODCACHE")
	env := append(os.Environ(),
		"GOPROXY=file://"+filepath.ToSlash(proxy)+",file://"+filepath.ToSlash(filepath.Join(modcache, "cache", "download")),
		// A module cache of its own: the shared one would keep the first
		// v0.99.0 it saw and never look at this tree again.
		"GOMODCACHE="+filepath.Join(tmp, "modcache"), "GOFLAGS=-modcacherw",
		"GOSUMDB=off", "GOWORK=off", "GOTOOLCHAIN=local",
		"GOBIN="+filepath.Join(tmp, "bin"),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	goCmd := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// 1. go install from the proxy.
	goCmd(tmp, "install", modulePath+"/cmd/umbra@"+version)
	bin := filepath.Join(tmp, "bin", "umbra")
	out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "umbra ") {
		t.Fatalf("installed umbra version: %v %q", err, out)
	}
	deps := goCmd(tmp, "version", "-m", bin)
	if strings.Contains(deps, "github.com/mochi-mqtt/server") {
		t.Fatalf("the installed binary links upstream Mochi:\n%s", deps)
	}
	if !strings.Contains(deps, "mod\t"+modulePath+"\t"+version) {
		t.Fatalf("the installed binary is not %s %s:\n%s", modulePath, version, deps)
	}

	// 2. An embedder in another module gets the patched Mochi.
	emb := filepath.Join(tmp, "embedder")
	src, err := os.ReadFile("testdata/embedder/main.go")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(emb, "main.go"), src)
	writeFile(t, filepath.Join(emb, "go.mod"), []byte("module example.com/embedder\n\ngo 1.26\n\nrequire "+modulePath+" "+version+"\n"))
	goCmd(emb, "mod", "tidy")
	goCmd(emb, "build", "-o", "embedder", ".")
	run := exec.CommandContext(ctx, filepath.Join(emb, "embedder"))
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("embedder: %v\n%s", err, out)
	} else {
		t.Logf("embedder: %s", bytes.TrimSpace(out))
	}
}

// serveModule lays out a file:// GOPROXY serving the module in root at
// version: @v/list, .info, .mod and the module zip (built the way the proxy
// builds it, which leaves out nested modules and VCS directories).
func serveModule(t *testing.T, root, proxy string) {
	t.Helper()
	dir := filepath.Join(proxy, filepath.FromSlash(modulePath), "@v")
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := json.Marshal(map[string]any{"Version": version, "Time": time.Now().UTC().Format(time.RFC3339)})
	writeFile(t, filepath.Join(dir, "list"), []byte(version+"\n"))
	writeFile(t, filepath.Join(dir, version+".info"), info)
	writeFile(t, filepath.Join(dir, version+".mod"), gomod)
	f, err := os.Create(filepath.Join(dir, version+".zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := zip.CreateFromDir(f, module.Version{Path: modulePath, Version: version}, root); err != nil {
		t.Fatalf("module zip: %v", err)
	}
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
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
