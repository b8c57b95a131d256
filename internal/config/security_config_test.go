package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// The issue 13 security keys decode from YAML into broker options, and the
// scalar ones have environment variables.
func TestSecurityKeys(t *testing.T) {
	f, err := Decode(strings.NewReader(`auth:
  enabled: true
  services:
    - name: ops
      password_bcrypt: x
      client_ids: [dev-1, "lab-*"]
  denied_certificates: ["serial:0A:1B", "sha256:` + strings.Repeat("ab", 32) + `"]
  login_throttle:
    failures_per_client: 3
    failures_per_address: -1
    max_backoff: 30s
    forget: 5m
registry:
  policy: auto
  recreate_deleted: true
`))
	if err != nil {
		t.Fatal(err)
	}
	o := f.Options()
	th := o.Auth.LoginThrottle
	if th.FailuresPerClient != 3 || th.FailuresPerAddress != -1 || th.MaxBackoff != 30*time.Second || th.Forget != 5*time.Minute {
		t.Errorf("login_throttle: %+v", th)
	}
	if len(o.Auth.DeniedCertificates) != 2 || !o.RecreateDeletedThings {
		t.Errorf("denied %v, recreate %v", o.Auth.DeniedCertificates, o.RecreateDeletedThings)
	}
	if got := o.Auth.Services[0].ClientIDs; !slices.Equal(got, []string{"dev-1", "lab-*"}) {
		t.Errorf("client_ids %v", got)
	}
	for _, name := range []string{"UMBRA_AUTH_LOGIN_THROTTLE_FAILURES_PER_CLIENT", "UMBRA_REGISTRY_RECREATE_DELETED"} {
		if !slices.Contains(EnvNames(), name) {
			t.Errorf("no environment variable %s (have %v)", name, EnvNames())
		}
	}
}
