package web

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func TestIndexAndVersionedAssets(t *testing.T) {
	h := Handler()
	w := get(t, h, "/ui/")
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /ui/: %d %s", w.Code, w.Header().Get("Content-Type"))
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("index Cache-Control = %q, want no-cache", cc)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("index CSP = %q", csp)
	}
	body := w.Body.String()
	if strings.Contains(body, "{{V}}") {
		t.Fatal("index.html still has the {{V}} placeholder")
	}
	// Every asset the index names is served, immutable, with its type.
	refs := regexp.MustCompile(`(?:href|src)="(v/[^"]+)"`).FindAllStringSubmatch(body, -1)
	if len(refs) < 3 {
		t.Fatalf("index names %d assets: %s", len(refs), body)
	}
	want := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	for _, m := range refs {
		path := "/ui/" + m[1]
		w := get(t, h, path)
		if w.Code != 200 {
			t.Errorf("GET %s: %d", path, w.Code)
			continue
		}
		ext := path[strings.LastIndex(path, "."):]
		if ct := w.Header().Get("Content-Type"); ct != want[ext] {
			t.Errorf("GET %s: Content-Type %q, want %q", path, ct, want[ext])
		}
		if cc := w.Header().Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("GET %s: Cache-Control %q", path, cc)
		}
		if w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
	}
}

func TestModulesResolve(t *testing.T) {
	// Every relative import in a module names an embedded file, so a typo
	// fails here rather than in a browser.
	h := Handler().(*handler)
	imp := regexp.MustCompile(`(?m)^import [^'"]*['"]\./([^'"]+)['"];`)
	for name, a := range h.files {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		dir := name[:strings.LastIndex(name, "/")+1]
		for _, m := range imp.FindAllStringSubmatch(string(a.body), -1) {
			if _, ok := h.files[dir+m[1]]; !ok {
				t.Errorf("%s imports ./%s, which is not embedded", name, m[1])
			}
		}
	}
}

func TestETagAndStaleVersion(t *testing.T) {
	h := Handler().(*handler)
	path := "/ui/v/" + h.version + "/style.css"
	w := get(t, h, path)
	etag := w.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if w := get(t, h, path, "If-None-Match", etag); w.Code != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", w.Code)
	}
	// A page from an older binary asking for its version gets today's
	// file, not cached for long.
	w = get(t, h, "/ui/v/000000000000/style.css")
	if w.Code != 200 || w.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("stale version: %d %q", w.Code, w.Header().Get("Cache-Control"))
	}
	if w := get(t, h, "/ui/style.css"); w.Code != 200 || w.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("unversioned asset: %d %q", w.Code, w.Header().Get("Cache-Control"))
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/ui/nope.js", "/ui/v/", "/ui/v/x", "/ui/v/abc/index.html", "/ui/../web.go"} {
		if w := get(t, h, p); w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
	}
	req := httptest.NewRequest("POST", "/ui/", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %d, want 405", w.Code)
	}
	if w := get(t, Redirect(), "/"); w.Code != http.StatusFound || w.Header().Get("Location") != "/ui/" {
		t.Errorf("redirect: %d %s", w.Code, w.Header().Get("Location"))
	}
}
