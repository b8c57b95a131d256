package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// umbra jobs create --document FILE --artifact REF: the device reads the
// document with its own download URL; a document with placeholders and
// no --artifact is refused with the server's message.
func TestCLIJobDocumentWithArtifact(t *testing.T) {
	bin := buildUmbra(t)
	srv := brokertest.Start(t)
	r := &cliRunner{t: t, bin: bin, home: t.TempDir(), srv: srv.HTTPURL()}
	r.ok("things", "create", "cli-fw-1")
	resp, err := http.Post(srv.HTTPURL()+"/api/artifacts?type=esp32&version=1.0.1", "application/octet-stream", bytes.NewReader([]byte("firmware image bytes")))
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("upload: %v %v", err, resp)
	}
	resp.Body.Close()
	doc := filepath.Join(t.TempDir(), "ota.json")
	if err := os.WriteFile(doc, []byte(`{"operation":"ota","url":"${umbra:artifact.url}","sha256":"${umbra:artifact.sha256}"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := r.run("jobs", "create", "fw", "--target", "thingName:cli-fw-1", "--document", doc); code == 0 ||
		!strings.Contains(out+errOut, "uses ${umbra:artifact.sha256}; give the artifact") {
		t.Fatalf("without --artifact: exit %d\n%s%s", code, out, errOut)
	}
	dev := mt.Connect(t, srv.MQTTURL(), "cli-fw-1")
	next := dev.Subscribe("$aws/things/cli-fw-1/jobs/notify-next", 1)
	var job struct{ ID string }
	if err := json.Unmarshal([]byte(r.ok("jobs", "create", "fw", "--target", "thingName:cli-fw-1", "--document", doc, "--artifact", "esp32@1.0.1", "--json")), &job); err != nil || job.ID == "" {
		t.Fatalf("jobs create --artifact: %v", err)
	}
	m := mt.Next(t, next)
	u := gjson.GetBytes(m.Payload, "execution.jobDocument.url").String()
	if !strings.Contains(u, "/firmware/") || !strings.Contains(u, "thing=cli-fw-1&") {
		t.Fatalf("notify-next: %s", m.Payload)
	}
	got, err := http.Get(u)
	if err != nil || got.StatusCode != 200 {
		t.Fatalf("download %s: %v %v", u, err, got)
	}
	got.Body.Close()

	// --artifact alone: desired-state delivery.
	r.ok("jobs", "create", "fw-desired", "--target", "thingName:cli-fw-1", "--artifact", "esp32@1.0.1")
	sh, err := http.Get(srv.HTTPURL() + "/things/cli-fw-1/shadow")
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Body.Close()
	var shadow struct {
		State struct{ Desired map[string]any }
	}
	if err := json.NewDecoder(sh.Body).Decode(&shadow); err != nil || shadow.State.Desired["target_version"] != "1.0.1" ||
		!strings.Contains(fmt.Sprint(shadow.State.Desired["ota_url"]), "thing=cli-fw-1&") {
		t.Fatalf("desired after jobs create --artifact: %v %+v", err, shadow)
	}
}
