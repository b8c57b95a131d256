// Package web is Umbra's operator dashboard: a small single-page app of
// plain ES modules and hand-written CSS, embedded in the binary and served
// under /ui/. There is no front-end build step: the files in static/ are
// what the browser gets, and `go build` needs nothing but Go.
//
// The dashboard talks only to the public HTTP API (the same routes the CLI
// and scripts use) and to the event stream, GET /api/events. It fetches
// nothing from any other origin.
//
// Caching: index.html is always revalidated; it loads every other file
// under /ui/v/<content hash>/, which is served as immutable, so a new
// binary is picked up on the next page load and an unchanged one costs one
// 304. Each response also carries a strong ETag.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/internal/api"
)

//go:embed static
var staticFS embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// contentTypes are set explicitly rather than from the host's MIME tables,
// which differ between machines (a .js served as text/plain breaks modules).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
}

// csp allows only this origin: no inline scripts, no inline style
// attributes, no third-party anything.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type handler struct {
	files   map[string]asset // by path below static/, e.g. "js/app.js"
	version string           // content hash of every file
	index   asset
}

// Handler serves the dashboard. Mount it at /ui/:
//
//	mux.Handle("/ui/", web.Handler())
func Handler() http.Handler {
	h, err := newHandler(staticFS)
	if err != nil {
		panic("web: " + err.Error()) // the embedded files are fixed at build time
	}
	return h
}

// Redirect sends / to the dashboard.
func Redirect() http.Handler { return http.RedirectHandler("/ui/", http.StatusFound) }

func newHandler(fsys fs.FS) (*handler, error) {
	root, err := fs.Sub(fsys, "static")
	if err != nil {
		return nil, err
	}
	h := &handler{files: map[string]asset{}}
	var names []string
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		ct := contentTypes[path.Ext(p)]
		if ct == "" {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(b)
		h.files[p] = asset{body: b, ctype: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		names = append(names, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	all := sha256.New()
	for _, n := range names {
		all.Write([]byte(n))
		all.Write([]byte(h.files[n].etag))
	}
	h.version = hex.EncodeToString(all.Sum(nil)[:6])
	idx, ok := h.files["index.html"]
	if !ok {
		return nil, fs.ErrNotExist
	}
	body := bytes.ReplaceAll(idx.body, []byte("{{V}}"), []byte("v/"+h.version))
	sum := sha256.Sum256(body)
	h.index = asset{body: body, ctype: idx.ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		api.MethodNotAllowed(w, r, "GET", "HEAD")
		return
	}
	p, ok := strings.CutPrefix(r.URL.Path, "/ui/")
	if !ok {
		api.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if p == "" || p == "index.html" {
		hdr.Set("Content-Security-Policy", csp)
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Cache-Control", "no-cache")
		h.serve(w, r, h.index)
		return
	}
	cache := "no-cache"
	if rest, ok := strings.CutPrefix(p, "v/"); ok {
		ver, file, found := strings.Cut(rest, "/")
		if !found {
			api.NotFound(w, r)
			return
		}
		p = file
		if ver == h.version {
			cache = "public, max-age=31536000, immutable"
		}
		// An older page asking for another version gets today's file,
		// uncached, rather than a broken page.
	}
	a, ok := h.files[p]
	if !ok || p == "index.html" {
		api.NotFound(w, r)
		return
	}
	hdr.Set("Cache-Control", cache)
	h.serve(w, r, a)
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request, a asset) {
	hdr := w.Header()
	hdr.Set("Content-Type", a.ctype)
	hdr.Set("ETag", a.etag) // ServeContent answers If-None-Match with 304
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
