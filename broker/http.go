package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	bbolt "go.etcd.io/bbolt"

	"github.com/umbra-iot/umbra/internal/api"
	"github.com/umbra-iot/umbra/internal/limits"
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
	// Browser protection (cross-origin writes, JSON bodies), before any
	// route; the options were validated in New.
	protect := api.ProtectOptions{
		TrustedOrigins: b.opts.AllowedOrigins,
		OnRefuse:       func(reason string) { b.edge.httpRefused.WithLabelValues(reason).Inc() },
	}
	// Unknown routes and wrong methods are JSON errors like every other.
	routes := api.Routes(mux)
	handler, err := api.Protect(routes, protect)
	if err != nil { // not reached: validated in New; trust no other origin
		protect.TrustedOrigins = nil
		handler, _ = api.Protect(routes, protect)
	}
	h := b.opts.HTTP
	b.httpSrv = &http.Server{
		Handler: handler,
		// An idle keep-alive connection, a client that never finishes its
		// headers or trickles its body are closed (see HTTPOptions); the
		// event stream lifts the read and write bounds for itself.
		ReadHeaderTimeout: off(h.ReadHeaderTimeout),
		ReadTimeout:       off(h.ReadTimeout),
		WriteTimeout:      off(h.WriteTimeout),
		IdleTimeout:       off(h.IdleTimeout),
		MaxHeaderBytes:    off(h.MaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
		// With TLS configured the API is HTTPS too: API keys and device
		// secrets must not cross the network in clear text.
		TLSConfig: b.tlsConf,
	}
	// Long-lived responses (the event stream) end when Shutdown starts;
	// ordinary requests in flight are drained (their writes complete).
	b.httpSrv.RegisterOnShutdown(b.stopStreams)
	ln := b.httpLn
	if h.MaxConnsPerIP > 0 {
		ln = &capListener{Listener: ln, limit: &limits.Conns{Max: h.MaxConnsPerIP}, tls: b.tlsConf != nil, log: b.log,
			refused: func() { b.edge.httpRefused.WithLabelValues("conns_per_ip").Inc() }}
		// A connection's last request frees its slot with its response.
		b.httpSrv.Handler, b.httpSrv.ConnContext = releaseLastConn(b.httpSrv.Handler), capConnContext
	}
	if b.tlsConf != nil {
		ln = tls.NewListener(ln, b.tlsConf)
	}
	b.bg.Go("http server", func(context.Context) { // ends with httpSrv.Shutdown
		if err := b.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error("http listener stopped", "error", err)
		}
	})
}

func (b *Broker) metricsHandler() http.Handler {
	return promhttp.HandlerFor(b.metrics.reg, promhttp.HandlerOpts{Registry: b.metrics.reg})
}

// healthz is liveness: 200 while the process runs and can read its
// database. It stays 200 while commits fail (a full disk) or a listener
// cannot accept: restarting would not help; /readyz reports those.
func (b *Broker) healthz(w http.ResponseWriter, r *http.Request) {
	if b.db.View(func(*bbolt.Tx) error { return nil }) != nil {
		api.WriteError(w, api.Errorf(http.StatusServiceUnavailable, "", "Service Unavailable: database unavailable"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// readyz answers 200 while the broker can take work; 503, with one line per
// reason, while it shuts down, while a listener cannot accept connections
// (or has stopped), or while the store cannot commit.
func (b *Broker) readyz(w http.ResponseWriter, r *http.Request) {
	if problems := b.notReady(); len(problems) > 0 {
		writeNotReady(w, problems)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}
