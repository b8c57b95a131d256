package broker_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

func TestQoSLevelsDeliverAtTheLowerOfPublishAndSubscribeQoS(t *testing.T) {
	srv := brokertest.Start(t)
	sub := mt.Connect(t, srv.MQTTURL(), "sub")
	pub := mt.Connect(t, srv.MQTTURL(), "pub")
	got := sub.Subscribe("qos/test", 1)
	for _, qos := range []byte{0, 1, 2} {
		pub.Publish("qos/test", qos, false, "m")
		m := mt.Next(t, got)
		if want := min(qos, 1); m.QoS != want {
			t.Errorf("published at QoS %d to a QoS 1 subscription: delivered at %d, want %d", qos, m.QoS, want)
		}
	}
	got2 := sub.Subscribe("qos/two", 2)
	pub.Publish("qos/two", 2, false, "exactly once")
	if m := mt.Next(t, got2); m.QoS != 2 || string(m.Payload) != "exactly once" {
		t.Errorf("QoS 2 round trip: %+v", m)
	}
}

// TestBurstsReachASubscriberInOrder drives one subscriber's outbound queue
// from three publishers at once (with room for everything, so nothing is
// dropped): each publisher's messages arrive complete and in order, however
// the queue's writers come and go.
func TestBurstsReachASubscriberInOrder(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.ClientQueue = 1 << 16 })
	inOrder := func(o *paho.ClientOptions) { o.SetOrderMatters(true) } // paho's own callbacks in arrival order
	sub := mt.Connect(t, srv.MQTTURL(), "sub", inOrder)
	got := sub.Subscribe("burst/+", 0)
	const publishers, each = 3, 3000
	pubs := make([]*mt.Client, publishers)
	for p := range pubs {
		pubs[p] = mt.Connect(t, srv.MQTTURL(), fmt.Sprintf("pub-%d", p))
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // before the clients disconnect
	failed := make(chan error, publishers)
	for p, pub := range pubs {
		wg.Go(func() {
			for i := range each {
				tok := pub.Client.Publish(fmt.Sprintf("burst/%d", p), 0, false, strconv.Itoa(i))
				if !tok.WaitTimeout(mt.Wait) || tok.Error() != nil {
					failed <- fmt.Errorf("publisher %d, message %d: %v", p, i, tok.Error())
					return
				}
			}
		})
	}
	next := make([]int, publishers)
	for range publishers * each {
		select {
		case m := <-got:
			p, _ := strconv.Atoi(strings.TrimPrefix(m.Topic, "burst/"))
			if i, _ := strconv.Atoi(string(m.Payload)); i != next[p] {
				t.Fatalf("publisher %d: got message %d, want %d", p, i, next[p])
			}
			next[p]++
		case err := <-failed:
			t.Fatal(err)
		case <-time.After(mt.Wait):
			t.Fatalf("nothing for %s; received %v of %d from each publisher", mt.Wait, next, each)
		}
	}
}

func TestRetainedMessageReachesLaterSubscriber(t *testing.T) {
	srv := brokertest.Start(t)
	pub := mt.Connect(t, srv.MQTTURL(), "pub")
	pub.Publish("status/door", 1, true, "open")
	sub := mt.Connect(t, srv.MQTTURL(), "late")
	m := mt.Next(t, sub.Subscribe("status/#", 1))
	if !m.Retained || string(m.Payload) != "open" {
		t.Fatalf("late subscriber got %+v, want the retained 'open'", m)
	}
}

func TestWildcardSubscriptions(t *testing.T) {
	srv := brokertest.Start(t)
	sub := mt.Connect(t, srv.MQTTURL(), "sub")
	plus := sub.Subscribe("site/+/temp", 1)
	hash := sub.Subscribe("site/#", 1)
	pub := mt.Connect(t, srv.MQTTURL(), "pub")
	pub.Publish("site/a/temp", 1, false, "21")
	pub.Publish("site/a/b/temp", 1, false, "22")
	if m := mt.Next(t, plus); m.Topic != "site/a/temp" {
		t.Errorf("site/+/temp got %s", m.Topic)
	}
	seen := map[string]bool{mt.Next(t, hash).Topic: true, mt.Next(t, hash).Topic: true}
	if !seen["site/a/temp"] || !seen["site/a/b/temp"] {
		t.Errorf("site/# got %v", seen)
	}
	// '+' matches exactly one level: the next message on it must be this
	// marker, not site/a/b/temp.
	pub.Publish("site/b/temp", 1, false, "marker")
	if m := mt.Next(t, plus); m.Topic != "site/b/temp" {
		t.Errorf("site/+/temp received %s before the marker", m.Topic)
	}
}

func TestWebSocketAndTCPClientsTalk(t *testing.T) {
	srv := brokertest.Start(t)
	ws := mt.Connect(t, srv.WSURL(), "ws-client")
	got := ws.Subscribe("bridge/x", 1)
	tcp := mt.Connect(t, srv.MQTTURL(), "tcp-client")
	tcp.Publish("bridge/x", 1, false, "over tcp")
	if m := mt.Next(t, got); string(m.Payload) != "over tcp" {
		t.Fatalf("ws client got %q", m.Payload)
	}
	back := tcp.Subscribe("bridge/y", 1)
	ws.Publish("bridge/y", 1, false, "over ws")
	if m := mt.Next(t, back); string(m.Payload) != "over ws" {
		t.Fatalf("tcp client got %q", m.Payload)
	}
}

func TestPersistentSessionSurvivesRestart(t *testing.T) {
	srv := brokertest.Start(t)
	persistent := func(o *paho.ClientOptions) { o.SetCleanSession(false) }

	dev := mt.Connect(t, srv.MQTTURL(), "dev-1", persistent)
	dev.Subscribe("devices/dev-1/inbox", 1)
	dev.Disconnect(50)

	app := mt.Connect(t, srv.MQTTURL(), "app")
	app.Publish("devices/dev-1/inbox", 1, false, "queued while offline")
	app.Disconnect(50)

	srv = srv.Restart(t)

	received := make(chan mt.Message, 4)
	mt.Connect(t, srv.MQTTURL(), "dev-1", persistent, func(o *paho.ClientOptions) {
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			received <- mt.Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos()}
		})
	})
	m := mt.Next(t, received)
	if m.Topic != "devices/dev-1/inbox" || string(m.Payload) != "queued while offline" {
		t.Fatalf("after restart the device got %+v", m)
	}
	// The subscription itself survived too: a new message still arrives.
	app = mt.Connect(t, srv.MQTTURL(), "app")
	app.Publish("devices/dev-1/inbox", 1, false, "after restart")
	if m := mt.Next(t, received); string(m.Payload) != "after restart" {
		t.Fatalf("restored subscription delivered %q", m.Payload)
	}
}

func TestConnectionWithoutConnectIsClosed(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.ConnectTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", srv.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Safety bound only: the broker must close first, well before this.
	_ = c.SetReadDeadline(time.Now().Add(mt.Wait))
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("idle socket: read returned %v, want the broker to close it", err)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestGracefulShutdownDisconnectsClientsAndKeepsState(t *testing.T) {
	srv := brokertest.Start(t)
	lost := make(chan error, 1)
	mt.Connect(t, srv.MQTTURL(), "watcher", func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	})
	pub := mt.Connect(t, srv.MQTTURL(), "pub")
	pub.Publish("keep/me", 1, true, "retained before shutdown")

	ctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case <-lost:
	case <-time.After(mt.Wait):
		t.Fatal("connected client was not disconnected by shutdown")
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", srv.MQTTAddr()); err == nil {
		t.Fatal("listener still accepting after shutdown")
	}
	srv2 := brokertest.StartWith(t, srv.Options)
	sub := mt.Connect(t, srv2.MQTTURL(), "after")
	if m := mt.Next(t, sub.Subscribe("keep/me", 1)); string(m.Payload) != "retained before shutdown" {
		t.Fatalf("retained after restart: %q", m.Payload)
	}
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	srv := brokertest.Start(t)
	mt.Connect(t, srv.MQTTURL(), "counted")
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": "umbra_mqtt_clients_connected 1",
	} {
		resp, err := http.Get(srv.HTTPURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}
	httpDo(t, "POST", srv.HTTPURL()+"/api/jobs", `{"name":"m","target":"*","patch":{"x":1}}`, 201)
	for _, metric := range []string{"umbra_store_commit_seconds", "umbra_mqtt_messages_dropped_total", "umbra_mqtt_inflight_messages",
		"umbra_registry_things 1", `umbra_jobs{state="completed"} 1`, "umbra_store_staged_writes", "umbra_shadow_requests_total", "umbra_store_commit_writes"} {
		resp, _ := http.Get(srv.HTTPURL() + "/metrics")
		sc := bufio.NewScanner(resp.Body)
		found := false
		for sc.Scan() {
			found = found || strings.HasPrefix(sc.Text(), metric)
		}
		resp.Body.Close()
		if !found {
			t.Errorf("/metrics lacks %s", metric)
		}
	}
}

func TestStartErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	opts := brokertest.LoopbackOptions(t.TempDir())
	opts.MQTTAddr = taken.Addr().String()
	b, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("port in use: %v", err)
	}

	srv := brokertest.Start(t)
	b2, _ := broker.New(brokertest.LoopbackOptions(srv.Options.DataDir))
	if err := b2.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("data dir in use: %v", err)
	}

	file := t.TempDir() + "/plain-file"
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b3, _ := broker.New(brokertest.LoopbackOptions(file + "/data"))
	if err := b3.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "data directory") {
		t.Errorf("unwritable data dir: %v", err)
	}

	if _, err := broker.New(broker.Options{MQTTAddr: "nonsense", ConnectTimeout: -1}); err == nil ||
		!strings.Contains(err.Error(), "nonsense") || !strings.Contains(err.Error(), "connect timeout") {
		t.Errorf("invalid options: %v", err)
	}
}
