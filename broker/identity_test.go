package broker_test

import (
	"crypto/tls"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// raceIterations is how many times the identity race is run; override with
// UMBRA_RACE_ITERATIONS for a longer hunt.
func raceIterations(def int) int {
	if n, err := strconv.Atoi(os.Getenv("UMBRA_RACE_ITERATIONS")); err == nil && n > 0 {
		return n
	}
	return def
}

// Issue 13.1: a device with only its own certificate connects with client
// id = its name and username = a service's name, and races a second
// connection against the first: the first connection's end must never
// change who the second is. Each round writes the first connection's
// DISCONNECT and the second's CONNECT at the same moment (TLS handshakes
// done beforehand), then asks the second for every shadow.
func TestCertificateDeviceCannotBecomeAServiceByRacing(t *testing.T) {
	s := startSecured(t)
	now := time.Now()
	cert := s.ca.Client(t, s.dir, "dev-a", nil, now.Add(-time.Hour), now.Add(time.Hour))
	conf := &tls.Config{RootCAs: s.ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert.TLS}}
	connect := rawConnectPacket("dev-a", "dashboard", "", true)
	rounds := raceIterations(300)
	wins, connected := 0, 0
	for i := range rounds {
		a, err := dialRawTLS(s.MQTTAddr(), conf)
		if err != nil {
			t.Fatal(err)
		}
		if rc, err := a.connack(connect); err != nil || rc != 0 {
			t.Fatalf("round %d: first connection: rc %d, %v", i, rc, err)
		}
		b, err := dialRawTLS(s.MQTTAddr(), conf)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if i%2 == 0 {
				_, _ = a.Write(rawDisconnectPacket)
			} else {
				_ = a.Close()
			}
		})
		rc, err := b.connack(connect)
		wg.Wait()
		_ = a.Close()
		if err == nil && rc == 0 {
			connected++
			code, err := b.suback("$aws/things/+/shadow/#")
			if err == nil && code < 0x80 {
				wins++
			}
		}
		_ = b.Close()
	}
	t.Logf("identity race: %d rounds, %d second connections accepted, %d became the service", rounds, connected, wins)
	if wins > 0 {
		t.Fatalf("a certificate device became service %q in %d of %d rounds", "dashboard", wins, rounds)
	}
	if connected == 0 {
		t.Fatal("no second connection was accepted: the race was never run")
	}
}
