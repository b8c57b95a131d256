package broker_test

// Firmware artifacts through the real HTTP API of an in-process Umbra:
// upload (streamed, checksummed, optionally signed), download with Range,
// ETag and per-device tokens, delete refused while a rollout references
// the artifact, durability across a restart.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/fakeclock"
)

type httpAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (a httpAnswer) json(path string) gjson.Result { return gjson.GetBytes(a.body, path) }

func artifactReq(t *testing.T, method, url string, body []byte, hdr map[string]string) httpAnswer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpAnswer{resp.StatusCode, resp.Header, b}
}

func want(t *testing.T, a httpAnswer, status int, what string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: HTTP %d, want %d; body %.300s", what, a.status, status, a.body)
	}
}

func randomImage(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func push(t *testing.T, srv *brokertest.Server, img []byte, version string, hdr map[string]string) httpAnswer {
	t.Helper()
	return artifactReq(t, "POST", srv.HTTPURL()+"/api/artifacts?type=esp32&version="+version, img, hdr)
}

func TestArtifactUploadDownloadRangeETagAndTokens(t *testing.T) {
	clock := fakeclock.New(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC))
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutClock = clock.Now })
	base := srv.HTTPURL()
	img := randomImage(t, 300_000)
	sum := sha256.Sum256(img)
	hexSum := hex.EncodeToString(sum[:])

	// A body changed in transit does not match the declared digest.
	tampered := bytes.Clone(img)
	tampered[1234] ^= 1
	a := push(t, srv, tampered, "1.2.0", map[string]string{"X-Umbra-SHA256": hexSum})
	want(t, a, 400, "tampered upload")
	if msg := a.json("message").String(); !strings.Contains(msg, "does not match the declared "+hexSum) || a.json("field").String() != "sha256" {
		t.Fatalf("tampered upload: message %q", a.body)
	}
	// JSON errors for bad input.
	want(t, artifactReq(t, "POST", base+"/api/artifacts?type=esp32&version=bad%20version", img, nil), 400, "bad version")
	want(t, artifactReq(t, "POST", base+"/api/artifacts?version=1.0.0", img, nil), 400, "no type")
	want(t, artifactReq(t, "POST", base+"/api/artifacts?type=esp32&version=1.0.0", img, map[string]string{"Content-Type": "text/plain"}), 415, "text/plain")

	a = push(t, srv, img, "1.2.0", map[string]string{"X-Umbra-SHA256": hexSum})
	want(t, a, 201, "upload")
	if a.json("id").String() != hexSum || a.json("size").Int() != int64(len(img)) || a.json("version").String() != "1.2.0" ||
		a.json("type").String() != "esp32" || a.json("uploadedAt").Int() != clock.Now().UnixMilli() || a.json("uploader").String() == "" {
		t.Fatalf("upload answer %s", a.body)
	}
	// Stored content-addressed in the data directory, nothing left in tmp.
	if onDisk, err := os.ReadFile(filepath.Join(srv.Options.DataDir, "artifacts", hexSum)); err != nil || !bytes.Equal(onDisk, img) {
		t.Fatalf("artifact file: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(srv.Options.DataDir, "artifacts", "tmp")); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
	want(t, push(t, srv, img, "1.2.0", nil), 200, "same image, same version again")
	a = push(t, srv, randomImage(t, 1000), "1.2.0", nil)
	want(t, a, 409, "other image, same version")
	if !strings.Contains(a.json("message").String(), "esp32@1.2.0 is already another image") {
		t.Fatalf("409 message: %s", a.body)
	}
	want(t, artifactReq(t, "GET", base+"/api/artifacts/esp32@1.2.0", nil, nil), 200, "get by type@version")
	want(t, artifactReq(t, "GET", base+"/api/artifacts/"+hexSum[:10], nil, nil), 200, "get by prefix")
	want(t, artifactReq(t, "GET", base+"/api/artifacts/esp32@9.9.9", nil, nil), 404, "unknown")
	if l := artifactReq(t, "GET", base+"/api/artifacts", nil, nil); l.json("artifacts.#").Int() != 1 {
		t.Fatalf("list: %s", l.body)
	}

	// Operator download: whole, conditional, ranges.
	content := base + "/api/artifacts/" + hexSum + "/content"
	a = artifactReq(t, "GET", content, nil, nil)
	want(t, a, 200, "content")
	etag := `"` + hexSum + `"`
	if !bytes.Equal(a.body, img) || a.header.Get("ETag") != etag || a.header.Get("Content-Length") != fmt.Sprint(len(img)) || a.header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("content: %d bytes, headers %v", len(a.body), a.header)
	}
	want(t, artifactReq(t, "GET", content, nil, map[string]string{"If-None-Match": etag}), 304, "If-None-Match")
	a = artifactReq(t, "GET", content, nil, map[string]string{"Range": "bytes=1000-1999"})
	want(t, a, 206, "range")
	if !bytes.Equal(a.body, img[1000:2000]) || a.header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(img)) {
		t.Fatalf("range: %d bytes, %v", len(a.body), a.header)
	}
	a = artifactReq(t, "GET", content, nil, map[string]string{"Range": "bytes=299000-", "If-Range": etag})
	want(t, a, 206, "If-Range with the current ETag")
	if !bytes.Equal(a.body, img[299000:]) {
		t.Fatal("If-Range range: wrong bytes")
	}
	want(t, artifactReq(t, "GET", content, nil, map[string]string{"Range": "bytes=1000-1999", "If-Range": `"stale"`}), 200, "If-Range with another ETag")
	want(t, artifactReq(t, "GET", content, nil, map[string]string{"Range": "bytes=400000-"}), 416, "range past the end")

	// Device download: the URL carries a token for this artifact and thing.
	u := artifactReq(t, "POST", base+"/api/artifacts/"+hexSum+"/url?thing=dev-1", nil, nil)
	want(t, u, 200, "device url")
	devURL := u.json("url").String()
	if !strings.HasPrefix(devURL, base+"/firmware/"+hexSum+"?") {
		t.Fatalf("device URL %s", devURL)
	}
	a = artifactReq(t, "GET", devURL, nil, map[string]string{"Range": "bytes=0-99"})
	want(t, a, 206, "device range")
	if !bytes.Equal(a.body, img[:100]) {
		t.Fatal("device range: wrong bytes")
	}
	// Foreign token: another thing's name, or another artifact.
	a = artifactReq(t, "GET", strings.Replace(devURL, "thing=dev-1", "thing=dev-2", 1), nil, nil)
	want(t, a, 403, "token of another thing")
	if !strings.Contains(a.json("message").String(), `not valid for artifact `+hexSum+` and thing "dev-2"`) || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("foreign token: %s", a.body)
	}
	other := randomImage(t, 5000)
	oa := push(t, srv, other, "1.3.0", nil)
	want(t, oa, 201, "second upload")
	otherID := oa.json("id").String()
	want(t, artifactReq(t, "GET", strings.Replace(devURL, hexSum, otherID, 1), nil, nil), 403, "token of another artifact")
	a = artifactReq(t, "GET", base+"/firmware/"+hexSum, nil, nil)
	want(t, a, 403, "no token")
	if !strings.Contains(a.json("message").String(), "needs thing, expires and token") {
		t.Fatalf("no token: %s", a.body)
	}
	// Expired: the token's lifetime (24h by default) has passed.
	clock.Add(24*time.Hour + time.Minute)
	a = artifactReq(t, "GET", devURL, nil, nil)
	want(t, a, 403, "expired token")
	if !strings.Contains(a.json("message").String(), "the token expired at") {
		t.Fatalf("expired: %s", a.body)
	}

	// Metrics count downloads and bytes.
	m := httpGet(t, base+"/metrics", 200)
	for _, line := range []string{`umbra_artifact_download_requests_total{code="206"} 3`, `umbra_artifact_download_requests_total{code="403"} 4`,
		`umbra_artifact_download_requests_total{code="304"} 1`, "umbra_artifact_downloads_total 3"} {
		if !strings.Contains(m, line) {
			t.Errorf("metrics lack %q", line)
		}
	}
	if !strings.Contains(m, fmt.Sprintf("umbra_artifact_download_bytes_total %d", 2*len(img)+1000+1000+100)) {
		t.Errorf("download bytes: %s", grepLines(m, "umbra_artifact_download_bytes_total"))
	}

	// Durable: after a restart the artifact is listed and served.
	srv = srv.Restart(t)
	a = artifactReq(t, "GET", srv.HTTPURL()+"/api/artifacts/"+hexSum+"/content", nil, nil)
	want(t, a, 200, "content after restart")
	if !bytes.Equal(a.body, img) {
		t.Fatal("content after restart differs")
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func writePublicKey(t *testing.T, pub any) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "firmware-key.pub")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestArtifactSignatureVerifiedOnUpload(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name, alg string
		pub       any
		sign      func(digest []byte) []byte
	}{
		{"ecdsa-p256", "ecdsa-p256", &ecKey.PublicKey, func(d []byte) []byte { s, _ := ecdsa.SignASN1(rand.Reader, ecKey, d); return s }},
		{"ed25519", "ed25519", edPub, func(d []byte) []byte { return ed25519.Sign(edKey, d) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keyFile := writePublicKey(t, tc.pub)
			srv := brokertest.Start(t, func(o *broker.Options) { o.Artifacts.PublicKeyFile = keyFile })
			img := randomImage(t, 50_000)
			sum := sha256.Sum256(img)
			sig := tc.sign(sum[:])
			b64 := base64.StdEncoding.EncodeToString(sig)

			a := push(t, srv, img, "2.0.0", nil)
			want(t, a, 400, "unsigned upload")
			if !strings.Contains(a.json("message").String(), "needs a signature") {
				t.Fatalf("unsigned: %s", a.body)
			}
			// The signature of the genuine image over a tampered one.
			tampered := bytes.Clone(img)
			tampered[0] ^= 0xff
			a = push(t, srv, tampered, "2.0.0", map[string]string{"X-Umbra-Signature": b64})
			want(t, a, 400, "tampered image")
			if msg := a.json("message").String(); !strings.Contains(msg, "does not verify") || !strings.Contains(msg, "tampered") || a.json("field").String() != "signature" {
				t.Fatalf("tampered: %s", a.body)
			}
			want(t, push(t, srv, img, "2.0.0", map[string]string{"X-Umbra-Signature": "%%%"}), 400, "signature not base64")
			a = push(t, srv, img, "2.0.0", map[string]string{"X-Umbra-Signature": b64})
			want(t, a, 201, "signed upload")
			if a.json("signatureAlgorithm").String() != tc.alg || a.json("signature").String() != b64 {
				t.Fatalf("signed upload: %s", a.body)
			}
			s := artifactReq(t, "GET", srv.HTTPURL()+"/api/artifacts/esp32@2.0.0/signature", nil, nil)
			want(t, s, 200, "signature")
			if !bytes.Equal(s.body, sig) || s.header.Get("X-Umbra-Signature-Algorithm") != tc.alg {
				t.Fatalf("served signature differs: %v", s.header)
			}
			// Devices fetch it with their download token too.
			u := artifactReq(t, "POST", srv.HTTPURL()+"/api/artifacts/esp32@2.0.0/url?thing=d1", nil, nil).json("url").String()
			sigURL := strings.Replace(u, "?", "/signature?", 1)
			if s = artifactReq(t, "GET", sigURL, nil, nil); s.status != 200 || !bytes.Equal(s.body, sig) {
				t.Fatalf("device signature: HTTP %d", s.status)
			}
		})
	}
}

func TestArtifactDeleteRefusedWhileARolloutReferencesIt(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	for i := range 3 {
		httpDo(t, "POST", base+"/api/things", fmt.Sprintf(`{"thingName":"dev-%d"}`, i), 201)
	}
	img := randomImage(t, 10_000)
	id := push(t, srv, img, "1.1.0", nil).json("id").String()
	spec := `{"name":"fw 1.1.0","target":"*","artifact":"esp32@1.1.0","waves":[{"name":"all","percent":100}]}`
	r := httpDo(t, "POST", base+"/api/rollouts", spec, 201)
	rid := gjson.Get(r, "id").String()
	if got := gjson.Get(r, "spec.artifact").String(); got != id {
		t.Fatalf("rollout spec.artifact %q, want the id %s", got, id)
	}
	if tv := gjson.Get(r, "spec.patch.target_version").String(); tv != "1.1.0" {
		t.Fatalf("rollout patch %s", gjson.Get(r, "spec.patch").Raw)
	}
	a := artifactReq(t, "DELETE", base+"/api/artifacts/"+id, nil, nil)
	want(t, a, 409, "delete while referenced")
	if !strings.Contains(a.json("message").String(), "referenced by rollout "+rid) {
		t.Fatalf("409: %s", a.body)
	}
	httpDo(t, "POST", base+"/api/rollouts/"+rid+"/cancel", "", 200)
	want(t, artifactReq(t, "DELETE", base+"/api/artifacts/"+id, nil, nil), 204, "delete after cancel")
	want(t, artifactReq(t, "GET", base+"/api/artifacts/"+id, nil, nil), 404, "deleted")
	if _, err := os.Stat(filepath.Join(srv.Options.DataDir, "artifacts", id)); !os.IsNotExist(err) {
		t.Fatalf("file still there: %v", err)
	}
	// A rollout cannot reference a missing artifact.
	a = artifactReq(t, "POST", base+"/api/rollouts", []byte(spec), map[string]string{"Content-Type": "application/json"})
	want(t, a, 400, "rollout of a deleted artifact")
	if a.json("field").String() != "artifact" {
		t.Fatalf("400: %s", a.body)
	}
}

// A bulk job may reference an artifact too: every thing gets its own
// download URL, and the URL a device got before a restart still works
// after it (the token key is kept in the database).
func TestArtifactJobWritesPerDeviceURLsThatSurviveARestart(t *testing.T) {
	srv := brokertest.Start(t)
	for i := range 2 {
		httpDo(t, "POST", srv.HTTPURL()+"/api/things", fmt.Sprintf(`{"thingName":"dev-%d"}`, i), 201)
	}
	img := randomImage(t, 40_000)
	id := push(t, srv, img, "3.0.0", nil).json("id").String()
	job := httpDo(t, "POST", srv.HTTPURL()+"/api/jobs", `{"name":"fw","target":"*","artifact":"esp32@3.0.0"}`, 201)
	if gjson.Get(job, "spec.artifact").String() != id {
		t.Fatalf("job %s", job)
	}
	urls := map[string]string{}
	for i := range 2 {
		thing := fmt.Sprintf("dev-%d", i)
		d := gjson.Get(httpGet(t, srv.HTTPURL()+"/things/"+thing+"/shadow", 200), "state.desired")
		if d.Get("target_version").String() != "3.0.0" || d.Get("ota_sha256").String() != id || d.Get("ota_size").Int() != int64(len(img)) ||
			!strings.Contains(d.Get("ota_url").String(), "thing="+thing+"&") {
			t.Fatalf("%s desired %s", thing, d)
		}
		urls[thing] = d.Get("ota_url").String()
	}
	if urls["dev-0"] == urls["dev-1"] {
		t.Fatal("both devices got the same URL")
	}
	want(t, artifactReq(t, "DELETE", srv.HTTPURL()+"/api/artifacts/"+id, nil, nil), 204, "delete: the job is completed")
	want(t, push(t, srv, img, "3.0.0", nil), 201, "upload again")

	srv = srv.Restart(t)
	base := srv.HTTPURL()
	for thing, u := range urls {
		// The listener has a new port after the restart; the path and
		// token are what matter.
		path := u[strings.Index(u, "/firmware/"):]
		a := artifactReq(t, "GET", base+path, nil, nil)
		want(t, a, 200, thing+"'s URL after a restart")
		if !bytes.Equal(a.body, img) {
			t.Fatalf("%s: wrong bytes", thing)
		}
	}
}

// An artifact with a job document: see jobs_artifact_test.go (placeholders
// substituted per device).

// A device that stays away longer than a download URL lives still gets a
// valid URL when it comes back within its deviceTimeout: the rollout writes
// a fresh ota_url once half the URL's lifetime has passed, and the old one
// is refused once expired.
func TestArtifactURLRefreshedForADeviceThatStaysAway(t *testing.T) {
	clock := fakeclock.New(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC))
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.RolloutClock = clock.Now
		o.RolloutInterval = 10 * time.Millisecond
		o.Artifacts.TokenTTL = 2 * time.Hour
	})
	base := srv.HTTPURL()
	httpDo(t, "POST", base+"/api/things", `{"thingName":"away-1"}`, 201)
	push(t, srv, randomImage(t, 5000), "1.1.0", nil)
	httpDo(t, "POST", base+"/api/rollouts", `{"name":"fw","target":"*","artifact":"esp32@1.1.0","start":true,
	  "waves":[{"name":"all","percent":100,"deviceTimeout":"48h"}]}`, 201)

	desiredURL := func(not string) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(50 * time.Millisecond) // under the API's per-client rate
		defer tick.Stop()
		for {
			var u string
			if resp, err := http.Get(base + "/things/away-1/shadow"); err == nil { // 404 until notified
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				u = gjson.GetBytes(body, "state.desired.ota_url").String()
			}
			if u != "" && u != not {
				return u
			}
			if time.Now().After(deadline) {
				t.Fatalf("desired ota_url is %q, want a URL other than %q", u, not)
			}
			<-tick.C
		}
	}
	status := func(u string) int {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	first := desiredURL("")
	clock.Add(61 * time.Minute) // past half the lifetime
	second := desiredURL(first)
	clock.Add(70 * time.Minute) // the first URL expired (2 h), the second not (3 h 1 min)
	if got := status(first); got != http.StatusForbidden {
		t.Fatalf("expired first URL: %d, want 403", got)
	}
	if got := status(second); got != http.StatusOK {
		t.Fatalf("refreshed URL: %d, want 200", got)
	}
}
