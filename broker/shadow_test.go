package broker_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

const led = "$aws/things/esp32-led/shadow"

// The seed chapter's loop: the device subscribes to its delta topic and
// reports on boot; an app sets desired (with the tutorial's shorthand, no
// "state" wrapper); the device gets the delta, acts, reports; the shadow
// converges and desired is pruned.
func TestSeedShadowLoopConverges(t *testing.T) {
	srv := brokertest.Start(t)
	dev := mt.Connect(t, srv.MQTTURL(), "esp32-led")
	delta := dev.Subscribe(led+"/update/delta", 1)
	accepted := dev.Subscribe(led+"/update/accepted", 1)
	dev.Publish(led+"/update", 1, false, `{"state":{"reported":{"led_is_on":false,"firmware_version":"1.0.0"}}}`)
	if m := mt.Next(t, accepted); gjson.GetBytes(m.Payload, "version").Int() != 1 {
		t.Fatalf("boot report accepted: %s", m.Payload)
	}

	app := mt.Connect(t, srv.MQTTURL(), "phone-app")
	app.Publish(led+"/update", 1, false, `{"desired": {"led_is_on": true}}`)

	d := mt.Next(t, delta)
	if got := gjson.GetBytes(d.Payload, "state").Raw; got != `{"led_is_on":true}` {
		t.Fatalf("delta state = %s, want {\"led_is_on\":true} (payload %s)", got, d.Payload)
	}
	if v := gjson.GetBytes(d.Payload, "version").Int(); v != 2 {
		t.Fatalf("delta version %d, want 2", v)
	}
	mt.Next(t, accepted) // the app's update

	dev.Publish(led+"/update", 1, false, `{"state":{"reported":{"led_is_on":true}}}`)
	if m := mt.Next(t, accepted); gjson.GetBytes(m.Payload, "version").Int() != 3 {
		t.Fatalf("report accepted: %s", m.Payload)
	}

	got := dev.Subscribe(led+"/get/accepted", 1)
	dev.Publish(led+"/get", 1, false, "")
	doc := mt.Next(t, got).Payload
	if gjson.GetBytes(doc, "state.desired").Exists() || gjson.GetBytes(doc, "state.delta").Exists() {
		t.Fatalf("converged shadow still has desired or delta: %s", doc)
	}
	if gjson.GetBytes(doc, "state.reported.led_is_on").Bool() != true || gjson.GetBytes(doc, "version").Int() != 3 {
		t.Fatalf("converged shadow: %s", doc)
	}
}

func TestNamedShadowsAreSeparateFromClassic(t *testing.T) {
	srv := brokertest.Start(t)
	c := mt.Connect(t, srv.MQTTURL(), "multi")
	cfg := "$aws/things/multi/shadow/name/config"
	acc := c.Subscribe(cfg+"/update/accepted", 1)
	rej := c.Subscribe("$aws/things/multi/shadow/get/rejected", 1)
	c.Publish(cfg+"/update", 1, false, `{"state":{"desired":{"interval":300}}}`)
	if m := mt.Next(t, acc); gjson.GetBytes(m.Payload, "version").Int() != 1 {
		t.Fatalf("named update: %s", m.Payload)
	}
	c.Publish("$aws/things/multi/shadow/get", 1, false, `{"clientToken":"c1"}`)
	m := mt.Next(t, rej)
	if string(m.Payload) == "" || gjson.GetBytes(m.Payload, "code").Int() != 404 ||
		gjson.GetBytes(m.Payload, "message").String() != "No shadow exists with name: 'multi'" ||
		gjson.GetBytes(m.Payload, "clientToken").String() != "c1" {
		t.Fatalf("classic get after named update: %s", m.Payload)
	}
	body := httpGet(t, srv.HTTPURL()+"/api/things/shadow/ListNamedShadowsForThing/multi", 200)
	if got := gjson.Get(body, "results").Raw; got != `["config"]` {
		t.Fatalf("ListNamedShadowsForThing: %s", body)
	}
}

// Many writers race with the same expected version: exactly one wins each
// version, the others get 409 Version conflict.
func TestConcurrentVersionedUpdatesExactlyOneWinsEachVersion(t *testing.T) {
	srv := brokertest.Start(t, noRateLimit) // 60 requests on one thing in well under 3 s
	const writers, rounds = 6, 10
	topic := "$aws/things/contended/shadow"
	seed := mt.Connect(t, srv.MQTTURL(), "seed")
	acc := seed.Subscribe(topic+"/update/accepted", 1)
	seed.Publish(topic+"/update", 1, false, `{"state":{"reported":{"n":0}}}`)
	mt.Next(t, acc)

	type result struct{ accepted, conflicts int }
	clients := make([]*mt.Client, writers)
	replies := make([]<-chan mt.Message, writers)
	for i := range clients {
		clients[i] = mt.Connect(t, srv.MQTTURL(), fmt.Sprintf("w%d", i))
		replies[i] = clients[i].Subscribe(topic+"/update/+", 1)
	}
	for round := range rounds {
		version := int64(round + 1)
		var wg sync.WaitGroup
		res := make([]result, writers)
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				token := fmt.Sprintf("w%d-r%d", i, round)
				clients[i].Publish(topic+"/update", 1, false,
					fmt.Sprintf(`{"state":{"desired":{"owner":"w%d"}},"version":%d,"clientToken":"%s"}`, i, version, token))
				for {
					m := mt.Next(t, replies[i])
					if gjson.GetBytes(m.Payload, "clientToken").String() != token {
						continue // another writer's reply
					}
					switch {
					case strings.HasSuffix(m.Topic, "/accepted"):
						res[i].accepted++
					case strings.HasSuffix(m.Topic, "/rejected") && gjson.GetBytes(m.Payload, "code").Int() == 409 &&
						gjson.GetBytes(m.Payload, "message").String() == "Version conflict":
						res[i].conflicts++
					default:
						continue
					}
					return
				}
			}()
		}
		wg.Wait()
		won, lost := 0, 0
		for _, r := range res {
			won += r.accepted
			lost += r.conflicts
		}
		if won != 1 || lost != writers-1 {
			t.Fatalf("round %d (version %d): %d accepted, %d conflicts; want 1 and %d", round, version, won, lost, writers-1)
		}
	}
}

// A device with a persistent session and a QoS 1 subscription to its delta
// topic gets the delta that was produced while it was offline.
func TestOfflineDeviceGetsDeltaOnReconnect(t *testing.T) {
	srv := brokertest.Start(t)
	persistent := func(o *paho.ClientOptions) { o.SetCleanSession(false) }
	topic := "$aws/things/sleepy/shadow/update/delta"
	dev := mt.Connect(t, srv.MQTTURL(), "sleepy", persistent)
	dev.Subscribe(topic, 1)
	dev.Disconnect(50)

	app := mt.Connect(t, srv.MQTTURL(), "app")
	app.Publish("$aws/things/sleepy/shadow/update", 1, false, `{"state":{"desired":{"telemetry_interval_s":300}}}`)

	for _, restart := range []bool{false, true} {
		if restart {
			// Also across a broker restart: the queued delta was persisted.
			app.Publish("$aws/things/sleepy/shadow/update", 1, false, `{"state":{"desired":{"telemetry_interval_s":600}}}`)
			srv = srv.Restart(t)
		}
		got := make(chan mt.Message, 8)
		c := mt.Connect(t, srv.MQTTURL(), "sleepy", persistent, func(o *paho.ClientOptions) {
			o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- mt.Message{Topic: m.Topic(), Payload: m.Payload()} })
		})
		m := mt.NextOn(t, got, topic)
		want := map[bool]int64{false: 300, true: 600}[restart]
		if gjson.GetBytes(m.Payload, "state.telemetry_interval_s").Int() != want {
			t.Fatalf("restart=%v: delta on reconnect %s, want interval %d", restart, m.Payload, want)
		}
		c.Disconnect(50)
	}
}

// Every accepted version survives a restart, with its history.
func TestRestartKeepsEveryAcceptedVersion(t *testing.T) {
	srv := brokertest.Start(t, noRateLimit)
	c := mt.Connect(t, srv.MQTTURL(), "durable")
	acc := c.Subscribe("$aws/things/durable/shadow/update/accepted", 1)
	for i := 1; i <= 20; i++ {
		c.Publish("$aws/things/durable/shadow/update", 1, false, fmt.Sprintf(`{"state":{"reported":{"count":%d}}}`, i))
		if v := gjson.GetBytes(mt.Next(t, acc).Payload, "version").Int(); v != int64(i) {
			t.Fatalf("update %d accepted as version %d", i, v)
		}
	}
	srv = srv.Restart(t)
	doc := httpGet(t, srv.HTTPURL()+"/things/durable/shadow", 200)
	if gjson.Get(doc, "version").Int() != 20 || gjson.Get(doc, "state.reported.count").Int() != 20 {
		t.Fatalf("after restart: %s", doc)
	}
	hist := httpGet(t, srv.HTTPURL()+"/things/durable/shadow/history?limit=100", 200)
	entries := gjson.Get(hist, "entries").Array()
	if len(entries) != 20 || entries[0].Get("version").Int() != 20 || entries[19].Get("version").Int() != 1 ||
		entries[0].Get("principal").String() != "durable" || entries[0].Get("request.state.reported.count").Int() != 20 {
		t.Fatalf("history after restart: %s", hist)
	}
}

// HTTP and MQTT are two faces of one shadow: an HTTP update is announced on
// MQTT, an MQTT update is visible over HTTP, and HTTP errors stay in HTTP.
func TestMixedMQTTAndHTTP(t *testing.T) {
	srv := brokertest.Start(t)
	dev := mt.Connect(t, srv.MQTTURL(), "mixed")
	delta := dev.Subscribe("$aws/things/mixed/shadow/update/delta", 1)
	docs := dev.Subscribe("$aws/things/mixed/shadow/update/documents", 1)
	rejected := dev.Subscribe("$aws/things/mixed/shadow/update/rejected", 1)

	body := httpDo(t, "POST", srv.HTTPURL()+"/things/mixed/shadow", `{"state":{"desired":{"color":"red"}},"clientToken":"h1"}`, 200)
	if gjson.Get(body, "version").Int() != 1 || gjson.Get(body, "clientToken").String() != "h1" {
		t.Fatalf("HTTP update: %s", body)
	}
	if m := mt.Next(t, delta); gjson.GetBytes(m.Payload, "state.color").String() != "red" {
		t.Fatalf("delta after HTTP update: %s", m.Payload)
	}
	if m := mt.Next(t, docs); gjson.GetBytes(m.Payload, "previous").Raw != "null" {
		t.Fatalf("documents after creating update: %s", m.Payload)
	}

	dev.Publish("$aws/things/mixed/shadow/update", 1, false, `{"state":{"reported":{"color":"red"}}}`)
	mt.Next(t, docs)
	doc := httpGet(t, srv.HTTPURL()+"/things/mixed/shadow", 200)
	if gjson.Get(doc, "version").Int() != 2 || gjson.Get(doc, "state.reported.color").String() != "red" || gjson.Get(doc, "state.delta").Exists() {
		t.Fatalf("HTTP get after MQTT report: %s", doc)
	}

	conflict := httpDo(t, "POST", srv.HTTPURL()+"/things/mixed/shadow", `{"state":{"desired":{"x":1}},"version":1}`, 409)
	if gjson.Get(conflict, "message").String() != "Version conflict" {
		t.Fatalf("HTTP 409 body: %s", conflict)
	}
	httpDo(t, "DELETE", srv.HTTPURL()+"/things/mixed/shadow", "", 200)
	httpGet(t, srv.HTTPURL()+"/things/mixed/shadow", 404)
	// The HTTP 409 was not published on /update/rejected: the next rejected
	// message is the one this MQTT request causes.
	dev.Publish("$aws/things/mixed/shadow/update", 1, false, `{"state":5}`)
	if m := mt.Next(t, rejected); gjson.GetBytes(m.Payload, "message").String() != "State node must be an object" {
		t.Fatalf("first /update/rejected: %s", m.Payload)
	}
}

// AWS forwards an accepted /update to its subscribers and not a rejected
// one; either way a QoS 1 publisher gets its PUBACK.
func TestUpdateForwardingAndPuback(t *testing.T) {
	srv := brokertest.Start(t)
	watcher := mt.Connect(t, srv.MQTTURL(), "watcher")
	raw := watcher.Subscribe("$aws/things/fw/shadow/update", 1)
	dev := mt.Connect(t, srv.MQTTURL(), "fw")
	dev.Publish("$aws/things/fw/shadow/update", 1, false, `not json`) // Publish fails the test without a PUBACK
	dev.Publish("$aws/things/fw/shadow/update", 1, false, `{"state":{"reported":{"ok":true}}}`)
	if m := mt.Next(t, raw); !strings.Contains(string(m.Payload), `"ok":true`) {
		t.Fatalf("first forwarded update is %s, want the accepted one (the rejected one must not be forwarded)", m.Payload)
	}
}

// AWS ignores last-will messages on shadow topics (they still reach
// subscribers); Umbra must not turn one into a shadow update.
func TestLastWillOnShadowTopicIsNotAnUpdate(t *testing.T) {
	srv := brokertest.Start(t)
	watcher := mt.Connect(t, srv.MQTTURL(), "watcher")
	will := watcher.Subscribe("$aws/things/willful/shadow/update", 1)

	c, err := net.Dial("tcp", srv.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(connectPacket("willful", "$aws/things/willful/shadow/update", `{"state":{"reported":{"online":false}}}`)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[3] != 0 {
		t.Fatalf("CONNACK %x: %v", ack, err)
	}
	c.Close() // no DISCONNECT: the will fires

	if m := mt.Next(t, will); !strings.Contains(string(m.Payload), `"online":false`) {
		t.Fatalf("will payload %s", m.Payload)
	}
	httpGet(t, srv.HTTPURL()+"/things/willful/shadow", 404)
}

func noRateLimit(o *broker.Options) { o.Limits.ShadowRate = -1 }

func httpGet(t *testing.T, url string, want int) string { return httpDo(t, "GET", url, "", want) }

func httpDo(t *testing.T, method, url, body string, want int) string {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, url, resp.StatusCode, want, b)
	}
	return string(b)
}
