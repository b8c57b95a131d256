package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodeRejectsUnknownKeyWithLine(t *testing.T) {
	_, err := Decode(strings.NewReader("data_dir: /x\nmqtt:\n  addr: 1.2.3.4:1\n  adress: typo\n"))
	if err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "adress") {
		t.Fatalf("err = %v, want one naming line 4 and the key", err)
	}
}

func TestDecodeRejectsWrongType(t *testing.T) {
	_, err := Decode(strings.NewReader("mqtt:\n  connect_timeout: soon\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v, want a line-2 error", err)
	}
}

func TestEmptyFileIsAllDefaults(t *testing.T) {
	f, err := Decode(strings.NewReader(""))
	if err != nil || !reflect.DeepEqual(f, File{}) {
		t.Fatalf("f=%+v err=%v", f, err)
	}
}

func TestEnvironmentOverridesFile(t *testing.T) {
	f, err := Decode(strings.NewReader("mqtt:\n  addr: 0.0.0.0:1883\n  connect_timeout: 5s\nshadow:\n  converge: prune\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = applyEnv(&f, []string{"UMBRA_MQTT_ADDR=127.0.0.1:9", "UMBRA_MQTT_CONNECT_TIMEOUT=3s", "UMBRA_SHADOW_STRICT=true", "UMBRA_SHADOW_CONVERGE=keep", "PATH=/bin"})
	if err != nil {
		t.Fatal(err)
	}
	if f.MQTT.Addr != "127.0.0.1:9" || f.MQTT.ConnectTimeout != 3*time.Second || !f.Shadow.Strict || f.Shadow.Converge != "keep" {
		t.Fatalf("after env: %+v", f)
	}
}

func TestEnvironmentBadValueNamesVariable(t *testing.T) {
	var f File
	err := applyEnv(&f, []string{"UMBRA_MQTT_MAX_CLIENTS=many"})
	if err == nil || !strings.Contains(err.Error(), "UMBRA_MQTT_MAX_CLIENTS") {
		t.Fatalf("err = %v", err)
	}
}

func TestEnvNamesCoverEveryKey(t *testing.T) {
	names := strings.Join(EnvNames(), " ")
	for _, want := range []string{"UMBRA_DATA_DIR", "UMBRA_MQTT_WS_ADDR", "UMBRA_HTTP_ADDR", "UMBRA_SHADOW_TOMBSTONE_TTL", "UMBRA_LOG_FORMAT"} {
		if !strings.Contains(names, want) {
			t.Errorf("%s missing from %s", want, names)
		}
	}
}

func TestLoggerRejectsUnknownLevel(t *testing.T) {
	if _, err := (File{Log: Log{Level: "loud"}}).Logger(nil); err == nil {
		t.Fatal("want error")
	}
}

func TestSecuritySections(t *testing.T) {
	f, err := Decode(strings.NewReader(`
tls:
  cert_file: /etc/umbra/server.pem
  key_file: /etc/umbra/server.key
  client_ca_file: /etc/umbra/ca.pem
auth:
  enabled: true
  services:
    - name: dashboard
      password_bcrypt: "$2a$10$abcdefghijklmnopqrstuu5Wq9bVn3H3G9u1hS2jH2y6QO9p0Sdeq"
      publish: ["$aws/things/+/shadow/update"]
      subscribe: ["$aws/things/+/shadow/#", "app/{clientid}/#"]
  api_keys:
    - name: ci
      sha256: "00"
      role: operator
limits:
  shadow_rate: 5.5
  max_conns_per_ip: 10
`))
	if err != nil {
		t.Fatal(err)
	}
	o := f.Options()
	if !o.Auth.Enabled || o.TLS.ClientCAFile != "/etc/umbra/ca.pem" || len(o.Auth.Services) != 1 ||
		o.Auth.Services[0].Subscribe[1] != "app/{clientid}/#" || o.Auth.APIKeys[0].Role != "operator" ||
		o.Limits.ShadowRate != 5.5 || o.Limits.MaxConnsPerIP != 10 {
		t.Fatalf("options: %+v", o)
	}
	var g File
	if err := applyEnv(&g, []string{"UMBRA_AUTH_ENABLED=true", "UMBRA_LIMITS_SHADOW_RATE=2.5", "UMBRA_TLS_CERT_FILE=/x"}); err != nil {
		t.Fatal(err)
	}
	if !g.Auth.Enabled || g.Limits.ShadowRate != 2.5 || g.TLS.CertFile != "/x" {
		t.Fatalf("env: %+v", g)
	}
}

func TestHTTPSection(t *testing.T) {
	f, err := Decode(strings.NewReader(`
http:
  addr: 127.0.0.1:8080
  read_header_timeout: 5s
  read_timeout: 20s
  write_timeout: 25s
  idle_timeout: 45s
  max_header_bytes: 32768
  max_conns_per_ip: 16
  allowed_origins: ["https://app.example.com"]
`))
	if err != nil {
		t.Fatal(err)
	}
	o := f.Options()
	if o.HTTP.ReadHeaderTimeout != 5*time.Second || o.HTTP.ReadTimeout != 20*time.Second || o.HTTP.WriteTimeout != 25*time.Second ||
		o.HTTP.IdleTimeout != 45*time.Second || o.HTTP.MaxHeaderBytes != 32768 || o.HTTP.MaxConnsPerIP != 16 ||
		len(o.AllowedOrigins) != 1 || o.AllowedOrigins[0] != "https://app.example.com" {
		t.Fatalf("options: %+v %v", o.HTTP, o.AllowedOrigins)
	}
	var g File
	if err := applyEnv(&g, []string{"UMBRA_HTTP_IDLE_TIMEOUT=90s", "UMBRA_HTTP_MAX_CONNS_PER_IP=-1"}); err != nil {
		t.Fatal(err)
	}
	if g.HTTP.IdleTimeout != 90*time.Second || g.HTTP.MaxConnsPerIP != -1 {
		t.Fatalf("env: %+v", g.HTTP)
	}
}

func TestQuotasSection(t *testing.T) {
	f, err := Decode(strings.NewReader("quotas:\n  retained_messages: 5\n  retained_bytes: 200000\n  subscriptions: 7\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(&f, []string{"UMBRA_QUOTAS_INFLIGHT_BYTES=-1"}); err != nil {
		t.Fatal(err)
	}
	q := f.Options().Quotas
	if q.RetainedMessages != 5 || q.RetainedBytes != 200000 || q.InflightBytes != -1 || q.Subscriptions != 7 {
		t.Fatalf("quotas %+v", q)
	}
}

// The MQTT keep-alive cap and the denied-publish back-off reach the broker
// from the file and from the environment.
func TestKeepAliveAndDeniedPublishBackoffOptions(t *testing.T) {
	f, err := Decode(strings.NewReader("mqtt:\n  max_keep_alive: 45s\n  denied_publish_backoff: 2s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if o := f.Options(); o.MaxKeepAlive != 45*time.Second || o.DeniedPublishBackoff != 2*time.Second {
		t.Fatalf("options from the file: keep alive %v, back-off %v", o.MaxKeepAlive, o.DeniedPublishBackoff)
	}
	if err := applyEnv(&f, []string{"UMBRA_MQTT_MAX_KEEP_ALIVE=1m", "UMBRA_MQTT_DENIED_PUBLISH_BACKOFF=-1s"}); err != nil {
		t.Fatal(err)
	}
	if o := f.Options(); o.MaxKeepAlive != time.Minute || o.DeniedPublishBackoff != -time.Second {
		t.Fatalf("options from the environment: keep alive %v, back-off %v", o.MaxKeepAlive, o.DeniedPublishBackoff)
	}
}
