package broker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/sim"
)

// flakyLink sits between devices and Umbra's HTTP listener (devices get
// its address as the artifact public URL). A download that asks for the
// whole image is cut after cutAfter bytes (the connection is closed
// mid-body); requests with a Range pass whole. It records per thing which
// requests it saw.
type flakyLink struct {
	upstream atomic.Value // string: http://host:port
	cutAfter int
	mu       sync.Mutex
	seen     map[string][]string // thing → "full:cut" / "range:bytes=N-:206"
	url      string
}

func startFlakyLink(t *testing.T, cutAfter int) *flakyLink {
	l := &flakyLink{cutAfter: cutAfter, seen: map[string][]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: l}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	l.url = "http://" + ln.Addr().String()
	return l
}

func (l *flakyLink) note(thing, what string) {
	l.mu.Lock()
	l.seen[thing] = append(l.seen[thing], what)
	l.mu.Unlock()
}

func (l *flakyLink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, _ := http.NewRequest(r.Method, l.upstream.Load().(string)+r.URL.RequestURI(), nil)
	for k, v := range r.Header {
		req.Header[k] = v
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	thing := r.URL.Query().Get("thing")
	if rg := r.Header.Get("Range"); rg != "" {
		n, _ := io.Copy(w, resp.Body)
		l.note(thing, fmt.Sprintf("range:%s:%d:%d", rg, resp.StatusCode, n))
		return
	}
	if resp.StatusCode != 200 {
		io.Copy(w, resp.Body)
		l.note(thing, fmt.Sprintf("full:%d", resp.StatusCode))
		return
	}
	io.CopyN(w, resp.Body, int64(l.cutAfter))
	w.(http.Flusher).Flush()
	l.note(thing, "full:cut")
	panic(http.ErrAbortHandler) // drop the connection mid-body
}

func waitRolloutState(t *testing.T, srv *brokertest.Server, id string, states ...string) gjson.Result {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		r := gjson.Parse(httpGet(t, srv.HTTPURL()+"/api/rollouts/"+id, 200))
		for _, s := range states {
			if r.Get("state").String() == s {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout %s is %s, want %v; events %s", id, r.Get("state"), states, r.Get("events"))
		}
		<-tick.C
	}
}

// The promise: upload → rollout in waves → simulated devices
// download the image from Umbra with Range requests (each download is cut
// once and resumed) → verify its SHA-256 → report success → the rollout
// completes.
func TestArtifactRolloutSimulatedDevicesDownloadResumeVerify(t *testing.T) {
	link := startFlakyLink(t, 100_000)
	srv := brokertest.Start(t, func(o *broker.Options) { o.Artifacts.PublicURL = link.url })
	link.upstream.Store(srv.HTTPURL())

	img := randomImage(t, 300_000)
	sum := sha256.Sum256(img)
	a := push(t, srv, img, "1.1.0", nil)
	want(t, a, 201, "upload")
	id := a.json("id").String()

	const n = 6
	fl := startSimFleetWith(t, srv, n, 3, func(c *sim.Config) { c.Download = true })
	spec := `{"name":"fw 1.1.0","target":"*","artifact":"esp32@1.1.0","start":true,
		"waves":[{"name":"canary","query":"attributes.deployment_ring:canary"},{"name":"rest","percent":100}]}`
	r := gjson.Parse(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", spec, 201))
	rid := r.Get("id").String()
	done := waitRolloutState(t, srv, rid, "completed", "halted")
	if done.Get("state").String() != "completed" {
		t.Fatalf("rollout %s: %s", done.Get("state"), done.Get("events"))
	}
	if w := done.Get("waves"); w.Get("0.size").Int() != 2 || w.Get("1.succeeded").Int() != 4 {
		t.Fatalf("waves %s", w)
	}

	for _, thing := range fl.ids {
		doc := gjson.Parse(httpGet(t, srv.HTTPURL()+"/things/"+thing+"/shadow", 200))
		rep := doc.Get("state.reported")
		if rep.Get("firmware_version").String() != "1.1.0" || rep.Get("ota_sha256").String() != fmt.Sprintf("%x", sum) ||
			rep.Get("ota_size").Int() != int64(len(img)) || rep.Get("ota_status").String() != "succeeded" {
			t.Errorf("%s reported %s", thing, rep)
		}
		// Converged: nothing of the update is left in desired.
		if d := doc.Get("state.desired"); d.Get("ota_url").Exists() || d.Get("target_version").Exists() || d.Get("ota_sha256").Exists() {
			t.Errorf("%s desired still %s", thing, d)
		}
		// The device's download was cut, then resumed with a Range that
		// starts where the cut left it, answered 206 with the rest.
		link.mu.Lock()
		seen := link.seen[thing]
		link.mu.Unlock()
		wantSeen := []string{"full:cut", fmt.Sprintf("range:bytes=100000-:206:%d", len(img)-100_000)}
		if strings.Join(seen, " ") != strings.Join(wantSeen, " ") {
			t.Errorf("%s downloads %v, want %v", thing, seen, wantSeen)
		}
	}
	st := fl.Stats()
	if st.DownloadsVerified != n || st.DownloadResumes != n || st.OTASucceeded != n {
		t.Errorf("sim stats: %+v", st)
	}
	devs := gjson.Parse(httpGet(t, srv.HTTPURL()+"/api/rollouts/"+rid+"/devices", 200))
	devs.Get("devices").ForEach(func(_, d gjson.Result) bool {
		if d.Get("state").String() != "succeeded" || d.Get("ota.status").String() != "succeeded" || d.Get("ota.progress").Int() != 100 {
			t.Errorf("rollout device %s", d)
		}
		return true
	})
	m := httpGet(t, srv.HTTPURL()+"/metrics", 200)
	// The server counts what it wrote: the cut requests' bytes went into
	// the link's buffers, so each may count as delivered too.
	completed := gjson.Get(`{"v":`+strings.TrimPrefix(grepLines(m, "umbra_artifact_downloads_total "), "umbra_artifact_downloads_total ")+`}`, "v").Int()
	if completed < n || completed > 2*n || !strings.Contains(m, fmt.Sprintf(`umbra_artifact_download_requests_total{code="200"} %d`, n)) ||
		!strings.Contains(m, fmt.Sprintf(`umbra_artifact_download_requests_total{code="206"} %d`, n)) {
		t.Errorf("metrics: %s", grepLines(m, "umbra_artifact"))
	}
	// Referenced by a completed rollout only: the artifact may go now.
	want(t, artifactReq(t, "DELETE", srv.HTTPURL()+"/api/artifacts/"+id, nil, nil), 204, "delete after completion")
}

// A device that holds the signing key refuses an image signed with
// another key: it reports ota_status failed with the reason, and the
// rollout halts in the canary.
func TestArtifactRolloutDeviceRefusesAnImageWhoseSignatureFails(t *testing.T) {
	srv := brokertest.Start(t)
	img := randomImage(t, 20_000)
	sum := sha256.Sum256(img)
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	deviceKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sig, _ := ecdsa.SignASN1(rand.Reader, signer, sum[:])
	// No key on the server: the signature is stored and served unchecked.
	want(t, push(t, srv, img, "1.1.0", map[string]string{"X-Umbra-Signature": base64.StdEncoding.EncodeToString(sig)}), 201, "upload")
	fl := startSimFleetWith(t, srv, 3, 3, func(c *sim.Config) { c.Download = true; c.SigningKey = &deviceKey.PublicKey })
	spec := `{"name":"fw","target":"*","artifact":"esp32@1.1.0","start":true,"failureCondition":"shadow.reported.ota_status:failed",
		"waves":[{"name":"canary","query":"attributes.deployment_ring:canary"},{"name":"rest","percent":100}]}`
	rid := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", spec, 201), "id").String()
	done := waitRolloutState(t, srv, rid, "halted", "completed")
	if done.Get("state").String() != "halted" {
		t.Fatalf("rollout %s", done.Get("state"))
	}
	canary := fl.ids[0]
	rep := gjson.Get(httpGet(t, srv.HTTPURL()+"/things/"+canary+"/shadow", 200), "state.reported")
	if rep.Get("firmware_version").String() != "1.0.0" || !strings.Contains(rep.Get("ota_error").String(), "signature does not verify") {
		t.Fatalf("canary reported %s", rep)
	}
	if got := fl.Stats().OTASucceeded; got != 0 {
		t.Fatalf("%d devices installed the badly signed image", got)
	}
}

// Signed end to end: the server checks the signature at upload, desired
// state carries it (ota_signature), and devices holding the same public key
// verify it before they install.
func TestArtifactRolloutSignedImageVerifiedByDevices(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyFile := writePublicKey(t, &key.PublicKey)
	srv := brokertest.Start(t, func(o *broker.Options) { o.Artifacts.PublicKeyFile = keyFile })
	img := randomImage(t, 64_000)
	sum := sha256.Sum256(img)
	sig, _ := ecdsa.SignASN1(rand.Reader, key, sum[:])
	b64 := base64.StdEncoding.EncodeToString(sig)
	want(t, push(t, srv, img, "2.0.0", map[string]string{"X-Umbra-Signature": b64}), 201, "signed upload")
	fl := startSimFleetWith(t, srv, 3, 3, func(c *sim.Config) { c.Download = true; c.SigningKey = &key.PublicKey })
	spec := `{"name":"fw","target":"*","artifact":"esp32@2.0.0","start":true,"failureCondition":"shadow.reported.ota_status:failed",
		"waves":[{"name":"all","percent":100}]}`
	rid := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", spec, 201), "id").String()
	if done := waitRolloutState(t, srv, rid, "completed", "halted"); done.Get("state").String() != "completed" {
		t.Fatalf("rollout %s: %s", done.Get("state"), done.Get("events"))
	}
	for _, thing := range fl.ids {
		rep := gjson.Get(httpGet(t, srv.HTTPURL()+"/things/"+thing+"/shadow", 200), "state.reported")
		if rep.Get("firmware_version").String() != "2.0.0" || rep.Get("ota_signature").String() != b64 {
			t.Errorf("%s reported %s", thing, rep)
		}
	}
	if st := fl.Stats(); st.DownloadsVerified != 3 {
		t.Fatalf("sim stats %+v", st)
	}
}
