package api

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/umbra-iot/umbra/internal/artifact"
	"github.com/umbra-iot/umbra/internal/auth"
)

// ArtifactAPI serves firmware artifacts: upload, list, show and delete for
// operators (/api/artifacts), and downloads for devices (/firmware/{id},
// authorised by the token in the URL their desired state carries).
type ArtifactAPI struct {
	Artifacts *artifact.Service
	Guard     *Guard
	// URL is thing's download URL for artifact id (absolute, with token).
	URL func(id, thing string) string
	// ReadTimeout and WriteTimeout bound each read of an upload and each
	// write of a download (a slow link may take longer in all, as long as
	// it keeps moving). Zero: no bound.
	ReadTimeout, WriteTimeout time.Duration
	// ClientCert, when set, names the thing whose verified client
	// certificate (HTTPS listener) made r: "" when none was presented, an
	// error when the certificate may not be used (revoked). A device with
	// a certificate needs no token.
	ClientCert func(r *http.Request) (thing string, err error)
	// Served, when set, is told of every download answer: its status and
	// the content bytes written, and whether it delivered the image's last
	// byte (a download completed, possibly after earlier ranges).
	Served func(status int, bytes int64, completed bool)
}

// Register adds the routes to mux.
func (a *ArtifactAPI) Register(mux *http.ServeMux) {
	g := a.Guard
	mux.HandleFunc("POST /api/artifacts", g.Require(auth.RoleOperator, a.upload))
	mux.HandleFunc("GET /api/artifacts", g.Require(auth.RoleViewer, a.list))
	mux.HandleFunc("GET /api/artifacts/{id}", g.Require(auth.RoleViewer, a.get))
	mux.HandleFunc("DELETE /api/artifacts/{id}", g.Require(auth.RoleOperator, a.delete))
	mux.HandleFunc("GET /api/artifacts/{id}/content", g.Require(auth.RoleViewer, a.content))
	mux.HandleFunc("GET /api/artifacts/{id}/signature", g.Require(auth.RoleViewer, a.signature))
	mux.HandleFunc("POST /api/artifacts/{id}/url", g.Require(auth.RoleOperator, a.deviceURL))
	mux.Handle("GET /firmware/{id}", HandlerFunc(a.deviceDownload))
	mux.Handle("GET /firmware/{id}/signature", HandlerFunc(a.deviceSignature))
}

// artifactErr maps the artifact store's errors to API errors.
func artifactErr(err error) error {
	var ie *artifact.InvalidError
	switch {
	case errors.As(err, &ie):
		status := 400
		if ie.Field == "size" && ie.Msg != "the image is empty" {
			status = 413
		}
		return Errorf(status, ie.Field, "%s", ie.Msg)
	case errors.Is(err, artifact.ErrNotFound):
		return Errorf(404, "", "%s", err.Error())
	case errors.Is(err, artifact.ErrInUse), errors.Is(err, artifact.ErrExists):
		return Errorf(409, "", "%s", err.Error())
	case errors.Is(err, artifact.ErrToken):
		return Errorf(403, "", "%s", err.Error())
	default:
		return err // WriteError: 500 without the detail
	}
}

// deadlineReader extends the read deadline before every read of a body.
type deadlineReader struct {
	r  io.Reader
	rc *http.ResponseController
	d  time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if d.d > 0 {
		_ = d.rc.SetReadDeadline(time.Now().Add(d.d))
	}
	return d.r.Read(p)
}

// upload: POST /api/artifacts?version=1.2.0&type=esp32 with the image as
// an application/octet-stream body; X-Umbra-SHA256 (hex) declares the
// digest, X-Umbra-Signature (base64) the signature over it.
func (a *ArtifactAPI) upload(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	u := artifact.Upload{Version: q.Get("version"), Type: q.Get("type"), Uploader: Principal(r), SHA256: r.Header.Get("X-Umbra-SHA256")}
	if s := r.Header.Get("X-Umbra-Signature"); s != "" {
		sig, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return Errorf(400, "signature", "X-Umbra-Signature is not base64: %v", err)
		}
		u.Signature = sig
	}
	body := &deadlineReader{r: r.Body, rc: http.NewResponseController(w), d: a.ReadTimeout}
	art, created, err := a.Artifacts.Put(r.Context(), body, u)
	if err != nil {
		return artifactErr(err)
	}
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	w.Header().Set("Location", "/api/artifacts/"+art.ID)
	writeJSON(w, status, art)
	return nil
}

func (a *ArtifactAPI) list(w http.ResponseWriter, r *http.Request) error {
	all, err := a.Artifacts.List()
	if err != nil {
		return artifactErr(err)
	}
	writeJSON(w, 200, map[string]any{"artifacts": all})
	return nil
}

func (a *ArtifactAPI) get(w http.ResponseWriter, r *http.Request) error {
	art, err := a.Artifacts.Get(r.PathValue("id"))
	if err != nil {
		return artifactErr(err)
	}
	writeJSON(w, 200, art)
	return nil
}

func (a *ArtifactAPI) delete(w http.ResponseWriter, r *http.Request) error {
	if _, err := a.Artifacts.Delete(r.Context(), r.PathValue("id")); err != nil {
		return artifactErr(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *ArtifactAPI) deviceURL(w http.ResponseWriter, r *http.Request) error {
	thing := r.URL.Query().Get("thing")
	if thing == "" {
		return Errorf(400, "thing", "give the thing the URL is for: ?thing=NAME")
	}
	art, err := a.Artifacts.Get(r.PathValue("id"))
	if err != nil {
		return artifactErr(err)
	}
	writeJSON(w, 200, map[string]any{"url": a.URL(art.ID, thing), "artifact": art})
	return nil
}

func (a *ArtifactAPI) content(w http.ResponseWriter, r *http.Request) error {
	return a.serve(w, r, r.PathValue("id"))
}

// deviceDownload serves /firmware/{id}?thing=T&expires=E&token=H.
func (a *ArtifactAPI) deviceDownload(w http.ResponseWriter, r *http.Request) error {
	if err := a.authorize(r); err != nil {
		return err
	}
	return a.serve(w, r, r.PathValue("id"))
}

func (a *ArtifactAPI) authorize(r *http.Request) error {
	q := r.URL.Query()
	id := r.PathValue("id")
	err := a.certAuthorize(r)
	if errors.Is(err, errNoCert) {
		err = a.Artifacts.Authorize(id, q.Get("thing"), q.Get("expires"), q.Get("token"))
	}
	if err != nil {
		if a.Served != nil {
			a.Served(http.StatusForbidden, 0, false)
		}
		return artifactErr(err)
	}
	return nil
}

var errNoCert = errors.New("no client certificate")

// certAuthorize checks a device's client certificate: errNoCert when it
// presented none (the token decides).
func (a *ArtifactAPI) certAuthorize(r *http.Request) error {
	if a.ClientCert == nil {
		return errNoCert
	}
	thing, err := a.ClientCert(r)
	if err != nil {
		return fmt.Errorf("%w: %v", artifact.ErrToken, err)
	}
	if thing == "" {
		return errNoCert
	}
	if q := r.URL.Query().Get("thing"); q != "" && q != thing {
		return fmt.Errorf("%w: the URL is for thing %q, the client certificate of %q", artifact.ErrToken, q, thing)
	}
	return nil
}

func (a *ArtifactAPI) signature(w http.ResponseWriter, r *http.Request) error {
	return a.serveSignature(w, r.PathValue("id"))
}

func (a *ArtifactAPI) deviceSignature(w http.ResponseWriter, r *http.Request) error {
	if err := a.authorize(r); err != nil {
		return err
	}
	return a.serveSignature(w, r.PathValue("id"))
}

func (a *ArtifactAPI) serveSignature(w http.ResponseWriter, id string) error {
	art, err := a.Artifacts.Get(id)
	if err != nil {
		return artifactErr(err)
	}
	if len(art.Signature) == 0 {
		return Errorf(404, "", "artifact %s was uploaded without a signature", art.ID)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Umbra-Signature-Algorithm", art.SigAlg)
	w.Header().Set("Content-Length", strconv.Itoa(len(art.Signature)))
	_, _ = w.Write(art.Signature)
	return nil
}

// countingWriter counts the bytes written and extends the write deadline
// before each write.
type countingWriter struct {
	http.ResponseWriter
	rc     *http.ResponseController
	d      time.Duration
	n      int64
	status int
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = 200
	}
	if c.d > 0 {
		_ = c.rc.SetWriteDeadline(time.Now().Add(c.d))
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// serve answers with the image: Range (206, 416), If-Range, ETag (the
// SHA-256) and If-None-Match (304), Last-Modified, Content-Length, HEAD
// (http.ServeContent).
func (a *ArtifactAPI) serve(w http.ResponseWriter, r *http.Request, id string) error {
	f, art, err := a.Artifacts.Open(id)
	if err != nil {
		return artifactErr(err)
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+art.SHA256+`"`)
	h.Set("Cache-Control", "private, no-transform")
	h.Set("X-Umbra-SHA256", art.SHA256)
	h.Set("X-Umbra-Version", art.Version)
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.bin"`, art.Type, art.Version))
	cw := &countingWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: a.WriteTimeout}
	// A seek to the range's start then n bytes: the download reached the
	// image's end when start+n == size.
	tr := &trackingFile{f: f}
	http.ServeContent(cw, r, "", time.UnixMilli(art.UploadedAt), tr)
	if a.Served != nil && r.Method != http.MethodHead {
		status := cw.status
		if status == 0 {
			status = 200
		}
		cl, _ := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
		content := status == 200 || status == 206
		done := content && tr.maxEnd == art.Size && cw.n > 0 && cw.n == cl
		if !content {
			cw.n = 0 // an error text, not the image
		}
		a.Served(status, cw.n, done)
	}
	return nil
}

// trackingFile notes the furthest offset read.
type trackingFile struct {
	f      io.ReadSeeker
	pos    int64
	maxEnd int64
}

func (t *trackingFile) Read(p []byte) (int, error) {
	n, err := t.f.Read(p)
	t.pos += int64(n)
	t.maxEnd = max(t.maxEnd, t.pos)
	return n, err
}

func (t *trackingFile) Seek(off int64, whence int) (int64, error) {
	p, err := t.f.Seek(off, whence)
	if err == nil {
		t.pos = p
	}
	return p, err
}
