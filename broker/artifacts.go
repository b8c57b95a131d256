package broker

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/umbra-iot/umbra/internal/artifact"
	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/store"
)

// ArtifactOptions configure the firmware artifact store (README "OTA end
// to end").
type ArtifactOptions struct {
	// PublicURL is the base URL devices download firmware from
	// ("https://umbra.example.com:8443"): the download URLs written into
	// desired state start with it. Default: the HTTP listener's address
	// (http:// or https:// with TLS), right for loopback and tests only.
	PublicURL string
	// PublicKeyFile, when set, is a PEM public key (ECDSA P-256 or
	// Ed25519): every upload must carry a signature that verifies with it.
	PublicKeyFile string
	// TokenTTL is how long a device's download URL stays valid from the
	// time it is written into desired state. Default 24h.
	TokenTTL time.Duration
	// MaxSize caps one image. Default 64 MiB.
	MaxSize int64
}

// artifactKV adapts the store to artifact.Store.
type artifactKV struct{ db *store.DB }

func (s artifactKV) UpdateKV(ctx context.Context, fn func(artifact.KV) error) error {
	return s.db.UpdateKV(ctx, func(kv store.KV) error { return fn(kv) })
}

func (s artifactKV) ViewKV(fn func(artifact.KV) error) error {
	return s.db.ViewKV(func(kv store.KV) error { return fn(kv) })
}

func (o ArtifactOptions) publicKey() (any, error) {
	if o.PublicKeyFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(o.PublicKeyFile)
	if err != nil {
		return nil, fmt.Errorf("artifact signing key: %w", err)
	}
	k, err := artifact.ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("artifact signing key %s: %w", o.PublicKeyFile, err)
	}
	return k, nil
}

// openArtifacts opens the artifact store in <data>/artifacts.
func (b *Broker) openArtifacts() error {
	key, err := b.opts.Artifacts.publicKey()
	if err != nil {
		return err
	}
	b.artifacts, err = artifact.Open(b.ctx, artifact.Config{
		Dir: filepath.Join(b.opts.DataDir, "artifacts"), Store: b.artifactStore(), Blobs: b.artifactBlobs(), PublicKey: key,
		TokenTTL: b.opts.Artifacts.TokenTTL, MaxSize: b.opts.Artifacts.MaxSize, Clock: b.opts.RolloutClock,
		InUse: func(id string) []string {
			if b.rollouts == nil {
				return nil
			}
			if !b.runsEngine() {
				// Cluster mode: this node's copy of the rollouts is as old
				// as its last takeover; read the shared store again.
				if err := b.rollouts.Reload(); err != nil {
					return []string{"(rollouts unreadable: " + err.Error() + ")"}
				}
			}
			return b.rollouts.ArtifactRefs(id)
		},
		Exclusive: func() func() { b.artifactRefs.Lock(); return b.artifactRefs.Unlock },
	})
	return err
}

// artifactBase is the base of device download URLs.
func (b *Broker) artifactBase() string {
	if u := b.opts.Artifacts.PublicURL; u != "" {
		return strings.TrimRight(u, "/")
	}
	scheme := "http"
	if b.tlsConf != nil {
		scheme = "https"
	}
	return scheme + "://" + b.HTTPAddr()
}

// rolloutArtifacts is the rollout engine's view of the artifact store.
type rolloutArtifacts struct{ b *Broker }

func (r rolloutArtifacts) Resolve(ref string) (string, map[string]any, error) {
	a, err := r.b.artifacts.Get(ref)
	if err != nil {
		return "", nil, err
	}
	f := map[string]any{"target_version": a.Version, "ota_sha256": a.SHA256, "ota_size": a.Size}
	if len(a.Signature) > 0 {
		f["ota_signature"] = base64.StdEncoding.EncodeToString(a.Signature)
	}
	return a.ID, f, nil
}

// HoldReferences implements rollout.ReferenceHolder: no artifact is
// deleted while a rollout or job that names one is being recorded.
func (r rolloutArtifacts) HoldReferences() func() {
	r.b.artifactRefs.RLock()
	return r.b.artifactRefs.RUnlock
}

// URLLifetime implements rollout.URLLifetime: the download token's TTL.
func (r rolloutArtifacts) URLLifetime() time.Duration { return r.b.artifacts.TokenTTL() }

func (r rolloutArtifacts) URL(id, thing string) string {
	return r.b.artifactBase() + r.b.artifacts.DownloadPath(id, thing)
}

// artifactMetrics count firmware downloads.
type artifactMetrics struct {
	requests  *prometheus.CounterVec
	bytes     prometheus.Counter
	completed prometheus.Counter
}

func newArtifactMetrics(reg *prometheus.Registry) *artifactMetrics {
	m := &artifactMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umbra_artifact_download_requests_total",
			Help: "Firmware download requests by HTTP status (200 whole image, 206 a range, 304 not modified, 403 bad token, 416 bad range).",
		}, []string{"code"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "umbra_artifact_download_bytes_total",
			Help: "Firmware bytes sent to devices and operators.",
		}),
		completed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "umbra_artifact_downloads_total",
			Help: "Firmware downloads that delivered an image's last byte (a whole image, or the last range of a resumed one).",
		}),
	}
	reg.MustRegister(m.requests, m.bytes, m.completed)
	return m
}

func (m *artifactMetrics) served(status int, n int64, completed bool) {
	m.requests.WithLabelValues(fmt.Sprint(status)).Inc()
	m.bytes.Add(float64(n))
	if completed {
		m.completed.Inc()
	}
}

// deviceCert names the thing of a verified client certificate on the
// HTTPS listener ("" when none); a denied certificate is an error.
func (b *Broker) deviceCert(deny *auth.DenyList) func(r *http.Request) (string, error) {
	return func(r *http.Request) (string, error) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			return "", nil
		}
		leaf := r.TLS.VerifiedChains[0][0]
		if deny.Denies(leaf) {
			return "", fmt.Errorf("client certificate %s (serial %s) is revoked", leaf.Subject.CommonName, leaf.SerialNumber.Text(16))
		}
		if !validThing(leaf.Subject.CommonName) {
			return "", fmt.Errorf("client certificate CN %q is not a thing name", leaf.Subject.CommonName)
		}
		return leaf.Subject.CommonName, nil
	}
}

// Artifacts is the firmware artifact store.
func (b *Broker) Artifacts() *artifact.Service { return b.artifacts }
