package broker_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/auth"
	"github.com/umbra-iot/umbra/internal/testpki"
)

// secured is a broker with authentication on, TLS with client
// certificates, one service principal and an API key per role.
type secured struct {
	*brokertest.Server
	ca                      *testpki.CA
	dir                     string
	admin, operator, viewer string // API keys
	servicePassword         string
	tlsMQTTURL, tlsWSURL    string
	http                    *http.Client // trusts the test CA
}

func startSecured(t *testing.T, modify ...func(*broker.Options)) *secured {
	t.Helper()
	dir := t.TempDir()
	return startSecuredCA(t, dir, testpki.NewCA(t, dir, "device-ca"), modify...)
}

// startSecuredCA is startSecured with a device CA made beforehand (to
// issue certificates the options name).
func startSecuredCA(t *testing.T, dir string, ca *testpki.CA, modify ...func(*broker.Options)) *secured {
	t.Helper()
	s := &secured{dir: dir, admin: auth.NewSecret(), operator: auth.NewSecret(), viewer: auth.NewSecret(), servicePassword: auth.NewSecret()}
	s.ca = ca
	server := s.ca.Server(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte(s.servicePassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	s.Server = brokertest.Start(t, func(o *broker.Options) {
		o.TLS = broker.TLSOptions{CertFile: server.CertFile, KeyFile: server.KeyFile, ClientCAFile: s.ca.File}
		o.Auth = broker.AuthOptions{
			Enabled: true,
			Services: []auth.ServiceConfig{{
				Name: "dashboard", PasswordBcrypt: string(hash),
				Rules: auth.Rules{
					Publish:   []string{"$aws/things/+/shadow/update", "$aws/things/+/shadow/get", "things/+/cmd"},
					Subscribe: []string{"$aws/things/+/shadow/#", "app/{clientid}/#"},
				},
			}},
			APIKeys: []auth.APIKeyConfig{
				{Name: "root", SHA256: auth.SHA256Hex(s.admin), Role: auth.RoleAdmin},
				{Name: "ops", SHA256: auth.SHA256Hex(s.operator), Role: auth.RoleOperator},
				{Name: "dash", SHA256: auth.SHA256Hex(s.viewer), Role: auth.RoleViewer},
			},
		}
		for _, m := range modify {
			m(o)
		}
	})
	s.tlsMQTTURL = s.MQTTURL()
	s.tlsWSURL = s.WSURL()
	s.http = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool()}}}
	return s
}

// issue creates (or rotates) a device secret through the admin API.
func (s *secured) issue(t *testing.T, thing string) string {
	t.Helper()
	body := s.api(t, s.admin, "POST", "/api/things/"+thing+"/credentials", "", http.StatusCreated)
	var out struct{ Secret string }
	if err := json.Unmarshal([]byte(body), &out); err != nil || out.Secret == "" {
		t.Fatalf("issue %s: %s", thing, body)
	}
	return out.Secret
}

// api calls the HTTP API with key (none when "") and checks the status.
func (s *secured) api(t *testing.T, key, method, path, body string, want int) string {
	t.Helper()
	req, err := http.NewRequest(method, s.HTTPURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s with key %.6s…: status %d, want %d; body %s", method, path, key, resp.StatusCode, want, b)
	}
	return string(b)
}

// trust makes a paho client verify the test server and optionally present
// a client certificate.
func (s *secured) trust(cert *tls.Certificate) func(*paho.ClientOptions) {
	return func(o *paho.ClientOptions) {
		conf := &tls.Config{RootCAs: s.ca.Pool(), ServerName: "127.0.0.1"}
		if cert != nil {
			conf.Certificates = []tls.Certificate{*cert}
		}
		o.SetTLSConfig(conf)
	}
}

// withSecret logs in as a device with a secret (username optional).
func withSecret(username, secret string) func(*paho.ClientOptions) {
	return func(o *paho.ClientOptions) {
		o.SetUsername(username)
		o.SetPassword(secret)
	}
}

// subscribeCode subscribes and returns the granted QoS or failure code.
func subscribeCode(t *testing.T, c paho.Client, filter string) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, func(paho.Client, paho.Message) {})
	if !tok.WaitTimeout(10e9) {
		t.Fatalf("subscribe %s: no SUBACK", filter)
	}
	// One filter, one result (paho keys shared subscriptions without their
	// $share/{group}/ prefix).
	for _, code := range tok.(*paho.SubscribeToken).Result() {
		return code
	}
	t.Fatalf("subscribe %s: empty SUBACK", filter)
	return 0
}

func testpkiCA(t *testing.T, dir string) *testpki.CA { return testpki.NewCA(t, dir, "rogue-ca") }
