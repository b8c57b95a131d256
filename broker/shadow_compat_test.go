package broker_test

import (
	"time"

	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// The AWS Embedded C shadow demo and Espressif's ESP32 thing_shadow example
// publish the JSON C string with its terminating NUL. Over MQTT (a real
// client) and HTTP the update is accepted, the device gets its delta, and the
// shadow and its history hold the JSON without the NUL.
func TestNULTerminatedUpdates(t *testing.T) {
	srv := brokertest.Start(t)
	const topic = "$aws/things/esp32-nul/shadow"
	dev := mt.Connect(t, srv.MQTTURL(), "esp32-nul")
	accepted := dev.Subscribe(topic+"/update/accepted", 1)
	rejected := dev.Subscribe(topic+"/update/rejected", 1)
	delta := dev.Subscribe(topic+"/update/delta", 1)

	dev.Publish(topic+"/update", 1, false, "{\"state\":{\"desired\":{\"led\":true}},\"clientToken\":\"c1\"}\x00")
	select {
	case m := <-rejected:
		t.Fatalf("NUL-terminated MQTT update rejected: %s", m.Payload)
	case m := <-accepted:
		if gjson.GetBytes(m.Payload, "version").Int() != 1 || gjson.GetBytes(m.Payload, "clientToken").String() != "c1" {
			t.Fatalf("accepted: %s", m.Payload)
		}
	case <-time.After(mt.Wait):
		t.Fatal("no reply to the NUL-terminated update")
	}
	if d := mt.Next(t, delta); gjson.GetBytes(d.Payload, "state").Raw != `{"led":true}` {
		t.Fatalf("delta: %s", d.Payload)
	}

	// Over HTTP, with a zero-padded buffer.
	body := httpDo(t, "POST", srv.HTTPURL()+"/things/esp32-nul/shadow",
		"{\"state\":{\"desired\":{\"color\":\"red\"}}}\x00\x00", 200)
	if gjson.Get(body, "version").Int() != 2 {
		t.Fatalf("HTTP accepted: %s", body)
	}
	if d := mt.Next(t, delta); gjson.GetBytes(d.Payload, "state").Raw != `{"led":true,"color":"red"}` || gjson.GetBytes(d.Payload, "version").Int() != 2 {
		t.Fatalf("delta after HTTP update: %s", d.Payload)
	}
	mt.Next(t, accepted) // the HTTP update is announced on MQTT too

	// Text after the NUL is still invalid JSON, on both faces.
	dev.Publish(topic+"/update", 1, false, "{\"state\":{\"desired\":{\"x\":1}}}\x00junk")
	if m := mt.Next(t, rejected); gjson.GetBytes(m.Payload, "code").Int() != 400 || gjson.GetBytes(m.Payload, "message").String() != "Invalid JSON" {
		t.Fatalf("text after NUL: %s", m.Payload)
	}
	httpDo(t, "POST", srv.HTTPURL()+"/things/esp32-nul/shadow", "\x00{\"state\":{}}", 400)

	doc := httpGet(t, srv.HTTPURL()+"/things/esp32-nul/shadow", 200)
	if gjson.Get(doc, "version").Int() != 2 || gjson.Get(doc, "state.delta").Raw != `{"led":true,"color":"red"}` {
		t.Fatalf("stored shadow: %s", doc)
	}
	hist := httpGet(t, srv.HTTPURL()+"/things/esp32-nul/shadow/history", 200)
	if !gjson.Valid(hist) || gjson.Get(hist, "entries.#").Int() != 2 {
		t.Fatalf("history: %s", hist)
	}
	for _, e := range gjson.Get(hist, "entries").Array() {
		if !e.Get("request.state.desired").Exists() {
			t.Fatalf("history entry lost its request: %s", e.Raw)
		}
	}
}

// npm aws-iot-device-sdk v1 keeps the last version it saw and sends it on
// its next update; after its own delete that is the deleted version T. The
// update is accepted and creates the shadow at T+1; a stale T after that is
// a 409 as usual.
func TestUpdateAfterDeleteWithDeletedVersion(t *testing.T) {
	srv := brokertest.Start(t)
	const topic = "$aws/things/v1-dev/shadow"
	dev := mt.Connect(t, srv.MQTTURL(), "v1-dev")
	accepted := dev.Subscribe(topic+"/update/accepted", 1)
	rejected := dev.Subscribe(topic+"/update/rejected", 1)
	deleted := dev.Subscribe(topic+"/delete/accepted", 1)

	for i, p := range []string{`{"state":{"reported":{"a":1}}}`, `{"state":{"reported":{"a":2}},"version":1}`} {
		dev.Publish(topic+"/update", 1, false, p)
		if m := mt.Next(t, accepted); gjson.GetBytes(m.Payload, "version").Int() != int64(i+1) {
			t.Fatalf("update %d: %s", i, m.Payload)
		}
	}
	dev.Publish(topic+"/delete", 1, false, `{"clientToken":"del"}`)
	v := gjson.GetBytes(mt.Next(t, deleted).Payload, "version").Int()
	if v != 2 {
		t.Fatalf("delete/accepted version %d, want 2", v)
	}
	dev.Publish(topic+"/update", 1, false, `{"state":{"reported":{"a":3}},"version":2,"clientToken":"after"}`)
	select {
	case m := <-rejected:
		t.Fatalf("update naming the deleted version rejected: %s", m.Payload)
	case m := <-accepted:
		if gjson.GetBytes(m.Payload, "version").Int() != 3 || gjson.GetBytes(m.Payload, "clientToken").String() != "after" {
			t.Fatalf("accepted: %s", m.Payload)
		}
	case <-time.After(mt.Wait):
		t.Fatal("no reply to the update after delete")
	}
	dev.Publish(topic+"/update", 1, false, `{"state":{"reported":{"a":4}},"version":2}`)
	if m := mt.Next(t, rejected); gjson.GetBytes(m.Payload, "code").Int() != 409 {
		t.Fatalf("stale version after re-creation: %s", m.Payload)
	}
	doc := httpGet(t, srv.HTTPURL()+"/things/v1-dev/shadow", 200)
	if gjson.Get(doc, "version").Int() != 3 || gjson.Get(doc, "state.reported.a").Int() != 3 {
		t.Fatalf("stored shadow: %s", doc)
	}
}
