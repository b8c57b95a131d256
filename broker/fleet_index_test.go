package broker_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// The fleet index is written at shutdown and loaded at the next start
// instead of being rebuilt from every thing and shadow; a missing or
// damaged snapshot, or one older than the store, is rebuilt. Every way,
// searches answer the same.
func TestFleetIndexSnapshotAcrossRestarts(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	httpDo(t, "POST", base+"/api/groups", `{"groupName":"site-a"}`, 201)
	httpDo(t, "POST", base+"/api/groups", `{"groupName":"old-fw","queryString":"shadow.reported.fw<2.0.0"}`, 201)
	for i := range 30 {
		httpDo(t, "POST", base+"/api/things", fmt.Sprintf(`{"thingName":"dev-%02d","attributes":{"location":"factory-%c","ring":"%s"}}`,
			i, 'A'+i%3, []string{"canary", "general"}[min(i%10, 1)]), 201)
		if i%4 == 0 {
			httpDo(t, "PUT", base+"/api/groups/site-a/things/"+fmt.Sprintf("dev-%02d", i), "", 204)
		}
		if i%2 == 0 {
			httpDo(t, "POST", base+fmt.Sprintf("/things/dev-%02d/shadow", i), fmt.Sprintf(`{"state":{"reported":{"fw":"%d.%d.0","battery":%d}}}`, 1+i%3, i%5, 3*i), 200)
		}
	}
	dev := mt.Connect(t, srv.MQTTURL(), "dev-07")
	acc := dev.Subscribe("$aws/things/dev-07/shadow/update/accepted", 1)
	dev.Publish("$aws/things/dev-07/shadow/update", 1, false, `{"state":{"reported":{"fw":"1.0.1","battery":99}}}`)
	mt.Next(t, acc)

	queries := []string{"*", "attributes.location:factory-b", "thingGroupNames:site-a", "thingGroupNames:old-fw",
		"shadow.reported.battery>=30 AND NOT attributes.ring:canary", "thingName:dev-1*", "shadow.reported.fw:*", "thingName:DEV-07"}
	answers := func(srv *brokertest.Server) string {
		var b strings.Builder
		for _, q := range queries {
			var names []string
			next := ""
			for {
				page := httpGet(t, srv.HTTPURL()+"/api/search?pageSize=7&query="+url.QueryEscape(q)+"&nextToken="+url.QueryEscape(next), 200)
				for _, n := range gjson.Get(page, "things").Array() {
					names = append(names, n.String())
				}
				if next = gjson.Get(page, "nextToken").String(); next == "" {
					break
				}
			}
			fmt.Fprintf(&b, "%s: %v\n", q, names)
		}
		return b.String()
	}
	want := answers(srv)
	if !strings.Contains(want, "thingGroupNames:old-fw: [dev-00 dev-06 dev-07 dev-12") {
		t.Fatalf("unexpected answers before restart:\n%s", want)
	}
	dev.Disconnect(50)

	snapshot := filepath.Join(srv.Options.DataDir, broker.IndexSnapshotFile)
	srv = srv.Restart(t)
	if src := srv.Registry().IndexSource(); src != "snapshot" {
		t.Fatalf("after a clean shutdown the index came from %q, want the snapshot", src)
	}
	if got := answers(srv); got != want {
		t.Fatalf("answers after restart from the snapshot:\n%s\nwant\n%s", got, want)
	}

	// A change after the restart reaches the index loaded from the snapshot
	// and the next snapshot.
	httpDo(t, "POST", base2(srv)+"/api/things", `{"thingName":"dev-00b","attributes":{"location":"factory-B"}}`, 201)
	httpDo(t, "POST", base2(srv)+"/things/dev-06/shadow", `{"state":{"reported":{"fw":"3.0.0"}}}`, 200)
	want = answers(srv)
	if !strings.Contains(want, "attributes.location:factory-b: [dev-00b dev-01") || !strings.Contains(want, "old-fw: [dev-00 dev-07 dev-12") {
		t.Fatalf("changes after the restart not in the answers:\n%s", want)
	}
	srv = srv.Restart(t)
	if src := srv.Registry().IndexSource(); src != "snapshot" {
		t.Fatalf("second restart: index from %q", src)
	}
	if got := answers(srv); got != want {
		t.Fatalf("answers after the second restart:\n%s\nwant\n%s", got, want)
	}

	// Damaged, then missing: rebuilt, same answers.
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(snapshot)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(snapshot, data, 0o600); err != nil {
		t.Fatal(err)
	}
	srv = brokertest.StartWith(t, srv.Options)
	if src := srv.Registry().IndexSource(); !strings.HasPrefix(src, "rebuilt") || !strings.Contains(src, "checksum") {
		t.Fatalf("a damaged snapshot: index from %q", src)
	}
	if got := answers(srv); got != want {
		t.Fatalf("answers after a rebuild:\n%s\nwant\n%s", got, want)
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(snapshot); err != nil {
		t.Fatal(err)
	}
	srv = brokertest.StartWith(t, srv.Options)
	if src := srv.Registry().IndexSource(); !strings.HasPrefix(src, "rebuilt") {
		t.Fatalf("no snapshot: index from %q", src)
	}
	if got := answers(srv); got != want {
		t.Fatalf("answers after a rebuild without a snapshot:\n%s\nwant\n%s", got, want)
	}
}

func base2(srv *brokertest.Server) string { return srv.HTTPURL() }
