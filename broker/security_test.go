package broker_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// The ACL matrix: for each pair of devices, every shadow and application
// topic class, publish and subscribe: a device reaches only its own.
func TestACLMatrixDevicesReachOnlyTheirOwnTopics(t *testing.T) {
	s := startSecured(t)
	things := []string{"dev-a", "dev-b"}
	clients := map[string]*mt.Client{}
	for _, th := range things {
		clients[th] = mt.Connect(t, s.tlsMQTTURL, th, s.trust(nil), withSecret(th, s.issue(t, th)))
	}
	for _, own := range things {
		other := things[0]
		if other == own {
			other = things[1]
		}
		c := clients[own]
		t.Run(own+" subscribe", func(t *testing.T) {
			allowed := []string{
				"$aws/things/" + own + "/shadow/update/accepted",
				"$aws/things/" + own + "/shadow/update/delta",
				"$aws/things/" + own + "/shadow/name/cfg/get/accepted",
				"$aws/things/" + own + "/shadow/update/#",
				"$aws/things/" + own + "/shadow/#",
				"things/" + own + "/cmd",
				"things/" + own + "/#",
			}
			denied := []string{
				"$aws/things/" + other + "/shadow/update/accepted",
				"$aws/things/" + other + "/shadow/#",
				"$aws/things/+/shadow/update/delta",
				"$aws/things/+/shadow/name/+/update/delta",
				"$aws/things/#",
				"$aws/#",
				"#",
				"+/things/" + own + "/shadow/update/accepted",
				"+/+/" + own + "/shadow/update/delta",
				"$share/g/$aws/things/" + own + "/shadow/update/delta",
				"$share/g/#",
				"things/" + other + "/#",
				"things/+/cmd",
				"things/#",
				"$SYS/#",
				"$aws/events/presence/connected/+",
			}
			for _, f := range allowed {
				if code := subscribeCode(t, c.Client, f); code >= 0x80 {
					t.Errorf("own filter %q refused (0x%02x)", f, code)
				}
			}
			for _, f := range denied {
				if code := subscribeCode(t, c.Client, f); code < 0x80 {
					t.Errorf("filter %q granted (QoS %d), want refused", f, code)
				}
			}
		})
		t.Run(own+" publish", func(t *testing.T) {
			mine := c.Subscribe("things/"+own+"/#", 1)
			theirs := clients[other].Subscribe("things/"+other+"/#", 1)
			delta := c.Subscribe("$aws/things/"+own+"/shadow/update/delta", 1)
			// Denied publishes go at QoS 0: Mochi drops them silently (at
			// QoS 1 an MQTT 3.1.1 client would be disconnected).
			for _, topic := range []string{
				"$aws/things/" + other + "/shadow/update",
				"$aws/things/" + other + "/shadow/name/cfg/update",
				"$aws/things/" + other + "/shadow/delete",
				"$aws/things/" + own + "/shadow/update/delta",    // spoofing a reply
				"$aws/things/" + own + "/shadow/update/accepted", // spoofing a reply
				"$aws/things/" + own + "/shadow/get/accepted",
				"things/" + other + "/cmd",
				"things/" + own, // the namespace root itself is not a topic of it
				"somewhere/else",
			} {
				c.Publish(topic, 0, false, `{"state":{"desired":{"spoofed":true}}}`)
			}
			// Barriers: the client's packets are processed in order, so once
			// these allowed publishes have had their effect, the denied ones
			// above were processed (and dropped) before them.
			c.Publish("$aws/things/"+own+"/shadow/update", 1, false, `{"state":{"desired":{"real":1}}}`)
			if m := mt.Next(t, delta); strings.Contains(string(m.Payload), "spoofed") || gjson.GetBytes(m.Payload, "state.real").Int() != 1 {
				t.Fatalf("first delta %s, want the real one", m.Payload)
			}
			c.Publish("things/"+own+"/marker", 1, false, "m")
			if m := mt.Next(t, mine); m.Topic != "things/"+own+"/marker" {
				t.Fatalf("own namespace got %s before the marker", m.Topic)
			}
			clients[other].Publish("things/"+other+"/marker", 1, false, "m")
			if m := mt.Next(t, theirs); m.Topic != "things/"+other+"/marker" {
				t.Fatalf("%s received %s (%s) from %s", other, m.Topic, m.Payload, own)
			}
			for _, q := range []string{"", "?name=cfg"} {
				req, _ := http.NewRequest("GET", s.HTTPURL()+"/things/"+other+"/shadow"+q, nil)
				req.Header.Set("Authorization", "Bearer "+s.viewer)
				resp, err := s.http.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(body), "spoofed") {
					t.Fatalf("%s wrote %s's shadow%s: %s", own, other, q, body)
				}
			}
		})
	}
}

// Retained messages and the service principal: a service may write other
// things' topics per its rules; a device still sees only its own.
func TestRetainedAndServiceRules(t *testing.T) {
	s := startSecured(t)
	svc := mt.Connect(t, s.tlsMQTTURL, "dash-1", s.trust(nil), withSecret("dashboard", s.servicePassword))
	svc.Publish("things/dev-b/cmd", 1, true, "retained for b")
	svc.Publish("$aws/things/dev-b/shadow/update", 1, false, `{"state":{"desired":{"led":true}}}`)

	a := mt.Connect(t, s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", s.issue(t, "dev-a")))
	mine := a.Subscribe("things/dev-a/#", 1)
	a.Publish("things/dev-a/marker", 1, false, "m")
	if m := mt.Next(t, mine); m.Topic != "things/dev-a/marker" {
		t.Fatalf("dev-a got %s before its marker", m.Topic)
	}
	b := mt.Connect(t, s.tlsMQTTURL, "dev-b", s.trust(nil), withSecret("dev-b", s.issue(t, "dev-b")))
	if m := mt.Next(t, b.Subscribe("things/dev-b/#", 1)); !m.Retained || string(m.Payload) != "retained for b" {
		t.Fatalf("dev-b retained: %+v", m)
	}
	// {clientid} substitution: the service reads app/dash-1/..., not app/other/...
	if code := subscribeCode(t, svc.Client, "app/dash-1/#"); code >= 0x80 {
		t.Fatalf("service own app namespace refused")
	}
	if code := subscribeCode(t, svc.Client, "app/dash-2/#"); code < 0x80 {
		t.Fatalf("service subscribed to another client's app namespace")
	}
	if code := subscribeCode(t, svc.Client, "$share/workers/$aws/things/+/shadow/update/documents"); code >= 0x80 {
		t.Fatalf("service shared subscription within its rules refused")
	}
	if code := subscribeCode(t, svc.Client, "#"); code < 0x80 {
		t.Fatalf("service subscribed to #")
	}
	hist := s.api(t, s.viewer, "GET", "/things/dev-b/shadow/history", "", 200)
	if p := gjson.Get(hist, "entries.0.principal").String(); p != "service:dashboard/dash-1" {
		t.Fatalf("history principal %q", p)
	}
}

// MQTT 5 topic aliases: Mochi checks the ACL before resolving an alias, so
// Umbra resolves it first; an alias never reaches another thing's topic.
func TestTopicAliasesCannotBypassACL(t *testing.T) {
	s := startSecured(t)
	secret := s.issue(t, "dev-a")
	conn, err := tls.Dial("tcp", s.MQTTAddr(), &tls.Config{RootCAs: s.ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	// paho.golang writes a packet in several writes and from more than one
	// goroutine; over TLS (unlike TCP, one writev) they can interleave
	// unless the connection serialises them, which its documentation asks
	// for. Unwrapped, 3 runs in 120 lost a PUBACK here.
	c := paho5.NewClient(paho5.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn)})
	ctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
	defer cancel()
	if _, err := c.Connect(ctx, &paho5.Connect{ClientID: "dev-a", CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: "dev-a", PasswordFlag: true, Password: []byte(secret)}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho5.Disconnect{})
	pub := func(topic string, alias uint16) byte {
		p := &paho5.Publish{Topic: topic, QoS: 1, Payload: []byte(`{"state":{"reported":{"x":1}}}`),
			Properties: &paho5.PublishProperties{TopicAlias: &alias}}
		resp, err := c.Publish(ctx, p)
		if resp == nil {
			t.Fatalf("publish %q alias %d: %v", topic, alias, err)
		}
		return resp.ReasonCode
	}
	if rc := pub("$aws/things/dev-a/shadow/update", 1); rc != 0 {
		t.Fatalf("own topic with alias: reason 0x%02x", rc)
	}
	if rc := pub("", 1); rc != 0 {
		t.Fatalf("own alias reused: reason 0x%02x", rc)
	}
	if rc := pub("$aws/things/dev-b/shadow/update", 2); rc != 0x87 {
		t.Fatalf("other thing's topic with alias: reason 0x%02x, want 0x87 not authorized", rc)
	}
	if rc := pub("", 2); rc != 0x87 {
		t.Fatalf("alias to other thing's topic: reason 0x%02x, want 0x87", rc)
	}
	// An alias within the announced maximum (8) that was never set. One
	// above it is a protocol error (DISCONNECT 0x94, and paho refuses to
	// send it): TestConnackAnnouncesLimitsAndViolationsGetReasons.
	if rc := pub("", 3); rc != 0x87 {
		t.Fatalf("unknown alias: reason 0x%02x, want 0x87", rc)
	}
	if doc := s.api(t, s.viewer, "GET", "/things/dev-a/shadow", "", 200); gjson.Get(doc, "version").Int() != 2 {
		t.Fatalf("own shadow after two aliased updates: %s", doc)
	}
	s.api(t, s.viewer, "GET", "/things/dev-b/shadow", "", 404)
}

func TestMutualTLSDeviceIdentity(t *testing.T) {
	s := startSecured(t)
	now := time.Now()
	valid := s.ca.Client(t, s.dir, "dev-a", nil, now.Add(-time.Hour), now.Add(time.Hour))
	bySAN := s.ca.Client(t, s.dir, "some-label", []string{"dev-c"}, now.Add(-time.Hour), now.Add(time.Hour))
	expired := s.ca.Client(t, s.dir, "dev-a", nil, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	rogueCA := testpkiCA(t, s.dir)
	untrusted := rogueCA.Client(t, s.dir, "dev-a", nil, now.Add(-time.Hour), now.Add(time.Hour))

	for _, url := range []string{s.tlsMQTTURL, s.tlsWSURL} {
		t.Run(strings.SplitN(url, ":", 2)[0], func(t *testing.T) {
			// A valid certificate naming the thing; the SDK-metrics username is ignored.
			c := mt.Connect(t, url, "dev-a", s.trust(&valid.TLS), withSecret("?SDK=JavaScript&Version=1.0", ""))
			acc := c.Subscribe("$aws/things/dev-a/shadow/update/accepted", 1)
			c.Publish("$aws/things/dev-a/shadow/update", 1, false, `{"state":{"reported":{"tls":true}}}`)
			mt.Next(t, acc)
			c.Disconnect(50)

			if _, err := mt.TryConnect(url, "dev-c", s.trust(&bySAN.TLS)); err != nil {
				t.Errorf("certificate with a DNS SAN naming the thing: %v", err)
			}
			refused := map[string]func(*paho.ClientOptions){
				"certificate of another thing": s.trust(&valid.TLS), // used with client id dev-b below
				"expired certificate":          s.trust(&expired.TLS),
				"untrusted certificate":        s.trust(&untrusted.TLS),
			}
			for name, opt := range refused {
				id := "dev-a"
				if name == "certificate of another thing" {
					id = "dev-b"
				}
				if c, err := mt.TryConnect(url, id, opt); err == nil {
					c.Disconnect(0)
					t.Errorf("%s: connected, want refused", name)
				}
			}
		})
	}
}

func TestDeviceSecretsWrongRotatedRevoked(t *testing.T) {
	s := startSecured(t)
	old := s.issue(t, "dev-a")
	if c, err := mt.TryConnect(s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", "wrong")); err == nil {
		c.Disconnect(0)
		t.Fatal("wrong secret accepted")
	}
	if c, err := mt.TryConnect(s.tlsMQTTURL, "dev-b", s.trust(nil), withSecret("dev-b", old)); err == nil {
		c.Disconnect(0)
		t.Fatal("dev-a's secret accepted for client id dev-b")
	}
	lost := make(chan struct{}, 1)
	mt.Connect(t, s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", old), func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(paho.Client, error) { lost <- struct{}{} })
	})
	rotated := s.issue(t, "dev-a")
	select {
	case <-lost:
	case <-time.After(mt.Wait):
		t.Fatal("rotating the secret did not end the connection made with the old one")
	}
	if c, err := mt.TryConnect(s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", old)); err == nil {
		c.Disconnect(0)
		t.Fatal("old secret accepted after rotation")
	}
	c := mt.Connect(t, s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", rotated))
	c.Disconnect(50)
	s.api(t, s.admin, "DELETE", "/api/things/dev-a/credentials", "", 204)
	s.api(t, s.admin, "DELETE", "/api/things/dev-a/credentials", "", 404)
	if c, err := mt.TryConnect(s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", rotated)); err == nil {
		c.Disconnect(0)
		t.Fatal("revoked secret accepted")
	}
	if c, err := mt.TryConnect(s.tlsMQTTURL, "dev-z", s.trust(nil)); err == nil {
		c.Disconnect(0)
		t.Fatal("device with neither secret nor certificate accepted")
	}
}

// Each role against each endpoint class.
func TestAPIRoles(t *testing.T) {
	s := startSecured(t)
	type call struct{ method, path, body string }
	read := call{"GET", "/things/dev-a/shadow", ""}
	write := call{"POST", "/things/dev-a/shadow", `{"state":{"desired":{"x":1}}}`}
	admin := call{"POST", "/api/things/dev-a/credentials", ""}
	metrics := call{"GET", "/metrics", ""}
	want := map[string]map[call]int{
		"":         {read: 401, write: 401, admin: 401, metrics: 401},
		"bogus":    {read: 401, write: 401, admin: 401, metrics: 401},
		s.viewer:   {read: 404, write: 403, admin: 403, metrics: 200},
		s.operator: {read: 404, write: 200, admin: 403, metrics: 200},
		s.admin:    {read: 200, write: 200, admin: 201, metrics: 200},
	}
	for _, key := range []string{"", "bogus", s.viewer, s.operator, s.admin} {
		for _, c := range []call{read, write, admin, metrics} {
			s.api(t, key, c.method, c.path, c.body, want[key][c])
		}
	}
	s.api(t, "", "GET", "/healthz", "", 200)
	s.api(t, "", "GET", "/readyz", "", 200)
	hist := s.api(t, s.viewer, "GET", "/things/dev-a/shadow/history", "", 200)
	if p := gjson.Get(hist, "entries.1.principal").String(); p != "apikey:ops" {
		t.Fatalf("history principal of the operator's update: %q (%s)", p, hist)
	}
}

func TestShadowRateLimitAnswers429(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Limits.ShadowRate = 1; o.Limits.ShadowBurst = 1 })
	c := mt.Connect(t, srv.MQTTURL(), "chatty")
	rej := c.Subscribe("$aws/things/chatty/shadow/update/rejected", 1)
	acc := c.Subscribe("$aws/things/chatty/shadow/update/accepted", 1)
	c.Publish("$aws/things/chatty/shadow/update", 1, false, `{"state":{"reported":{"n":1}},"clientToken":"t1"}`)
	mt.Next(t, acc)
	c.Publish("$aws/things/chatty/shadow/update", 1, false, `{"state":{"reported":{"n":2}},"clientToken":"t2"}`)
	m := mt.Next(t, rej)
	if gjson.GetBytes(m.Payload, "code").Int() != 429 || gjson.GetBytes(m.Payload, "message").String() != "Too Many Requests" ||
		gjson.GetBytes(m.Payload, "clientToken").String() != "t2" {
		t.Fatalf("second update within a second: %s", m.Payload)
	}
	// Another thing has its own allowance.
	acc2 := c.Subscribe("$aws/things/quiet/shadow/update/accepted", 1)
	c.Publish("$aws/things/quiet/shadow/update", 1, false, `{"state":{"reported":{"n":1}}}`)
	mt.Next(t, acc2)
}

func TestSafeDefaults(t *testing.T) {
	_, err := broker.New(broker.Options{MQTTAddr: "0.0.0.0:0", WSAddr: broker.Off, HTTPAddr: broker.Off, DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "allow_unauthenticated_remote") || !strings.Contains(err.Error(), "auth.enabled") {
		t.Fatalf("open broker on 0.0.0.0: %v", err)
	}
	if _, err := broker.New(broker.Options{MQTTAddr: ":1883", DataDir: t.TempDir()}); err == nil {
		t.Fatal("open broker on all interfaces (empty host) accepted")
	}
	if _, err := broker.New(broker.Options{MQTTAddr: "0.0.0.0:0", DataDir: t.TempDir(),
		Auth: broker.AuthOptions{AllowUnauthenticatedRemote: true}}); err != nil {
		t.Fatalf("explicitly allowed open broker: %v", err)
	}
	if _, err := broker.New(broker.Options{MQTTAddr: "0.0.0.0:0", DataDir: t.TempDir(), Auth: broker.AuthOptions{Enabled: true}}); err != nil {
		t.Fatalf("authenticated broker on 0.0.0.0: %v", err)
	}
	if _, err := broker.New(broker.Options{DataDir: t.TempDir(), TLS: broker.TLSOptions{CertFile: "/nonexistent.pem", KeyFile: "/nonexistent.key"}}); err == nil ||
		!strings.Contains(err.Error(), "nonexistent.pem") {
		t.Fatalf("missing certificate: %v", err)
	}
}

func TestMaxConnectionsPerAddress(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Limits.MaxConnsPerIP = 2 })
	for i := range 2 {
		mt.Connect(t, srv.MQTTURL(), fmt.Sprintf("c%d", i))
	}
	c, err := net.Dial("tcp", srv.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(mt.Wait))
	if _, err := io.ReadFull(c, make([]byte, 1)); err == nil {
		t.Fatal("third connection from one address was served")
	}
}

// Mochi sends a will without an ACL check, so a will on a topic the device
// may not publish is refused at CONNECT.
func TestWillTopicIsCheckedAtConnect(t *testing.T) {
	s := startSecured(t)
	secret := s.issue(t, "dev-a")
	will := func(topic string) func(*paho.ClientOptions) {
		return func(o *paho.ClientOptions) { o.SetWill(topic, "gone", 1, false) }
	}
	if c, err := mt.TryConnect(s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", secret), will("things/dev-b/status")); err == nil {
		c.Disconnect(0)
		t.Fatal("will on another thing's topic accepted")
	}
	c := mt.Connect(t, s.tlsMQTTURL, "dev-a", s.trust(nil), withSecret("dev-a", secret), will("things/dev-a/status"))
	c.Disconnect(50)
}

// GET /api/whoami names the caller's key and role; without authentication
// every caller is an anonymous admin.
func TestWhoAmI(t *testing.T) {
	s := startSecured(t)
	for key, want := range map[string]string{s.viewer: `{"authentication":true,"name":"dash","role":"viewer"}`, s.admin: `{"authentication":true,"name":"root","role":"admin"}`} {
		if got := strings.TrimSpace(s.api(t, key, "GET", "/api/whoami", "", 200)); got != want {
			t.Errorf("whoami = %s, want %s", got, want)
		}
	}
	s.api(t, "", "GET", "/api/whoami", "", 401)
	s.api(t, "not-a-key", "GET", "/api/whoami", "", 401)

	open := brokertest.Start(t)
	if got := strings.TrimSpace(httpGet(t, open.HTTPURL()+"/api/whoami", 200)); got != `{"authentication":false,"name":"anonymous","role":"admin"}` {
		t.Errorf("whoami without authentication = %s", got)
	}
}
