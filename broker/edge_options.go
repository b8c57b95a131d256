package broker

import "time"

// HTTPOptions hardens the HTTP listener (REST API, dashboard, /healthz,
// /readyz, /metrics). Zero fields take the defaults below; a negative
// duration or count turns that bound off.
type HTTPOptions struct {
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included: a body
	// trickled in slower than this is cut off. Default 30s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response. The event stream
	// (GET /api/events) is exempt: each of its writes has this long
	// instead. Default 30s.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request for this
	// long. Default 60s.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers. Default 64 KiB.
	MaxHeaderBytes int
	// MaxConnsPerIP caps concurrent HTTP connections from one source
	// address; more are answered 429 and closed. Default 128.
	MaxConnsPerIP int
}

// HTTP defaults.
const (
	DefaultHTTPReadHeaderTimeout = 10 * time.Second
	DefaultHTTPReadTimeout       = 30 * time.Second
	DefaultHTTPWriteTimeout      = 30 * time.Second
	DefaultHTTPIdleTimeout       = 60 * time.Second
	DefaultHTTPMaxHeaderBytes    = 64 << 10
	DefaultHTTPMaxConnsPerIP     = 128
)
