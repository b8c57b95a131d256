package api

import (
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// Browser protection: Umbra's API is meant for its own dashboard (same
// origin), the CLI and scripts (no Origin header), never for pages of other
// sites. A browser lets any page send a "simple" cross-site request (a
// text/plain or form POST needs no CORS preflight), so without these checks
// any page open on the operator's machine could write through a loopback
// broker whose authentication is off.

// ProtectOptions configures Protect.
type ProtectOptions struct {
	// TrustedOrigins ("https://app.example.com") may write cross-origin.
	// "*" trusts every origin, which turns the cross-origin check off.
	TrustedOrigins []string
	// OnRefuse, when set, is called with the reason ("cross_origin" or
	// "content_type") of every refused request (for metrics).
	OnRefuse func(reason string)
}

// Protect wraps h with two checks on unsafe methods (POST, PUT, PATCH,
// DELETE):
//
//   - cross-origin requests from browsers are refused with 403: a request
//     whose Sec-Fetch-Site is neither same-origin nor none, or (browsers
//     without it) whose Origin is not the Host it was sent to, unless the
//     origin is trusted. Requests with neither header (curl, the CLI, SDKs)
//     pass, as net/http's CrossOriginProtection does;
//   - a request with a body must declare a JSON Content-Type
//     (application/json or any +json type) or get 415. The AWS data-plane
//     shadow routes (/things/...) also take application/octet-stream,
//     which AWS SDKs send for the shadow document; a browser cannot send
//     that type cross-site without a preflight, which Umbra never answers.
func Protect(h http.Handler, o ProtectOptions) (http.Handler, error) {
	cop := http.NewCrossOriginProtection()
	anyOrigin := false
	for _, origin := range o.TrustedOrigins {
		if origin == "*" {
			anyOrigin = true
			continue
		}
		if err := cop.AddTrustedOrigin(origin); err != nil {
			return nil, fmt.Errorf("allowed origin %q: %w (want scheme://host[:port])", origin, err)
		}
	}
	refuse := func(reason string) {
		if o.OnRefuse != nil {
			o.OnRefuse(reason)
		}
	}
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse("cross_origin")
		WriteError(w, Errorf(http.StatusForbidden, "",
			"Forbidden: cross-origin request refused (Origin %q, Sec-Fetch-Site %q, Host %q): pages of another origin may not write "+
				"through this API; add the origin to http.allowed_origins to allow it",
			r.Header.Get("Origin"), r.Header.Get("Sec-Fetch-Site"), r.Host))
	}))
	checkType := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if msg := contentTypeProblem(r); msg != "" {
			refuse("content_type")
			WriteError(w, &Error{Code: http.StatusUnsupportedMediaType, Message: msg})
			return
		}
		h.ServeHTTP(w, r)
	})
	if anyOrigin {
		return checkType, nil
	}
	return cop.Handler(checkType), nil
}

// contentTypeProblem explains why r's body may not be taken ("" if it may).
func contentTypeProblem(r *http.Request) string {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return ""
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return ""
	}
	raw := r.Header.Get("Content-Type")
	if raw == "" {
		return "Unsupported Media Type: a request with a body needs 'Content-Type: application/json'"
	}
	mt, _, err := mime.ParseMediaType(raw)
	if err != nil {
		return fmt.Sprintf("Unsupported Media Type: Content-Type %q does not parse; send 'Content-Type: application/json'", raw)
	}
	if mt == "application/json" || strings.HasSuffix(mt, "+json") {
		return ""
	}
	if mt == "application/octet-stream" && strings.HasPrefix(r.URL.Path, "/things/") {
		return ""
	}
	// Firmware uploads are the image's bytes (same preflight argument).
	if mt == "application/octet-stream" && r.URL.Path == "/api/artifacts" {
		return ""
	}
	return fmt.Sprintf("Unsupported Media Type: Content-Type %q; the API takes 'Content-Type: application/json'", mt)
}
