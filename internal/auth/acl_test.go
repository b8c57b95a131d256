package auth

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func mustPolicy(t *testing.T, services []ServiceConfig, keys []APIKeyConfig) *Policy {
	t.Helper()
	p, err := NewPolicy(services, keys)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDevicePublish(t *testing.T) {
	p := mustPolicy(t, nil, nil)
	d := Identity{Kind: Device, Name: "d1", ClientID: "d1"}
	for topic, want := range map[string]bool{
		"$aws/things/d1/shadow/update":                true,
		"$aws/things/d1/shadow/get":                   true,
		"$aws/things/d1/shadow/delete":                true,
		"$aws/things/d1/shadow/name/cfg/update":       true,
		"things/d1/telemetry":                         true,
		"things/d1/a/b":                               true,
		"things/d1/":                                  false,
		"things/d1":                                   false,
		"$aws/things/d1/shadow/update/accepted":       false,
		"$aws/things/d1/shadow/update/delta":          false,
		"$aws/things/d1/shadow/update/documents":      false,
		"$aws/things/d1/shadow/get/rejected":          false,
		"$aws/things/d1/shadow/name/cfg/update/delta": false,
		"$aws/things/d1/shadow/name//update":          false,
		"$aws/things/d2/shadow/update":                false,
		"$aws/things/d1x/shadow/update":               false,
		"things/d2/telemetry":                         false,
		"$aws/things/d1/shadow/name/cfg/extra/update": false,
		"$aws/events/presence/connected/d1":           false,
		"$SYS/x":                                      false,
		"other":                                       false,
	} {
		if got := p.CanPublish(d, topic); got != want {
			t.Errorf("device d1 publish %q = %v, want %v", topic, got, want)
		}
	}
}

func TestDeviceWithWildcardNameGetsNothing(t *testing.T) {
	p := mustPolicy(t, nil, nil)
	for _, name := range []string{"+", "#", "a/b", ""} {
		d := Identity{Kind: Device, Name: name, ClientID: name}
		if p.CanReceive(d, "$aws/things/"+name+"/shadow/update/delta") || p.CanReceive(d, "things/x/y") {
			t.Errorf("device named %q was granted a subscription", name)
		}
	}
}

func TestServiceRulesSubstitution(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	p := mustPolicy(t, []ServiceConfig{{Name: "app", PasswordBcrypt: string(hash), Rules: Rules{
		Publish:   []string{"cmd/{clientid}/#", "$aws/things/+/shadow/update"},
		Subscribe: []string{"replies/{username}/+", "$aws/things/+/shadow/#"},
	}}}, nil)
	svc := Identity{Kind: Service, Name: "app", ClientID: "c1", Username: "app"}
	cases := []struct {
		pub    bool
		topic  string
		wanted bool
	}{
		{true, "cmd/c1/x", true},
		{true, "cmd/c2/x", false},
		{true, "$aws/things/t/shadow/update", true},
		{true, "$aws/things/t/shadow/update/accepted", false},
		{false, "replies/app/x", true},
		{false, "replies/app/#", false},
		{false, "replies/other/x", false},
		{false, "$aws/things/+/shadow/update/delta", true},
		{false, "$share/g/$aws/things/+/shadow/update/documents", true},
		{false, "#", false},
	}
	for _, c := range cases {
		got := p.CanReceive(svc, c.topic)
		if c.pub {
			got = p.CanPublish(svc, c.topic)
		}
		if got != c.wanted {
			t.Errorf("service pub=%v %q = %v, want %v", c.pub, c.topic, got, c.wanted)
		}
	}
	// A client id that is a wildcard or spans levels gains nothing from {clientid}.
	for _, id := range []string{"#", "+", "a/b"} {
		evil := Identity{Kind: Service, Name: "app", ClientID: id, Username: "app"}
		if p.CanPublish(evil, "cmd/"+id+"/x") || p.CanPublish(evil, "cmd/a/b/x") {
			t.Errorf("client id %q widened the {clientid} rule", id)
		}
	}
	if !p.CheckServicePassword("app", []byte("pw")) || p.CheckServicePassword("app", []byte("nope")) {
		t.Error("service password check")
	}
}

func TestPolicyValidationNamesTheProblem(t *testing.T) {
	_, err := NewPolicy([]ServiceConfig{
		{Name: "a/b", PasswordBcrypt: "plain", Rules: Rules{Publish: []string{"x/#/y"}}},
	}, []APIKeyConfig{{Name: "k", SHA256: "zz", Role: "root"}, {Name: "", SHA256: SHA256Hex("x"), Role: "boss"}})
	for _, want := range []string{"auth.services[0]", "not a bcrypt hash", `"x/#/y" is not a valid topic filter`, "sha256 must be 64 hex", `role "boss"`, "name is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestRolesAndAPIKeys(t *testing.T) {
	p := mustPolicy(t, nil, []APIKeyConfig{{Name: "ops", SHA256: SHA256Hex("secret-ops"), Role: RoleOperator}})
	pr, ok := p.APIKey("secret-ops")
	if !ok || pr.Name != "ops" || !pr.Role.Allows(RoleViewer) || !pr.Role.Allows(RoleOperator) || pr.Role.Allows(RoleAdmin) {
		t.Fatalf("operator key: %+v %v", pr, ok)
	}
	if _, ok := p.APIKey("secret-opz"); ok {
		t.Fatal("unknown key accepted")
	}
	if Role("").Allows(RoleViewer) || RoleAdmin.Allows(Role("")) {
		t.Fatal("empty roles grant or are granted")
	}
}

type secrets map[string][]byte

func (s secrets) DeviceSecret(thing string) ([]byte, bool, error) {
	h, ok := s[thing]
	return h, ok, nil
}

func TestAuthenticatorDevicesAndServices(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	svcHash, _ := bcrypt.GenerateFromPassword([]byte("svc"), bcrypt.MinCost)
	a := &Authenticator{
		Policy:     mustPolicy(t, []ServiceConfig{{Name: "app", PasswordBcrypt: string(svcHash)}}, nil),
		Secrets:    secrets{"d1": hash},
		ValidThing: func(s string) bool { return s != "" && !strings.ContainsAny(s, "/+# ") },
	}
	ok := []ConnectInfo{
		{ClientID: "d1", Username: "d1", Password: []byte("s3cret")},
		{ClientID: "d1", Username: "?SDK=Python&Version=1", Password: []byte("s3cret")},
		{ClientID: "d1", Password: []byte("s3cret")}, // MQTT 5 allows a password alone
		{ClientID: "anything", Username: "app", Password: []byte("svc")},
	}
	for _, c := range ok {
		if _, err := a.Authenticate(c); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	bad := []ConnectInfo{
		{ClientID: "d1", Username: "d1", Password: []byte("wrong")},
		{ClientID: "d1", Username: "d1"},
		{ClientID: "d2", Username: "d2", Password: []byte("s3cret")},
		{ClientID: "d1", Username: "someone-else", Password: []byte("s3cret")},
		{ClientID: "bad id", Username: "bad id", Password: []byte("s3cret")},
		{ClientID: "x", Username: "app", Password: []byte("wrong")},
	}
	for _, c := range bad {
		if _, err := a.Authenticate(c); err == nil {
			t.Errorf("%+v accepted", c)
		} else if strings.Contains(err.Error(), string(c.Password)) && len(c.Password) > 0 {
			t.Errorf("error %q leaks the password", err)
		}
	}
	// The verification cache is bound to the stored hash: a rotated secret
	// invalidates it without Forget.
	newHash, _ := bcrypt.GenerateFromPassword([]byte("rotated"), bcrypt.MinCost)
	a.Secrets.(secrets)["d1"] = newHash
	if _, err := a.Authenticate(ConnectInfo{ClientID: "d1", Username: "d1", Password: []byte("s3cret")}); err == nil {
		t.Fatal("old secret accepted after rotation (stale cache)")
	}
	if _, err := a.Authenticate(ConnectInfo{ClientID: "d1", Username: "d1", Password: []byte("rotated")}); err != nil {
		t.Fatal(err)
	}
}

// A device publishes its own AWS IoT Jobs requests, never a reply or
// notification topic, nor another thing's requests; it may subscribe to
// its own jobs replies and notifications only.
func TestDeviceJobsTopics(t *testing.T) {
	p := mustPolicy(t, nil, nil)
	d := Identity{Kind: Device, Name: "d1", ClientID: "d1"}
	for topic, want := range map[string]bool{
		"$aws/things/d1/jobs/get":                    true,
		"$aws/things/d1/jobs/start-next":             true,
		"$aws/things/d1/jobs/job-1/get":              true,
		"$aws/things/d1/jobs/$next/get":              true,
		"$aws/things/d1/jobs/job-1/update":           true,
		"$aws/things/d1/jobs/get/accepted":           false,
		"$aws/things/d1/jobs/start-next/rejected":    false,
		"$aws/things/d1/jobs/job-1/update/accepted":  false,
		"$aws/things/d1/jobs/notify":                 false,
		"$aws/things/d1/jobs/notify-next":            false,
		"$aws/things/d1/jobs//update":                false,
		"$aws/things/d1/jobs/job-1/delete":           false,
		"$aws/things/d2/jobs/get":                    false,
		"$aws/things/d2/jobs/job-1/update":           false,
		"$aws/things/d1x/jobs/start-next":            false,
		"$aws/things/d1/jobs/job-1/extra/get":        false,
		"$aws/things/d1/jobs/start-next/extra":       false,
		"$aws/things/d1/jobs":                        false,
		"$aws/things/d1/jobs/":                       false,
		"$aws/things/d1/jobs/job-1/update/rejected":  false,
		"$aws/things/d1/jobs/job-1/get/accepted/xyz": false,
	} {
		if got := p.CanPublish(d, topic); got != want {
			t.Errorf("device d1 publish %q = %v, want %v", topic, got, want)
		}
	}
	for filter, want := range map[string]bool{
		"$aws/things/d1/jobs/notify-next":       true,
		"$aws/things/d1/jobs/notify":            true,
		"$aws/things/d1/jobs/+/update/accepted": true,
		"$aws/things/d1/jobs/#":                 true,
		"$aws/things/d2/jobs/notify-next":       false,
		"$aws/things/+/jobs/notify-next":        false,
	} {
		if got := p.CanReceive(d, filter); got != want {
			t.Errorf("device d1 subscribe %q = %v, want %v", filter, got, want)
		}
	}
}
