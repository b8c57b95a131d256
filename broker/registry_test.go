package broker_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// Devices connect and appear in the registry with connectivity; lifecycle
// events are published with AWS's fields; a dynamic group follows a device
// whose reported firmware changes.
func TestDevicesAppearWithConnectivityAndDynamicGroupsFollowThem(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	app := mt.Connect(t, srv.MQTTURL(), "ops-console")
	events := app.Subscribe("$aws/events/presence/+/+", 1)
	httpDo(t, "POST", base+"/api/groups", `{"groupName":"needs-update","queryString":"shadow.reported.firmware_version<1.1.0"}`, 201)

	dev := mt.Connect(t, srv.MQTTURL(), "esp32-007")
	ev := mt.NextOn(t, events, "$aws/events/presence/connected/esp32-007")
	if gjson.GetBytes(ev.Payload, "eventType").String() != "connected" || gjson.GetBytes(ev.Payload, "ipAddress").String() != "127.0.0.1" ||
		gjson.GetBytes(ev.Payload, "versionNumber").Int() != 1 || gjson.GetBytes(ev.Payload, "sessionIdentifier").String() == "" {
		t.Fatalf("connected event: %s", ev.Payload)
	}
	thing := httpGet(t, base+"/api/things/esp32-007", 200) // auto-registered on connect
	if !gjson.Get(thing, "connectivity.connected").Bool() || gjson.Get(thing, "connectivity.protocolVersion").Int() != 4 {
		t.Fatalf("thing after connect: %s", thing)
	}
	acc := dev.Subscribe("$aws/things/esp32-007/shadow/update/accepted", 1)
	dev.Publish("$aws/things/esp32-007/shadow/update", 1, false, `{"state":{"reported":{"firmware_version":"1.0.0"}}}`)
	mt.Next(t, acc)
	if got := gjson.Get(httpGet(t, base+"/api/groups/needs-update/things", 200), "things").Raw; got != `["esp32-007"]` {
		t.Fatalf("dynamic group before the update: %s", got)
	}
	dev.Publish("$aws/things/esp32-007/shadow/update", 1, false, `{"state":{"reported":{"firmware_version":"1.1.0"}}}`)
	mt.Next(t, acc)
	if got := gjson.Get(httpGet(t, base+"/api/groups/needs-update/things", 200), "things").Raw; got != `[]` {
		t.Fatalf("dynamic group after the update: %s", got)
	}
	dev.Disconnect(50)
	ev = mt.NextOn(t, events, "$aws/events/presence/disconnected/esp32-007")
	if gjson.GetBytes(ev.Payload, "disconnectReason").String() != "CLIENT_INITIATED_DISCONNECT" || !gjson.GetBytes(ev.Payload, "clientInitiatedDisconnect").Bool() {
		t.Fatalf("disconnected event: %s", ev.Payload)
	}
	if got := httpGet(t, base+"/api/search?query=connectivity.connected:false%20AND%20thingName:esp32-*", 200); gjson.Get(got, "things").Raw != `["esp32-007"]` {
		t.Fatalf("search after disconnect: %s", got)
	}
}

func TestStrictRegistrationRefusesUnregisteredDevices(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Registration = "strict" })
	if c, err := mt.TryConnect(srv.MQTTURL(), "rogue-1"); err == nil {
		c.Disconnect(0)
		t.Fatal("unregistered device connected under strict registration")
	}
	httpDo(t, "POST", srv.HTTPURL()+"/api/things", `{"thingName":"known-1","attributes":{"location":"lab"}}`, 201)
	mt.Connect(t, srv.MQTTURL(), "known-1")
	// Clients whose id is not a thing name (tools, apps) are not devices,
	// nor are clients that send no id (the broker makes one up).
	mt.Connect(t, srv.MQTTURL(), "mosqsub|1234-laptop")
	mt.Connect(t, srv.MQTTURL(), "")
}

// TestClientsWithoutAnIDLeaveNothingBehind: mosquitto_pub without -i, run
// from a script every minute, must not register a thing (nor keep a
// connectivity record) per run under the default auto registration.
func TestClientsWithoutAnIDLeaveNothingBehind(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	lifecycle := mt.Connect(t, srv.MQTTURL(), "ops|console").Subscribe("$aws/events/presence/+/+", 1)
	for range 3 {
		c := mt.Connect(t, srv.MQTTURL(), "")
		c.Publish("telemetry/script", 1, false, "ping")
		c.Disconnect(50)
	}
	mt.Connect(t, srv.MQTTURL(), "esp32-real") // a device, for contrast
	if m := mt.Next(t, lifecycle); m.Topic != "$aws/events/presence/connected/esp32-real" {
		t.Errorf("first lifecycle event %s, want esp32-real's: id-less clients publish none", m.Topic)
	}
	if got := httpGet(t, base+"/api/search?query=*", 200); gjson.Get(got, "things").Raw != `["esp32-real"]` {
		t.Fatalf("registered things: %s, want only esp32-real", got)
	}
	if got := httpGet(t, base+"/api/aggregations/count?query=connectivity.connected:*", 200); gjson.Get(got, "count").Int() != 1 {
		t.Errorf("things with connectivity: %s, want 1", got)
	}
}

// The registry API: CRUD, validation naming the field, paging, search,
// aggregations.
func TestRegistryAPI(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	httpDo(t, "POST", base+"/api/thing-types", `{"thingTypeName":"esp32-s3","description":"S3 boards","searchableAttributes":["hardware_rev"]}`, 201)
	for i := range 6 {
		httpDo(t, "POST", base+"/api/things", fmt.Sprintf(`{"thingName":"dev-%d","thingTypeName":"esp32-s3","attributes":{"location":"factory-%c","deployment_ring":"%s"}}`,
			i, 'A'+rune(i%2), map[bool]string{true: "canary", false: "general"}[i == 0]), 201)
	}
	for _, c := range []struct{ body, field string }{
		{`{"thingName":"dev-0"}`, ""},
		{`{"thingName":"bad name"}`, "thingName"},
		{`{"thingName":"x","attributes":{"k":"v!"}}`, "attributes.k"},
		{`{"thingName":"x","color":"red"}`, "color"},
		{`{"thingName":7}`, "thingName"},
		{`{"thingName":"x","thingTypeName":"nope"}`, "thingTypeName"},
	} {
		status := 400
		if c.field == "" {
			status = 409
		}
		if got := gjson.Get(httpDo(t, "POST", base+"/api/things", c.body, status), "field").String(); got != c.field {
			t.Errorf("%s: field %q, want %q", c.body, got, c.field)
		}
	}
	patched := httpDo(t, "PATCH", base+"/api/things/dev-1", `{"attributes":{"location":"factory-C","deployment_ring":null},"expectedVersion":1}`, 200)
	if gjson.Get(patched, "version").Int() != 2 || gjson.Get(patched, "attributes.deployment_ring").Exists() {
		t.Fatalf("patch: %s", patched)
	}
	httpDo(t, "PATCH", base+"/api/things/dev-1", `{"expectedVersion":1}`, 409)
	httpDo(t, "PATCH", base+"/api/things/nobody", `{}`, 404)

	list := httpGet(t, base+"/api/things?pageSize=4", 200)
	if len(gjson.Get(list, "things").Array()) != 4 || gjson.Get(list, "nextToken").String() != "dev-3" {
		t.Fatalf("list: %s", list)
	}
	httpDo(t, "POST", base+"/api/groups", `{"groupName":"canaries","queryString":"attributes.deployment_ring:canary"}`, 201)
	httpDo(t, "POST", base+"/api/groups", `{"groupName":"site-a"}`, 201)
	httpDo(t, "PUT", base+"/api/groups/site-a/things/dev-2", "", 204)
	httpDo(t, "PUT", base+"/api/groups/canaries/things/dev-2", "", 400)
	httpDo(t, "PUT", base+"/api/groups/site-a/things/ghost", "", 404)
	if got := gjson.Get(httpGet(t, base+"/api/things/dev-2", 200), "thingGroupNames").Raw; got != `["site-a"]` {
		t.Fatalf("groups of dev-2: %s", got)
	}
	search := httpGet(t, base+"/api/search?query=thingGroupNames:canaries%20OR%20thingGroupNames:site-a", 200)
	if gjson.Get(search, "things").Raw != `["dev-0","dev-2"]` || gjson.Get(search, "total").Int() != 2 {
		t.Fatalf("search: %s", search)
	}
	bad := httpGet(t, base+"/api/search?query=attributes.location:", 400)
	if gjson.Get(bad, "field").String() != "query" || !gjson.Get(bad, "message").Exists() {
		t.Fatalf("bad query: %s", bad)
	}
	count := httpGet(t, base+"/api/aggregations/count?query=attributes.location:factory-A", 200)
	if gjson.Get(count, "count").Int() != 3 {
		t.Fatalf("count: %s", count)
	}
	buckets := httpGet(t, base+"/api/aggregations/buckets?field=attributes.location", 200)
	if gjson.Get(buckets, "buckets.0.keyValue").String() != "factory-A" || gjson.Get(buckets, "buckets.0.count").Int() != 3 || gjson.Get(buckets, "totalCount").Int() != 6 {
		t.Fatalf("buckets: %s", buckets)
	}
	httpGet(t, base+"/api/aggregations/buckets", 400)
	httpDo(t, "DELETE", base+"/api/thing-types/esp32-s3", "", 409)
	httpDo(t, "DELETE", base+"/api/things/dev-5?expectedVersion=9", "", 409)
	httpDo(t, "DELETE", base+"/api/things/dev-5", "", 204)
	httpGet(t, base+"/api/things/dev-5", 404)
}

// TestSearchExpandsThingsAndShadows: a fleet table in one request. Each
// name comes with its registry record and classic shadow, in order; a thing
// without a shadow carries null, and expand= names what it may ask for.
func TestSearchExpandsThingsAndShadows(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	httpDo(t, "POST", base+"/api/things", `{"thingName":"fw-a","attributes":{"ring":"canary"}}`, 201)
	httpDo(t, "POST", base+"/api/things", `{"thingName":"fw-b","attributes":{"ring":"canary"}}`, 201)
	httpDo(t, "POST", base+"/things/fw-a/shadow", `{"state":{"desired":{"fw":"1.1"},"reported":{"fw":"1.0"}}}`, 200)

	got := httpGet(t, base+"/api/search?query=attributes.ring:canary&expand=thing,shadow", 200)
	if gjson.Get(got, "things").Raw != `["fw-a","fw-b"]` || gjson.Get(got, "expanded.#").Int() != 2 {
		t.Fatalf("expanded search: %s", got)
	}
	a, b := gjson.Get(got, "expanded.0"), gjson.Get(got, "expanded.1")
	if a.Get("thingName").String() != "fw-a" || a.Get("thing.attributes.ring").String() != "canary" || a.Get("thing.thingGroupNames").Raw != "[]" {
		t.Errorf("fw-a's record: %s", a.Get("thing").Raw)
	}
	if a.Get("shadow.version").Int() != 1 || a.Get("shadow.state.delta.fw").String() != "1.1" || !a.Get("shadow.metadata").Exists() {
		t.Errorf("fw-a's shadow, as GET /things/fw-a/shadow answers it: %s", a.Get("shadow").Raw)
	}
	if b.Get("thingName").String() != "fw-b" || b.Get("shadow").Type != gjson.Null || !b.Get("shadow").Exists() || b.Get("shadowError").Exists() {
		t.Errorf("fw-b has no shadow: want \"shadow\": null, got %s", b.Raw)
	}

	onlyThings := httpGet(t, base+"/api/search?query=thingName:fw-a&expand=thing", 200)
	if gjson.Get(onlyThings, "expanded.0.shadow").Exists() || !gjson.Get(onlyThings, "expanded.0.thing").Exists() {
		t.Errorf("expand=thing: %s", onlyThings)
	}
	if plain := httpGet(t, base+"/api/search?query=thingName:fw-a", 200); gjson.Get(plain, "expanded").Exists() {
		t.Errorf("a search without expand carries names only: %s", plain)
	}
	bad := httpGet(t, base+"/api/search?expand=thing,owner", 400)
	if gjson.Get(bad, "field").String() != "expand" || !strings.Contains(gjson.Get(bad, "message").String(), `"owner"`) {
		t.Errorf("unknown expansion: %s", bad)
	}
}

// A thing's connects and disconnects are kept as a timeline: three sessions
// of a real client, then a fourth taken over by a fifth with the same client
// id. The takeover's end is reported after the new connect, and must not
// mark the device offline.
func TestConnectivityHistoryOfAThing(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	events := mt.Connect(t, srv.MQTTURL(), "ops|console").Subscribe("$aws/events/presence/+/esp32-flap", 1)
	for range 3 {
		mt.Connect(t, srv.MQTTURL(), "esp32-flap").Disconnect(50)
	}
	mt.Connect(t, srv.MQTTURL(), "esp32-flap")
	mt.Connect(t, srv.MQTTURL(), "esp32-flap") // takes the session over
	// Every change is recorded before its lifecycle event goes out.
	for range 5 + 4 {
		mt.Next(t, events)
	}
	got := httpGet(t, base+"/api/things/esp32-flap/connectivity", 200)
	if !gjson.Get(got, "connectivity.connected").Bool() || gjson.Get(got, "connectivity.versionNumber").Int() != 5 {
		t.Fatalf("esp32-flap is connected (session 5), but: %s", got)
	}
	h := gjson.Get(got, "history").Array()
	if len(h) != 9 {
		t.Fatalf("history of 5 connects and 4 disconnects: %s", got)
	}
	for i, tr := range h {
		connected, version := i%2 == 0, int64(5-(i+1)/2) // newest first: the open connect, then pairs
		if tr.Get("connected").Bool() != connected || tr.Get("versionNumber").Int() != version {
			t.Errorf("transition %d: %s, want connected %v of session %d", i, tr.Raw, connected, version)
		}
		switch reason := tr.Get("disconnectReason").String(); {
		case connected:
		case version == 4 && reason != "DUPLICATE_CLIENTID":
			t.Errorf("session 4 was taken over, but ended with %q", reason)
		case reason != "CLIENT_INITIATED_DISCONNECT" && reason != "DUPLICATE_CLIENTID":
			// A quick reconnect may take the session over before the
			// broker has read the old connection's DISCONNECT.
			t.Errorf("session %d ended with %q", version, reason)
		}
	}
	httpGet(t, base+"/api/things/nobody/connectivity", 404)
}
