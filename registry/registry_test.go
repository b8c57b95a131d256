package registry_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/internal/fakeclock"
	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/registry/query"
)

var ctx = context.Background()

func ptr(s string) *string { return &s }

func TestThingsCRUDWithVersionsAndValidation(t *testing.T) {
	f := newFixture(t)
	th, err := f.reg.CreateThing(ctx, registry.NewThing{Name: "esp32-1", Attributes: map[string]string{"location": "factory-A", "hardware_rev": "D"}})
	if err != nil || th.Version != 1 || th.CreatedAt != 1_800_000_000 {
		t.Fatalf("create: %+v %v", th, err)
	}
	if _, err := f.reg.CreateThing(ctx, registry.NewThing{Name: "esp32-1"}); !errors.Is(err, registry.ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	var fe *registry.FieldError
	if _, err := f.reg.CreateThing(ctx, registry.NewThing{Name: "bad name"}); !errors.As(err, &fe) || fe.Field != "thingName" {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := f.reg.CreateThing(ctx, registry.NewThing{Name: "x", Attributes: map[string]string{"ok": "fine", "bad key!": "v"}}); !errors.As(err, &fe) || fe.Field != "attributes.bad key!" {
		t.Fatalf("bad attribute: %v", err)
	}
	if _, err := f.reg.CreateThing(ctx, registry.NewThing{Name: "x", Type: "nope"}); !errors.As(err, &fe) || fe.Field != "thingTypeName" {
		t.Fatalf("unknown type: %v", err)
	}

	th, err = f.reg.UpdateThing(ctx, "esp32-1", registry.ThingPatch{Attributes: map[string]*string{"location": ptr("factory-B"), "hardware_rev": nil, "customer_id": ptr("cust-943")}, ExpectedVersion: 1})
	if err != nil || th.Version != 2 || th.Attributes["location"] != "factory-B" || th.Attributes["customer_id"] != "cust-943" || len(th.Attributes) != 2 {
		t.Fatalf("update: %+v %v", th, err)
	}
	if _, err := f.reg.UpdateThing(ctx, "esp32-1", registry.ThingPatch{ExpectedVersion: 1}); !errors.Is(err, registry.ErrVersionConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := f.reg.UpdateThing(ctx, "ghost", registry.ThingPatch{}); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("update of absent thing: %v", err)
	}
	if got := f.search("attributes.location:factory-b"); fmt.Sprint(got) != "[esp32-1]" {
		t.Fatalf("search after update (case-insensitive): %v", got)
	}
	for i := range 5 {
		f.thing(fmt.Sprintf("t%d", i), nil)
	}
	page, next, _ := f.reg.ListThings("", 3)
	page2, next2, _ := f.reg.ListThings(next, 3)
	if len(page) != 3 || page[0].Name != "esp32-1" || len(page2) != 3 || next2 != "" || page2[2].Name != "t4" {
		t.Fatalf("paging: %v %q %v %q", page, next, page2, next2)
	}
	if err := f.reg.DeleteThing(ctx, "esp32-1", 1); !errors.Is(err, registry.ErrVersionConflict) {
		t.Fatalf("stale delete: %v", err)
	}
	if err := f.reg.DeleteThing(ctx, "esp32-1", 2); err != nil {
		t.Fatal(err)
	}
	if got := f.search("attributes.location:*"); len(got) != 0 {
		t.Fatalf("deleted thing still found: %v", got)
	}
}

func TestThingTypes(t *testing.T) {
	f := newFixture(t)
	if _, err := f.reg.CreateType(ctx, registry.ThingType{Name: "esp32-s3", Description: "S3 boards", Attributes: []string{"hardware_rev"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.CreateThing(ctx, registry.NewThing{Name: "a", Type: "esp32-s3"}); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.DeleteType(ctx, "esp32-s3"); !errors.Is(err, registry.ErrInUse) {
		t.Fatalf("delete type in use: %v", err)
	}
	if _, err := f.reg.DeprecateType(ctx, "esp32-s3", true); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.CreateThing(ctx, registry.NewThing{Name: "b", Type: "esp32-s3"}); err == nil || !strings.Contains(err.Error(), "deprecated") {
		t.Fatalf("new thing of deprecated type: %v", err)
	}
	if got := f.search("thingTypeName:esp32-s3"); fmt.Sprint(got) != "[a]" {
		t.Fatalf("by type: %v", got)
	}
	if _, err := f.reg.UpdateThing(ctx, "a", registry.ThingPatch{Type: ptr("")}); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.DeleteType(ctx, "esp32-s3"); err != nil {
		t.Fatalf("delete unused type: %v", err)
	}
}

func TestStaticGroupsWithParentsAndDynamicGroupsFollowTheFleet(t *testing.T) {
	f := newFixture(t)
	for _, g := range []registry.Group{{Name: "fleet"}, {Name: "factory-A", Parent: "fleet"}, {Name: "old-firmware", Query: "shadow.reported.firmware_version<2.0.0"}} {
		if _, err := f.reg.CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	var fe *registry.FieldError
	if _, err := f.reg.CreateGroup(ctx, registry.Group{Name: "x", Query: "shadow.reported.x:"}); !errors.As(err, &fe) || fe.Field != "queryString" {
		t.Fatalf("bad dynamic query: %v", err)
	}
	if _, err := f.reg.CreateGroup(ctx, registry.Group{Name: "y", Parent: "old-firmware"}); !errors.As(err, &fe) || fe.Field != "parentGroupName" {
		t.Fatalf("dynamic parent: %v", err)
	}
	f.thing("d1", nil)
	f.thing("d2", nil)
	if err := f.reg.AddToGroup(ctx, "factory-A", "d1"); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.AddToGroup(ctx, "old-firmware", "d2"); !errors.As(err, &fe) {
		t.Fatalf("explicit member of a dynamic group: %v", err)
	}
	if got := f.search("thingGroupNames:fleet"); fmt.Sprint(got) != "[d1]" {
		t.Fatalf("a parent group finds its children's members: %v", got)
	}
	f.report("d1", "", `{"state":{"reported":{"firmware_version":"1.9.0"}}}`)
	f.report("d2", "", `{"state":{"reported":{"firmware_version":"2.1.3"}}}`)
	if got := f.search("thingGroupNames:old-firmware"); fmt.Sprint(got) != "[d1]" {
		t.Fatalf("dynamic group: %v", got)
	}
	if got := f.reg.ThingGroups("d1"); strings.Join(got, ",") != "factory-A,fleet,old-firmware" {
		t.Fatalf("groups of d1: %v", got)
	}
	// The device updates its firmware: it leaves the dynamic group.
	f.report("d1", "", `{"state":{"reported":{"firmware_version":"2.2.0"}}}`)
	if got := f.search("thingGroupNames:old-firmware"); len(got) != 0 {
		t.Fatalf("after the update: %v", got)
	}
	if err := f.reg.DeleteGroup(ctx, "fleet"); !errors.Is(err, registry.ErrInUse) {
		t.Fatalf("delete a group with children: %v", err)
	}
	if err := f.reg.DeleteGroup(ctx, "factory-A"); err != nil {
		t.Fatal(err)
	}
	if got := f.search("thingGroupNames:fleet"); len(got) != 0 {
		t.Fatalf("membership survived the group: %v", got)
	}
}

func TestSearchCountAndBucketsOverShadows(t *testing.T) {
	f := newFixture(t)
	fw := []string{"2.1.3", "2.1.3", "2.1.4", "1.0.0"}
	for i, v := range fw {
		name := fmt.Sprintf("s%d", i)
		f.thing(name, map[string]string{"location": []string{"factory-A", "factory-B"}[i%2]})
		f.report(name, "", fmt.Sprintf(`{"state":{"reported":{"firmware_version":%q,"battery":%d,"temps":[%d,30]}}}`, v, 60+10*i, 10*i))
	}
	f.report("s0", "cfg", `{"state":{"desired":{"interval":300}}}`)
	cases := map[string]string{
		"attributes.location:factory-A AND shadow.reported.firmware_version:2.1.3": "[s0]",
		"shadow.reported.firmware_version<2.1.4":                                   "[s0 s1 s3]",
		"shadow.reported.battery>70":                                               "[s2 s3]",
		"shadow.reported.battery:[60 TO 70]":                                       "[s0 s1]",
		"shadow.reported.temps:20":                                                 "[s2]",
		"thingName:s*":                                                             "[s0 s1 s2 s3]",
		"NOT attributes.location:factory-A":                                        "[s1 s3]",
		"shadow.name.cfg.hasDelta:true":                                            "[s0]",
		"shadow.name.cfg.desired.interval:300":                                     "[s0]",
		"shadow.reported.firmware_version:*":                                       "[s0 s1 s2 s3]",
		"connectivity.connected:true":                                              "[]",
	}
	for q, want := range cases {
		if got := fmt.Sprint(f.search(q)); got != want {
			t.Errorf("%s: %s, want %s", q, got, want)
		}
	}
	all, _ := query.Parse("*")
	buckets, total := f.reg.Buckets(all, "shadow.reported.firmware_version", 10)
	if total != 4 || fmt.Sprint(buckets) != "[{2.1.3 2} {1.0.0 1} {2.1.4 1}]" {
		t.Fatalf("buckets: %v total %d", buckets, total)
	}
	q, _ := query.Parse("attributes.location:factory-B")
	if n := f.reg.Count(q); n != 2 {
		t.Fatalf("count: %d", n)
	}
	res := f.reg.Search(all, "", 3)
	if len(res.Things) != 3 || res.NextToken != "s2" || res.Total != 4 {
		t.Fatalf("page: %+v", res)
	}
	if res = f.reg.Search(all, res.NextToken, 3); fmt.Sprint(res.Things) != "[s3]" || res.NextToken != "" {
		t.Fatalf("page 2: %+v", res)
	}
	// A shadow of an unregistered thing is indexed but not in the fleet.
	f.report("stranger", "", `{"state":{"reported":{"firmware_version":"2.1.3"}}}`)
	if got := f.search("shadow.reported.firmware_version:2.1.3"); fmt.Sprint(got) != "[s0 s1]" {
		t.Fatalf("unregistered thing in results: %v", got)
	}
	f.thing("stranger", nil)
	if got := f.search("shadow.reported.firmware_version:2.1.3"); fmt.Sprint(got) != "[s0 s1 stranger]" {
		t.Fatalf("registered later: %v", got)
	}
}

func TestDriftQueriesFindDevicesThatNeverConverge(t *testing.T) {
	f := newFixture(t)
	for _, n := range []string{"fast", "stuck"} {
		f.thing(n, nil)
		f.report(n, "", `{"state":{"reported":{"brightness":1}}}`)
	}
	f.report("stuck", "", `{"state":{"desired":{"brightness":5}}}`)
	f.clock.Add(2 * time.Hour)
	f.report("fast", "", `{"state":{"desired":{"brightness":7}}}`)
	if got := fmt.Sprint(f.search("shadow.hasDelta:true")); got != "[fast stuck]" {
		t.Fatalf("hasDelta: %s", got)
	}
	if got := fmt.Sprint(f.search("shadow.deltaAgeSeconds>3600")); got != "[stuck]" {
		t.Fatalf("pending over an hour: %s", got)
	}
	f.report("stuck", "", `{"state":{"reported":{"brightness":5}}}`) // converges (prune)
	if got := fmt.Sprint(f.search("shadow.hasDelta:true")); got != "[fast]" {
		t.Fatalf("after convergence: %s", got)
	}
}

func TestConnectivityAndLifecycleEvents(t *testing.T) {
	f := newFixture(t)
	f.thing("dev", nil)
	sid := f.reg.Connected(registry.Session{ClientID: "dev", Principal: "dev", Thing: "dev", Address: "127.0.0.1:5555", ProtocolVersion: 4})
	ev := f.pub.get("$aws/events/presence/connected/dev")
	for field, want := range map[string]string{"clientId": "dev", "eventType": "connected", "ipAddress": "127.0.0.1", "versionNumber": "1", "sessionIdentifier": sid.Session, "thingName": "dev"} {
		if got := gjson.GetBytes(ev, field).String(); got != want {
			t.Errorf("connected event %s = %q, want %q (%s)", field, got, want, ev)
		}
	}
	if gjson.GetBytes(ev, "timestamp").Int() != 1_800_000_000_000 {
		t.Errorf("timestamp in ms: %s", ev)
	}
	if got := fmt.Sprint(f.search("connectivity.connected:true")); got != "[dev]" {
		t.Fatalf("connected: %s", got)
	}
	f.reg.Disconnected(registry.Session{ClientID: "dev", Thing: "dev"}, sid, "MQTT_KEEP_ALIVE_TIMEOUT")
	ev = f.pub.get("$aws/events/presence/disconnected/dev")
	if gjson.GetBytes(ev, "disconnectReason").String() != "MQTT_KEEP_ALIVE_TIMEOUT" || gjson.GetBytes(ev, "clientInitiatedDisconnect").Bool() ||
		gjson.GetBytes(ev, "versionNumber").Int() != 1 || gjson.GetBytes(ev, "sessionIdentifier").String() != sid.Session {
		t.Fatalf("disconnected event: %s", ev)
	}
	if got := fmt.Sprint(f.search("connectivity.disconnectReason:MQTT_KEEP_ALIVE_TIMEOUT AND connectivity.connected:false")); got != "[dev]" {
		t.Fatalf("after disconnect: %s", got)
	}
	c, _ := f.reg.Connectivity("dev")
	if c.Connected || c.LastConnect == 0 || c.LastDisconnect == 0 || c.ClientAddress != "127.0.0.1:5555" {
		t.Fatalf("connectivity: %+v", c)
	}
}

func TestRegistrationPolicy(t *testing.T) {
	strict := open(t, t.TempDir(), registry.PolicyStrict, fakeclock.New(time.Unix(1, 0)))
	if err := strict.reg.Admit(ctx, "unknown"); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("strict: %v", err)
	}
	strict.thing("known", nil)
	if err := strict.reg.Admit(ctx, "known"); err != nil {
		t.Fatal(err)
	}
	auto := newFixture(t)
	if err := auto.reg.Admit(ctx, "newcomer"); err != nil {
		t.Fatal(err)
	}
	if _, err := auto.reg.Thing("newcomer"); err != nil {
		t.Fatalf("auto did not register: %v", err)
	}
}

// The index is rebuilt from the store: registry, groups and shadows.
func TestReopenRebuildsTheIndex(t *testing.T) {
	dir := t.TempDir()
	c := fakeclock.New(time.Unix(1_800_000_000, 0))
	f := open(t, dir, registry.PolicyAuto, c)
	f.thing("a", map[string]string{"ring": "canary"})
	f.thing("b", nil)
	if _, err := f.reg.CreateGroup(ctx, registry.Group{Name: "g"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.CreateGroup(ctx, registry.Group{Name: "new-fw", Query: "shadow.reported.fw>=2"}); err != nil {
		t.Fatal(err)
	}
	_ = f.reg.AddToGroup(ctx, "g", "b")
	f.report("a", "", `{"state":{"reported":{"fw":"2.0"}}}`)
	f.reg.Connected(registry.Session{ClientID: "a"})
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	g := open(t, dir, registry.PolicyAuto, c)
	for q, want := range map[string]string{
		"attributes.ring:canary":      "[a]",
		"thingGroupNames:g":           "[b]",
		"thingGroupNames:new-fw":      "[a]",
		"connectivity.connected:true": "[]", // everyone starts disconnected
		"connectivity.connected:false AND connectivity.disconnectReason:SERVER_INITIATED_DISCONNECT": "[a]",
	} {
		if got := fmt.Sprint(g.search(q)); got != want {
			t.Errorf("after reopen %s: %s, want %s", q, got, want)
		}
	}
}

// A client's last connects and disconnects are kept, newest first, in a
// bounded ring that survives a reopen; deleting the thing deletes them.
func TestConnectivityHistoryKeepsTheLastTransitions(t *testing.T) {
	dir := t.TempDir()
	c := fakeclock.New(time.Unix(1_800_000_000, 0))
	f := open(t, dir, registry.PolicyAuto, c)
	f.thing("flappy", nil)
	sessions := registry.ConnHistorySlots/2 + 3 // more than the ring holds
	for i := range sessions {
		sid := f.reg.Connected(registry.Session{ClientID: "flappy", Address: fmt.Sprintf("10.0.0.%d:1883", i), ProtocolVersion: 4})
		c.Add(time.Minute)
		f.reg.Disconnected(registry.Session{ClientID: "flappy"}, sid, "CONNECTION_LOST")
		c.Add(time.Second)
	}
	check := func(f *fixture) {
		t.Helper()
		h, err := f.reg.ConnectivityHistory(ctx, "flappy")
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != registry.ConnHistorySlots {
			t.Fatalf("%d transitions kept, want %d", len(h), registry.ConnHistorySlots)
		}
		for i, tr := range h {
			wantVersion := int64(sessions - i/2)
			if tr.Version != wantVersion || tr.Connected != (i%2 == 1) {
				t.Fatalf("transition %d: %+v, want version %d, connected %v", i, tr, wantVersion, i%2 == 1)
			}
			if i > 0 && tr.Timestamp > h[i-1].Timestamp {
				t.Fatalf("transition %d is newer than %d: %+v", i, i-1, h)
			}
		}
		if h[0].Reason != "CONNECTION_LOST" || h[1].ClientAddress != fmt.Sprintf("10.0.0.%d:1883", sessions-1) || h[1].ProtocolVersion != 4 {
			t.Fatalf("newest session: %+v %+v", h[0], h[1])
		}
	}
	check(f)
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	g := open(t, dir, registry.PolicyAuto, c)
	check(g)

	if h, _ := g.reg.ConnectivityHistory(ctx, "never-seen"); len(h) != 0 {
		t.Fatalf("history of an unknown client: %+v", h)
	}
	if err := g.reg.DeleteThing(ctx, "flappy", 0); err != nil {
		t.Fatal(err)
	}
	if h, _ := g.reg.ConnectivityHistory(ctx, "flappy"); len(h) != 0 {
		t.Fatalf("history after the thing was deleted: %+v", h)
	}
}

// A caller that wants every match asks for a page as large as an int
// (the job engine does): the page holds what matches, things added since
// the index was loaded included.
func TestSearchWithTheLargestLimit(t *testing.T) {
	dir := t.TempDir()
	c := fakeclock.New(time.Unix(1_800_000_000, 0))
	f := open(t, dir, registry.PolicyAuto, c)
	f.thing("b", nil)
	f.thing("d", nil)
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	f = open(t, dir, registry.PolicyAuto, c)
	f.thing("a", nil)
	f.thing("c", nil)
	for _, limit := range []int{math.MaxInt, math.MaxInt32} {
		res := f.reg.Search(query.MustParse("*"), "", limit)
		if fmt.Sprint(res.Things) != "[a b c d]" || res.NextToken != "" || res.Total != 4 {
			t.Fatalf("limit %d: %+v", limit, res)
		}
	}
}
