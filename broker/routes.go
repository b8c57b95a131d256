package broker

import (
	"net/http"

	"github.com/umbra-iot/umbra/internal/api"
	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/web"
)

// routes registers the REST API on the HTTP listener.
func (b *Broker) routes(mux *http.ServeMux) {
	guard := &api.Guard{}
	if b.opts.Auth.Enabled {
		guard.Keys = b.policy
	}
	guard.Register(mux)
	(&api.ShadowAPI{Shadows: b.shadows, Lister: b.shadowLister(), Guard: guard}).Register(mux)
	(&api.CredentialsAPI{Credentials: deviceCredentials{b}, Guard: guard}).Register(mux)
	(&api.RegistryAPI{Registry: b.registry, Shadows: b.shadows, Guard: guard}).Register(mux)
	ra := &api.RolloutAPI{Engine: b.rollouts, Guard: guard}
	if b.engineLease != nil {
		ra.Forward = b.forwardEngine // cluster_engine.go
	}
	ra.Register(mux)
	b.registerCluster(mux, guard)
	deny, _ := auth.ParseDenyList(b.opts.Auth.DeniedCertificates) // validated in New
	(&api.ArtifactAPI{Artifacts: b.artifacts, Guard: guard, URL: rolloutArtifacts{b}.URL,
		ReadTimeout: off(b.opts.HTTP.ReadTimeout), WriteTimeout: off(b.opts.HTTP.WriteTimeout),
		Served: newArtifactMetrics(b.metrics.reg).served, ClientCert: b.deviceCert(deny)}).Register(mux)
	(&api.StreamAPI{Hub: &b.events, Registry: b.registry, Guard: guard, Stop: b.streams, WriteTimeout: off(b.opts.HTTP.WriteTimeout)}).Register(mux)
	mux.HandleFunc("GET /openapi.json", api.OpenAPI)
	mux.Handle("GET /metrics", guard.Require(auth.RoleViewer, api.Infallible(b.metricsHandler())))
	mux.Handle("GET /api/admin/backup", guard.Require(auth.RoleAdmin, b.serveBackup)) // BackupPath
	mux.Handle("/ui/", web.Handler())
	mux.Handle("GET /{$}", web.Redirect())
}
