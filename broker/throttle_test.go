package broker_test

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/internal/auth"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// metric reads one counter from /metrics.
func (s *secured) metric(t *testing.T, name string) int {
	t.Helper()
	body := s.api(t, s.viewer, "GET", "/metrics", "", 200)
	m := regexp.MustCompile(`(?m)^` + name + ` (\d+)`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics lacks %s", name)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// Issue 13.9: failed logins are throttled per client id and per source
// address, refused before any bcrypt, and counted in /metrics. Limits are
// lowered (2 per client id, 5 per address) to keep bcrypts few.
func TestFailedLoginsAreThrottled(t *testing.T) {
	s := startSecured(t, func(o *broker.Options) {
		o.Auth.LoginThrottle = auth.ThrottleConfig{FailuresPerClient: 2, FailuresPerAddress: 5}
	})
	secretA, secretB := s.issue(t, "dev-a"), s.issue(t, "dev-b")
	s.issue(t, "dev-c")
	// dev-b logged in once: its known secret still gets through later.
	mt.Connect(t, s.tlsMQTTURL, "dev-b", s.trust(nil), withSecret("dev-b", secretB)).Disconnect(50)
	try := func(id, secret string) error {
		c, err := mt.TryConnect(s.tlsMQTTURL, id, s.trust(nil), withSecret(id, secret))
		if err == nil {
			c.Disconnect(0)
		}
		return err
	}
	for i := range 2 {
		if err := try("dev-a", "guess-"+strconv.Itoa(i)); err == nil {
			t.Fatal("wrong secret accepted")
		}
	}
	if f, th := s.metric(t, "umbra_mqtt_auth_failures_total"), s.metric(t, "umbra_mqtt_auth_throttled_total"); f != 2 || th != 0 {
		t.Fatalf("after 2 wrong secrets: failures %d, throttled %d; want 2, 0", f, th)
	}
	// dev-a backs off: even its right secret is refused, unchecked.
	if err := try("dev-a", secretA); err == nil {
		t.Fatal("dev-a logged in during its back-off")
	}
	if th := s.metric(t, "umbra_mqtt_auth_throttled_total"); th != 1 {
		t.Fatalf("throttled %d, want 1", th)
	}
	// Another device from the same address is not affected yet.
	if err := try("dev-b", secretB); err != nil {
		t.Fatalf("dev-b refused: %v", err)
	}
	// Three more checked failures from this address reach its limit (5).
	for i := range 2 {
		_ = try("dev-c", "guess-"+strconv.Itoa(i))
	}
	_ = try("dev-b", "guess")
	start := time.Now()
	for i := range 20 {
		if err := try("dev-c", "guess-again-"+strconv.Itoa(i)); err == nil {
			t.Fatal("guess accepted")
		}
	}
	t.Logf("20 throttled guesses took %v", time.Since(start))
	if th := s.metric(t, "umbra_mqtt_auth_throttled_total"); th != 21 {
		t.Fatalf("throttled %d, want 21", th)
	}
	// dev-b's secret, verified before in this process, costs no bcrypt
	// and still gets through while its address backs off.
	if err := try("dev-b", secretB); err != nil {
		t.Fatalf("dev-b refused while its address backs off: %v", err)
	}
}
