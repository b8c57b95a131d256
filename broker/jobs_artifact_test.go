package broker_test

// A job document (a bulk job's document, a rollout's jobDocument) that
// names a stored firmware artifact: its ${umbra:artifact.*} placeholders
// are replaced per device each time the device reads the document through
// the AWS IoT Jobs device API, with a download URL minted for that device.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/fakeclock"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/sim"
)

const artifactDoc = `{"operation":"ota","firmware":{"version":"${umbra:artifact.version}","url":"${umbra:artifact.url}",` +
	`"sha256":"${umbra:artifact.sha256}","size":"${umbra:artifact.size}","note":"${umbra:artifact.size} bytes of ${umbra:artifact.version}"},"steps":[1,true,null,"${aws:keep-me}"]}`

// jobsArtifactDevice is a device speaking the Jobs API with a real MQTT
// client: it waits for notify-next naming a QUEUED execution, then calls
// start-next and returns both documents it received.
type jobsArtifactDevice struct {
	c      *mt.Client
	p      string
	notify <-chan mt.Message
	start  <-chan mt.Message
	get    <-chan mt.Message
}

func newJobsArtifactDevice(t *testing.T, srv *brokertest.Server, id string) *jobsArtifactDevice {
	c := mt.Connect(t, srv.MQTTURL(), id)
	p := "$aws/things/" + id + "/jobs"
	return &jobsArtifactDevice{c: c, p: p, notify: c.Subscribe(p+"/notify-next", 1), start: c.Subscribe(p+"/start-next/+", 1), get: c.Subscribe(p+"/+/get/+", 1)}
}

// checkDoc checks a document as thing received it: its own URL and the
// image's fields; it returns the URL.
func checkDoc(t *testing.T, thing string, doc gjson.Result, img []byte) string {
	t.Helper()
	sum := sha256.Sum256(img)
	fw := doc.Get("firmware")
	u := fw.Get("url").String()
	if !strings.Contains(u, "/firmware/"+hex.EncodeToString(sum[:])+"?") || !strings.Contains(u, "thing="+thing+"&") || !strings.Contains(u, "token=") ||
		fw.Get("sha256").String() != hex.EncodeToString(sum[:]) || fw.Get("size").Type != gjson.Number || fw.Get("size").Int() != int64(len(img)) ||
		fw.Get("version").String() != "1.2.0" || fw.Get("note").String() != fmt.Sprintf("%d bytes of 1.2.0", len(img)) ||
		doc.Get("steps").Raw != `[1,true,null,"${aws:keep-me}"]` || strings.Contains(doc.Raw, "${umbra:") {
		t.Fatalf("%s received document %s", thing, doc.Raw)
	}
	return u
}

// rawURL checks the URL is written plainly in the payload: a device's
// JSON parser that does not decode escapes (coreJSON, as the AWS OTA
// library uses) must read "&", not "\u0026".
func rawURL(t *testing.T, thing string, payload []byte) {
	t.Helper()
	if !strings.Contains(string(payload), "?thing="+thing+"&expires=") || strings.Contains(string(payload), `\u0026`) {
		t.Fatalf("%s: the URL is escaped in the payload: %s", thing, payload)
	}
}

// run takes the device through notify-next, start-next and {jobId}/get,
// downloads the image with its own URL and reports SUCCEEDED; it returns
// the URL it downloaded with.
func (d *jobsArtifactDevice) run(t *testing.T, srv *brokertest.Server, thing string, img []byte) string {
	t.Helper()
	n := mt.Next(t, d.notify)
	ex := gjson.GetBytes(n.Payload, "execution")
	if ex.Get("status").String() != "QUEUED" {
		t.Fatalf("%s notify-next: %s", thing, n.Payload)
	}
	checkDoc(t, thing, ex.Get("jobDocument"), img)
	rawURL(t, thing, n.Payload)
	job := ex.Get("jobId").String()
	d.c.Publish(d.p+"/start-next", 1, false, `{"clientToken":"s1"}`)
	m := mt.Next(t, d.start)
	if !strings.HasSuffix(m.Topic, "/accepted") || gjson.GetBytes(m.Payload, "execution.jobId").String() != job {
		t.Fatalf("%s start-next: %s %s", thing, m.Topic, m.Payload)
	}
	u := checkDoc(t, thing, gjson.GetBytes(m.Payload, "execution.jobDocument"), img)
	rawURL(t, thing, m.Payload)
	d.c.Publish(d.p+"/"+job+"/get", 1, false, `{"includeJobDocument":true}`)
	m = mt.Next(t, d.get)
	checkDoc(t, thing, gjson.GetBytes(m.Payload, "execution.jobDocument"), img)
	rawURL(t, thing, m.Payload)

	// The real download with the URL the device got.
	a := artifactReq(t, "GET", srv.HTTPURL()+u[strings.Index(u, "/firmware/"):], nil, nil)
	want(t, a, 200, thing+" downloads with its own URL")
	got, wantSum := sha256.Sum256(a.body), sha256.Sum256(img)
	if got != wantSum {
		t.Fatalf("%s downloaded %d bytes with the wrong SHA-256", thing, len(a.body))
	}
	d.c.Publish(d.p+"/"+job+"/update", 1, false, `{"status":"SUCCEEDED","statusDetails":{"progress":"100"}}`)
	return u
}

// foreign is u (thing's URL) presented as another thing's: refused.
func foreign(t *testing.T, srv *brokertest.Server, u, thing, other string) {
	t.Helper()
	path := strings.Replace(u[strings.Index(u, "/firmware/"):], "thing="+thing+"&", "thing="+other+"&", 1)
	a := artifactReq(t, "GET", srv.HTTPURL()+path, nil, nil)
	want(t, a, 403, thing+"'s URL used as "+other+"'s")
}

func TestJobDocumentArtifactPlaceholdersPerDevice(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	base := srv.HTTPURL()
	img := randomImage(t, 200_000)
	id := push(t, srv, img, "1.2.0", nil).json("id").String()
	registerThings(t, srv, "ro-1", "ro-2", "bj-1", "bj-2")
	devs := map[string]*jobsArtifactDevice{}
	for _, th := range []string{"ro-1", "ro-2", "bj-1", "bj-2"} {
		devs[th] = newJobsArtifactDevice(t, srv, th)
	}

	// A rollout delivered through a job document that names the artifact.
	r := httpDo(t, "POST", base+"/api/rollouts", `{"name":"fw 1.2.0 via jobs","target":"thingName:ro-*","artifact":"esp32@1.2.0","start":true,
 "jobDocument":`+artifactDoc+`,"waves":[{"name":"all","percent":100}]}`, 201)
	rid := gjson.Get(r, "id").String()
	// What the API shows keeps the placeholders; the reference is the id.
	if gjson.Get(r, "spec.artifact").String() != id || gjson.Get(r, "spec.jobDocument.firmware.url").String() != "${umbra:artifact.url}" ||
		gjson.Get(r, "spec.patch").Exists() {
		t.Fatalf("rollout %s", r)
	}
	urls := map[string]string{}
	for _, th := range []string{"ro-1", "ro-2"} {
		urls[th] = devs[th].run(t, srv, th, img)
	}
	foreign(t, srv, urls["ro-1"], "ro-1", "ro-2")

	// The same for a bulk job document; the artifact cannot be deleted
	// while its executions are pending.
	j := httpDo(t, "POST", base+"/api/jobs", `{"name":"fw 1.2.0","target":"thingName:bj-*","artifact":"`+id[:12]+`","document":`+artifactDoc+`}`, 201)
	jid := gjson.Get(j, "id").String()
	if gjson.Get(j, "spec.artifact").String() != id || gjson.Get(j, "spec.document.firmware.sha256").String() != "${umbra:artifact.sha256}" {
		t.Fatalf("job %s", j)
	}
	if g := httpGet(t, base+"/api/jobs/"+jid, 200); gjson.Get(g, "spec.document.firmware.url").String() != "${umbra:artifact.url}" {
		t.Fatalf("GET job: %s", g)
	}
	a := artifactReq(t, "DELETE", base+"/api/artifacts/"+id, nil, nil)
	want(t, a, 409, "delete while job executions are pending")
	if msg := a.json("message").String(); !strings.Contains(msg, "job "+jid) || !strings.Contains(msg, "2 job executions pending") {
		t.Fatalf("409: %s", a.body)
	}
	urls["bj-1"] = devs["bj-1"].run(t, srv, "bj-1", img)
	foreign(t, srv, urls["bj-1"], "bj-1", "bj-2")
	foreign(t, srv, urls["bj-1"], "bj-1", "ro-1")
	urls["bj-2"] = devs["bj-2"].run(t, srv, "bj-2", img)
	if urls["bj-1"] == urls["bj-2"] || urls["ro-1"] == urls["ro-2"] {
		t.Fatal("two devices got the same URL")
	}

	// Everything done: the rollout completes and the artifact may go.
	if v := waitRolloutState(t, srv, rid, "completed", "halted"); v.Get("state").String() != "completed" {
		t.Fatalf("rollout: %s", v.Raw)
	}
	want(t, artifactReq(t, "DELETE", base+"/api/artifacts/"+id, nil, nil), 204, "delete once every execution ended")
}

// Each read mints a fresh token: a device that reads its document after
// the first URL expired (and the server restarted) still gets a URL that
// works.
func TestJobDocumentArtifactURLMintedAtRead(t *testing.T) {
	clock := fakeclock.New(time.Now())
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.RolloutClock = clock.Now
		o.Artifacts.TokenTTL = time.Hour
	})
	img := randomImage(t, 5_000)
	push(t, srv, img, "1.2.0", nil)
	registerThings(t, srv, "late-1")
	d := newJobsArtifactDevice(t, srv, "late-1")
	httpDo(t, "POST", srv.HTTPURL()+"/api/jobs", `{"name":"fw","target":"thingName:late-1","artifact":"esp32@1.2.0","document":`+artifactDoc+`}`, 201)
	first := checkDoc(t, "late-1", gjson.GetBytes(mt.Next(t, d.notify).Payload, "execution.jobDocument"), img)
	clock.Add(2 * time.Hour)
	want(t, artifactReq(t, "GET", srv.HTTPURL()+first[strings.Index(first, "/firmware/"):], nil, nil), 403, "the URL of the notification, expired")
	// After a restart the job still knows its artifact.
	d.c.Disconnect(50)
	srv = srv.Restart(t)
	d = newJobsArtifactDevice(t, srv, "late-1")
	d.c.Publish(d.p+"/start-next", 1, false, `{}`)
	u := checkDoc(t, "late-1", gjson.GetBytes(mt.Next(t, d.start).Payload, "execution.jobDocument"), img)
	if u == first {
		t.Fatal("start-next returned the expired URL")
	}
	want(t, artifactReq(t, "GET", srv.HTTPURL()+u[strings.Index(u, "/firmware/"):], nil, nil), 200, "the URL read after the expiry")
}

// Validation: placeholders need an artifact, only known placeholders, an
// artifact with a job document needs a placeholder, the signature only of
// a signed artifact, never in a key.
func TestJobDocumentArtifactValidation(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	push(t, srv, randomImage(t, 1000), "1.2.0", nil)
	registerThings(t, srv, "v-1")
	hdr := map[string]string{"Content-Type": "application/json"}
	for _, c := range []struct {
		artifact, doc, field, msg string
	}{
		{"", `{"url":"${umbra:artifact.url}"}`, "artifact", "uses ${umbra:artifact.url}; give the artifact"},
		{"esp32@1.2.0", `{"url":"${umbra:artifact.md5}"}`, "DOC", "unknown placeholder ${umbra:artifact.md5}"},
		{"", `{"url":"${umbra:artifact.url"}`, "DOC", "no closing }"},
		{"esp32@1.2.0", `{"operation":"ota"}`, "DOC", `does not refer to artifact esp32@1.2.0`},
		{"esp32@1.2.0", `{"url":"${umbra:artifact.url}","sig":"${umbra:artifact.signature}"}`, "DOC", "is not signed"},
		{"esp32@1.2.0", `{"${umbra:artifact.version}":"x","url":"${umbra:artifact.url}"}`, "DOC", "placeholders are substituted in string values only"},
		{"esp32@9.9.9", `{"url":"${umbra:artifact.url}"}`, "artifact", ""},
	} {
		art := ""
		if c.artifact != "" {
			art = `"artifact":"` + c.artifact + `",`
		}
		for path, body := range map[string]string{
			"/api/jobs":             `{"name":"j","target":"*",` + art + `"document":` + c.doc + `}`,
			"/api/rollouts":         `{"name":"r","target":"*",` + art + `"jobDocument":` + c.doc + `,"waves":[{"name":"all","percent":100}]}`,
			"/api/rollouts/preview": `{"name":"r","target":"*",` + art + `"jobDocument":` + c.doc + `,"waves":[{"name":"all","percent":100}]}`,
		} {
			field := c.field
			if field == "DOC" {
				field = map[bool]string{true: "document", false: "jobDocument"}[path == "/api/jobs"]
			}
			a := artifactReq(t, "POST", base+path, []byte(body), hdr)
			want(t, a, 400, path+" "+c.doc)
			if a.json("field").String() != field || !strings.Contains(a.json("message").String(), c.msg) {
				t.Errorf("%s %s: %s, want field %s and %q", path, body, a.body, field, c.msg)
			}
		}
	}
	// Nothing was created.
	if n := len(gjson.Get(httpGet(t, base+"/api/jobs", 200), "jobs").Array()); n != 0 {
		t.Fatalf("%d jobs created", n)
	}
}

// Simulated Jobs-API devices (umbra sim --jobs-api) download the image a
// job document names with its url and sha256 (here the placeholders of a
// rollout that names an artifact) for real, verify it, reboot into it and
// report SUCCEEDED; an image whose SHA-256 does not match the document's
// ends FAILED with the reason.
func TestSimJobsAPIDevicesDownloadArtifact(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.RolloutInterval = 20 * time.Millisecond })
	img := randomImage(t, 300_000)
	id := push(t, srv, img, "2.0.0", nil).json("id").String()
	fl := startSimFleetWith(t, srv, 4, 2, func(c *sim.Config) { c.JobsAPI = true })
	doc := strings.ReplaceAll(artifactDoc, `"${aws:keep-me}"`, `"x"`)
	rid := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/rollouts", `{"name":"fw 2.0.0","target":"thingName:sim-*","artifact":"esp32@2.0.0","start":true,
 "jobDocument":`+doc+`,"waves":[{"name":"canary","query":"attributes.deployment_ring:canary"},{"name":"rest","percent":100}]}`, 201), "id").String()
	if v := waitRolloutState(t, srv, rid, "completed", "halted"); v.Get("state").String() != "completed" || v.Get("totals.succeeded").Int() != 4 {
		t.Fatalf("rollout: %s", v.Raw)
	}
	waitCount(t, srv, "shadow.reported.firmware_version:2.0.0", 4)
	st := fl.Stats()
	if st.DownloadsVerified != 4 || st.DownloadBytes < 4*int64(len(img)) {
		t.Fatalf("sim stats: %d downloads verified, %d bytes; want 4 and at least %d", st.DownloadsVerified, st.DownloadBytes, 4*len(img))
	}

	// A document whose sha256 is not the image's: the device refuses it.
	bad := `{"firmware":{"version":"3.0.0","url":"${umbra:artifact.url}","size":"${umbra:artifact.size}","sha256":"` + strings.Repeat("0", 64) + `"}}`
	jid := gjson.Get(httpDo(t, "POST", srv.HTTPURL()+"/api/jobs", `{"name":"bad","target":"thingName:sim-0001","artifact":"`+id+`","document":`+bad+`}`, 201), "id").String()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ex := gjson.Get(httpGet(t, srv.HTTPURL()+"/api/jobs/"+jid+"/executions", 200), "executions.0")
		if ex.Get("status").String() == "FAILED" {
			if r := ex.Get("statusDetails.reason").String(); !strings.Contains(r, "firmware 3.0.0: sha256 mismatch") {
				t.Fatalf("FAILED reason %q", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("execution: %s", ex.Raw)
		}
		<-time.After(20 * time.Millisecond)
	}
	if n := fl.Stats().DownloadsVerified; n != 4 {
		t.Fatalf("%d downloads verified after the bad one, want 4", n)
	}
}
