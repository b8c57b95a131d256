// Package config reads `umbra serve`'s configuration: a YAML file decoded
// strictly (an unknown key is an error naming the key and its line),
// UMBRA_* environment variables, and command-line flags. Later sources win:
// defaults < file < environment < flags.
//
// Every key of the file has an environment variable named after its path:
// mqtt.connect_timeout is UMBRA_MQTT_CONNECT_TIMEOUT.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/shadow"
)

// File is the configuration file's schema. Zero values mean "default".
type File struct {
	DataDir  string   `yaml:"data_dir"`
	MQTT     MQTT     `yaml:"mqtt"`
	HTTP     HTTP     `yaml:"http"`
	Shadow   Shadow   `yaml:"shadow"`
	TLS      TLS      `yaml:"tls"`
	Auth     Auth     `yaml:"auth"`
	Limits   Limits   `yaml:"limits"`
	Registry Registry `yaml:"registry"`
	Log      Log      `yaml:"log"`
	Quotas   Quotas   `yaml:"quotas"`
	// Artifacts configures the firmware artifact store.
	Artifacts Artifacts `yaml:"artifacts"`
	// Cluster turns on cluster mode (broker.ClusterOptions).
	Cluster Cluster `yaml:"cluster"`
}

// Cluster configures cluster mode: shared state on NATS JetStream
// (broker.ClusterOptions; docs/cluster.md).
type Cluster struct {
	// URL lists the NATS servers, comma-separated ("nats://a:4222,nats://b:4222").
	URL       string        `yaml:"url"`
	Name      string        `yaml:"name"`
	CredsFile string        `yaml:"creds_file"`
	CAFile    string        `yaml:"ca_file"`
	CertFile  string        `yaml:"cert_file"`
	KeyFile   string        `yaml:"key_file"`
	Replicas  int           `yaml:"replicas"`
	Timeout   time.Duration `yaml:"timeout"`
	// LeaseTTL: the rollout engine moves to another node within about
	// this long when its node dies (default 5s; same on every node).
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// Artifacts configures firmware artifacts (broker.ArtifactOptions).
type Artifacts struct {
	// PublicURL is the base of the download URLs devices get.
	PublicURL string `yaml:"public_url"`
	// PublicKeyFile: PEM ECDSA P-256 or Ed25519 key uploads must be signed with.
	PublicKeyFile string        `yaml:"public_key_file"`
	TokenTTL      time.Duration `yaml:"token_ttl"`
	MaxSize       int           `yaml:"max_size"`
}

// Quotas bound the memory and disk one client can take (0: default,
// negative: no quota); see broker.QuotaOptions.
type Quotas struct {
	RetainedMessages int `yaml:"retained_messages"`
	RetainedBytes    int `yaml:"retained_bytes"`
	InflightBytes    int `yaml:"inflight_bytes"`
	Subscriptions    int `yaml:"subscriptions"`
}

// Registry configures the device registry.
type Registry struct {
	// Policy is "auto" (register devices on first connect) or "strict".
	Policy string `yaml:"policy"`
	// RecreateDeleted lets a deleted thing's credentials register it again
	// under policy auto (default false: it stays deleted).
	RecreateDeleted bool `yaml:"recreate_deleted"`
}

// TLS secures the MQTT and WebSocket listeners.
type TLS struct {
	CertFile          string `yaml:"cert_file"`
	KeyFile           string `yaml:"key_file"`
	ClientCAFile      string `yaml:"client_ca_file"`
	RequireClientCert bool   `yaml:"require_client_cert"`
	// ClientCerts is required | optional | none for the MQTT (TCP)
	// listener; WSClientCerts for the WebSocket listener ("" = ClientCerts).
	ClientCerts   string `yaml:"client_certs"`
	WSClientCerts string `yaml:"ws_client_certs"`
}

// Listener is a further MQTT listener (mqtt.listeners, file only).
type Listener struct {
	Name        string `yaml:"name"`
	Addr        string `yaml:"addr"`
	WebSocket   bool   `yaml:"websocket"`
	ClientCerts string `yaml:"client_certs"` // required | optional | none; "" = tls.client_certs
}

// Auth configures authentication. Services and API keys are lists and have
// no environment variables; put them in the file.
type Auth struct {
	Enabled                    bool                 `yaml:"enabled"`
	AllowUnauthenticatedRemote bool                 `yaml:"allow_unauthenticated_remote"`
	Services                   []auth.ServiceConfig `yaml:"services"`
	APIKeys                    []auth.APIKeyConfig  `yaml:"api_keys"`
	// LoginThrottle limits password guessing (see auth.ThrottleConfig).
	LoginThrottle auth.ThrottleConfig `yaml:"login_throttle"`
	// DeniedCertificates revokes client certificates by serial or
	// fingerprint ("serial:0a1b…", "sha256:…").
	DeniedCertificates []string `yaml:"denied_certificates"`
}

// Limits protect clients from each other.
type Limits struct {
	ShadowRate     float64 `yaml:"shadow_rate"`
	ShadowBurst    int     `yaml:"shadow_burst"`
	ShadowInFlight int     `yaml:"shadow_in_flight"`
	MaxConnsPerIP  int     `yaml:"max_conns_per_ip"`
}

// MQTT configures the MQTT listeners and session limits.
type MQTT struct {
	Addr           string        `yaml:"addr"`
	WSAddr         string        `yaml:"ws_addr"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	WriteTimeout   time.Duration `yaml:"write_timeout"`
	MaxPacketSize  int           `yaml:"max_packet_size"`
	ClientQueue    int           `yaml:"client_queue"`
	MaxInflight    int           `yaml:"max_inflight"`
	MessageExpiry  time.Duration `yaml:"message_expiry"`
	SessionExpiry  time.Duration `yaml:"session_expiry"`
	SysInterval    time.Duration `yaml:"sys_interval"`
	MaxClients     int           `yaml:"max_clients"`
	// MaxKeepAlive caps an MQTT 5 client's keep alive (Server Keep Alive
	// in CONNACK); 0: no cap (broker.Options.MaxKeepAlive).
	MaxKeepAlive time.Duration `yaml:"max_keep_alive"`
	// DeniedPublishBackoff is the first CONNACK delay for an MQTT 3.1.1
	// client whose publish was denied (broker.Options.DeniedPublishBackoff).
	DeniedPublishBackoff time.Duration `yaml:"denied_publish_backoff"`
	// Listeners are further listeners, each with its own client-certificate
	// mode (a list: file only, no environment variable).
	Listeners []Listener `yaml:"listeners"`
}

// HTTP configures the HTTP listener.
type HTTP struct {
	Addr string `yaml:"addr"`
	// Hardening (broker.HTTPOptions) and browser origins.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	MaxHeaderBytes    int           `yaml:"max_header_bytes"`
	MaxConnsPerIP     int           `yaml:"max_conns_per_ip"`
	AllowedOrigins    []string      `yaml:"allowed_origins"` // API writes and MQTT over WebSocket
}

// Shadow configures the shadow service.
type Shadow struct {
	Converge         string        `yaml:"converge"`
	Strict           bool          `yaml:"strict"`
	MaxDocumentBytes int           `yaml:"max_document_bytes"`
	MaxDepth         int           `yaml:"max_depth"`
	MaxClientToken   int           `yaml:"max_client_token_bytes"`
	MaxPayloadBytes  int           `yaml:"max_payload_bytes"`
	HistoryVersions  int           `yaml:"history_versions"`
	TombstoneTTL     time.Duration `yaml:"tombstone_ttl"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json
}

// Decode reads a configuration file strictly.
func Decode(r io.Reader) (File, error) {
	var f File
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return File{}, err
	}
	// A second document would be silently ignored: refuse it.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return File{}, fmt.Errorf("after the first document: %w", err)
		}
		return File{}, fmt.Errorf("line %d: a configuration file holds one YAML document; found another after '---'", extra.Line)
	}
	return f, nil
}

// Load reads path (skipped when ""), then applies env (as os.Environ).
func Load(path string, env []string) (File, error) {
	var f File
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return File{}, fmt.Errorf("config: %w", err)
		}
		if f, err = Decode(bytes.NewReader(data)); err != nil {
			return File{}, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&f, env); err != nil {
		return File{}, err
	}
	return f, nil
}

// EnvNames lists every environment variable the file schema answers to.
func EnvNames() []string {
	var names []string
	walk(reflect.ValueOf(&File{}).Elem(), "UMBRA", func(name string, _ reflect.Value) { names = append(names, name) })
	return names
}

func walk(v reflect.Value, prefix string, fn func(name string, field reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		name := prefix + "_" + strings.ToUpper(tag)
		switch fv := v.Field(i); fv.Kind() {
		case reflect.Struct:
			walk(fv, name, fn)
		case reflect.Slice:
			// lists live in the file only
		default:
			fn(name, fv)
		}
	}
}

var durationType = reflect.TypeOf(time.Duration(0))

// LookupEnv is the one reader of environment variables: env is the
// process environment as os.Environ gives it (main reads it once and passes
// it down, so tests pass their own). A name set twice has its first value,
// as with os.Getenv.
func LookupEnv(env []string, key string) (string, bool) {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

func applyEnv(f *File, env []string) error {
	var errs []error
	walk(reflect.ValueOf(f).Elem(), "UMBRA", func(name string, field reflect.Value) {
		raw, ok := LookupEnv(env, name)
		if !ok {
			return
		}
		if err := setField(field, raw); err != nil {
			errs = append(errs, fmt.Errorf("environment %s=%q: %w", name, raw, err))
		}
	})
	return errors.Join(errs...)
}

func setField(field reflect.Value, raw string) error {
	switch {
	case field.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return err
		}
		field.SetInt(int64(d))
	case field.Kind() == reflect.String:
		field.SetString(raw)
	case field.Kind() == reflect.Int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("not an integer")
		}
		field.SetInt(int64(n))
	case field.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("not a number")
		}
		field.SetFloat(f)
	case field.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("not a boolean")
		}
		field.SetBool(b)
	default:
		return fmt.Errorf("unsupported type %s", field.Type())
	}
	return nil
}

// Logger builds the logger the file asks for, writing to w.
func (f File) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if f.Log.Level != "" {
		if err := level.UnmarshalText([]byte(f.Log.Level)); err != nil {
			return nil, fmt.Errorf("log level %q: want debug, info, warn or error", f.Log.Level)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.Log.Format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", f.Log.Format)
}

// Options converts the file into broker options (defaults left zero).
func (f File) Options() broker.Options {
	return broker.Options{
		DataDir:              f.DataDir,
		MQTTAddr:             f.MQTT.Addr,
		WSAddr:               f.MQTT.WSAddr,
		HTTPAddr:             f.HTTP.Addr,
		ConnectTimeout:       f.MQTT.ConnectTimeout,
		WriteTimeout:         f.MQTT.WriteTimeout,
		MaxPacketSize:        f.MQTT.MaxPacketSize,
		ClientQueue:          f.MQTT.ClientQueue,
		MaxInflight:          f.MQTT.MaxInflight,
		MessageExpiry:        f.MQTT.MessageExpiry,
		SessionExpiry:        f.MQTT.SessionExpiry,
		SysInterval:          f.MQTT.SysInterval,
		MaxClients:           f.MQTT.MaxClients,
		MaxKeepAlive:         f.MQTT.MaxKeepAlive,
		DeniedPublishBackoff: f.MQTT.DeniedPublishBackoff,
		Shadow: shadow.Options{
			Converge:            shadow.ConvergeMode(f.Shadow.Converge),
			Strict:              f.Shadow.Strict,
			MaxDocumentBytes:    f.Shadow.MaxDocumentBytes,
			MaxDepth:            f.Shadow.MaxDepth,
			MaxClientTokenBytes: f.Shadow.MaxClientToken,
			MaxPayloadBytes:     f.Shadow.MaxPayloadBytes,
		},
		HistoryVersions: f.Shadow.HistoryVersions,
		TombstoneTTL:    f.Shadow.TombstoneTTL,
		TLS: broker.TLSOptions{
			CertFile: f.TLS.CertFile, KeyFile: f.TLS.KeyFile,
			ClientCAFile: f.TLS.ClientCAFile, RequireClientCert: f.TLS.RequireClientCert,
			ClientCerts: broker.ClientCertMode(f.TLS.ClientCerts), WSClientCerts: broker.ClientCertMode(f.TLS.WSClientCerts),
		},
		Listeners: f.listeners(),
		Auth: broker.AuthOptions{
			Enabled:                    f.Auth.Enabled,
			AllowUnauthenticatedRemote: f.Auth.AllowUnauthenticatedRemote,
			Services:                   f.Auth.Services,
			APIKeys:                    f.Auth.APIKeys,
			LoginThrottle:              f.Auth.LoginThrottle,
			DeniedCertificates:         f.Auth.DeniedCertificates,
		},
		Registration:          registry.Policy(f.Registry.Policy),
		RecreateDeletedThings: f.Registry.RecreateDeleted,
		Limits: broker.LimitOptions{
			ShadowRate: f.Limits.ShadowRate, ShadowBurst: f.Limits.ShadowBurst,
			ShadowInFlight: f.Limits.ShadowInFlight, MaxConnsPerIP: f.Limits.MaxConnsPerIP,
		},
		AllowedOrigins: f.HTTP.AllowedOrigins,
		HTTP: broker.HTTPOptions{
			ReadHeaderTimeout: f.HTTP.ReadHeaderTimeout, ReadTimeout: f.HTTP.ReadTimeout,
			WriteTimeout: f.HTTP.WriteTimeout, IdleTimeout: f.HTTP.IdleTimeout,
			MaxHeaderBytes: f.HTTP.MaxHeaderBytes, MaxConnsPerIP: f.HTTP.MaxConnsPerIP,
		},
		Quotas: broker.QuotaOptions{
			RetainedMessages: f.Quotas.RetainedMessages, RetainedBytes: int64(f.Quotas.RetainedBytes),
			InflightBytes: int64(f.Quotas.InflightBytes), Subscriptions: f.Quotas.Subscriptions,
		},
		Artifacts: broker.ArtifactOptions{
			PublicURL: f.Artifacts.PublicURL, PublicKeyFile: f.Artifacts.PublicKeyFile,
			TokenTTL: f.Artifacts.TokenTTL, MaxSize: int64(f.Artifacts.MaxSize),
		},
		Cluster: broker.ClusterOptions{
			URLs: broker.ParseClusterURLs(f.Cluster.URL), Name: f.Cluster.Name, CredsFile: f.Cluster.CredsFile,
			CAFile: f.Cluster.CAFile, CertFile: f.Cluster.CertFile, KeyFile: f.Cluster.KeyFile,
			Replicas: f.Cluster.Replicas, Timeout: f.Cluster.Timeout, LeaseTTL: f.Cluster.LeaseTTL,
		},
	}
}

func (f File) listeners() []broker.ListenerOptions {
	var ls []broker.ListenerOptions
	for _, l := range f.MQTT.Listeners {
		ls = append(ls, broker.ListenerOptions{Name: l.Name, Addr: l.Addr, WebSocket: l.WebSocket, ClientCerts: broker.ClientCertMode(l.ClientCerts)})
	}
	return ls
}
