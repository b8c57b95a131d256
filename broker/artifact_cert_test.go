package broker_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
)

// On the HTTPS listener a device may download with its client certificate
// (CN = thing) instead of a token: esp_https_ota presents the same
// certificate as the MQTT connection. A certificate for another thing than
// the URL names, a revoked certificate, or no certificate and no token, is
// refused with 403.
func TestArtifactDownloadWithDeviceCertificateAndDenyList(t *testing.T) {
	dir := t.TempDir()
	ca := testpkiCA(t, dir)
	now := time.Now()
	dev1 := ca.Client(t, dir, "dev-1", nil, now.Add(-time.Hour), now.Add(time.Hour))
	revoked := ca.Client(t, dir, "dev-9", nil, now.Add(-time.Hour), now.Add(time.Hour))
	fp := sha256.Sum256(revoked.TLS.Certificate[0])
	s := startSecuredCA(t, dir, ca, func(o *broker.Options) {
		o.Auth.DeniedCertificates = []string{"sha256:" + hex.EncodeToString(fp[:])}
	})
	img := randomImage(t, 30_000)
	req, _ := http.NewRequest("POST", s.HTTPURL()+"/api/artifacts?type=esp32&version=1.0.0", bytes.NewReader(img))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Authorization", "Bearer "+s.operator)
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	id := gjson.GetBytes(body, "id").String()

	get := func(cert *tls.Certificate, path string) (int, []byte) {
		t.Helper()
		conf := &tls.Config{RootCAs: ca.Pool()}
		if cert != nil {
			conf.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
		resp, err := c.Get(s.HTTPURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, b := get(&dev1.TLS, "/firmware/"+id); code != 200 || !bytes.Equal(b, img) {
		t.Fatalf("dev-1 by certificate: %d %.200s", code, b)
	}
	if code, b := get(&dev1.TLS, "/firmware/"+id+"?thing=dev-1"); code != 200 || !bytes.Equal(b, img) {
		t.Fatalf("dev-1 by certificate, URL naming dev-1: %d %.200s", code, b)
	}
	code, b := get(&dev1.TLS, "/firmware/"+id+"?thing=dev-2")
	if code != 403 || !strings.Contains(gjson.GetBytes(b, "message").String(), `certificate of "dev-1"`) {
		t.Fatalf("dev-1's certificate for dev-2's URL: %d %s", code, b)
	}
	code, b = get(&revoked.TLS, "/firmware/"+id)
	if code != 403 || !strings.Contains(gjson.GetBytes(b, "message").String(), "revoked") {
		t.Fatalf("revoked certificate: %d %s", code, b)
	}
	if code, b = get(nil, "/firmware/"+id); code != 403 {
		t.Fatalf("no certificate, no token: %d %s", code, b)
	}
}
