package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	bbolt "go.etcd.io/bbolt"
)

// serveHTTP starts the HTTP listener: health, readiness, metrics, and the
// API routes registered by routes.
func (b *Broker) serveHTTP() {
	if b.httpLn == nil {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", b.healthz)
	mux.HandleFunc("GET /readyz", b.readyz)
	b.routes(mux)
	b.httpSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
		// With TLS configured the API is HTTPS too: API keys and device
		// secrets must not cross the network in clear text.
		TLSConfig: b.tlsConf,
	}
	// Long-lived responses (the event stream) end when Shutdown starts;
	// ordinary requests in flight are drained (their writes complete).
	b.httpSrv.RegisterOnShutdown(b.stopStreams)
	ln := b.httpLn
	if b.tlsConf != nil {
		ln = tls.NewListener(ln, b.tlsConf)
	}
	b.httpDone = make(chan struct{})
	go func() {
		defer close(b.httpDone)
		if err := b.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error("http listener stopped", "error", err)
		}
	}()
}

func (b *Broker) metricsHandler() http.Handler {
	return promhttp.HandlerFor(b.metrics.reg, promhttp.HandlerOpts{Registry: b.metrics.reg})
}

// healthz answers 200 while the process can read its database.
func (b *Broker) healthz(w http.ResponseWriter, r *http.Request) {
	if b.db.View(func(*bbolt.Tx) error { return nil }) != nil {
		http.Error(w, "database unavailable\n", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// readyz answers 200 while the broker accepts work, 503 once shutting down.
func (b *Broker) readyz(w http.ResponseWriter, r *http.Request) {
	if b.shuttingDown.Load() {
		http.Error(w, "shutting down\n", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}
