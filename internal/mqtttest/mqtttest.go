// Package mqtttest wraps paho.mqtt.golang for Umbra's tests: connect with
// test-friendly defaults, subscribe into a channel, wait for messages with a
// bound instead of sleeping.
package mqtttest

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Wait bounds every wait for the broker; generous so a loaded CI machine
// does not fail a correct test.
const Wait = 10 * time.Second

// Message is a received PUBLISH.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
}

// Client is a connected paho client bound to a test.
type Client struct {
	paho.Client
	tb testing.TB
	id string
}

// Options returns paho options for a test client: no auto-reconnect, clean
// session unless changed, MQTT 3.1.1.
func Options(url, id string) *paho.ClientOptions {
	return paho.NewClientOptions().AddBroker(url).SetClientID(id).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(Wait).SetWriteTimeout(Wait).SetOrderMatters(false).
		SetProtocolVersion(4)
}

// Connect connects a client and disconnects it when the test ends.
func Connect(tb testing.TB, url, id string, modify ...func(*paho.ClientOptions)) *Client {
	tb.Helper()
	c, err := TryConnect(url, id, modify...)
	if err != nil {
		tb.Fatalf("connect %s to %s: %v", id, url, err)
	}
	tb.Cleanup(func() { c.Disconnect(50) })
	return &Client{Client: c, tb: tb, id: id}
}

// TryConnect connects and returns the error instead of failing the test.
func TryConnect(url, id string, modify ...func(*paho.ClientOptions)) (paho.Client, error) {
	o := Options(url, id)
	for _, m := range modify {
		m(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(Wait) {
		return nil, errTimeout("connect")
	}
	return c, tok.Error()
}

type errTimeout string

func (e errTimeout) Error() string { return string(e) + ": no answer within " + Wait.String() }

// Subscribe subscribes and returns the channel the messages arrive on.
func (c *Client) Subscribe(filter string, qos byte) <-chan Message {
	c.tb.Helper()
	ch := make(chan Message, 1024)
	tok := c.Client.Subscribe(filter, qos, func(_ paho.Client, m paho.Message) {
		ch <- Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Retained: m.Retained()}
	})
	if !tok.WaitTimeout(Wait) {
		c.tb.Fatalf("%s: subscribe %s: timed out", c.id, filter)
	}
	if err := tok.Error(); err != nil {
		c.tb.Fatalf("%s: subscribe %s: %v", c.id, filter, err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code >= 0x80 {
				c.tb.Fatalf("%s: subscribe %s refused (0x%02x)", c.id, f, code)
			}
		}
	}
	return ch
}

// Publish publishes and waits for the flow to complete (PUBACK/PUBCOMP).
func (c *Client) Publish(topic string, qos byte, retained bool, payload string) {
	c.tb.Helper()
	tok := c.Client.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(Wait) {
		c.tb.Fatalf("%s: publish %s: no ack within %s", c.id, topic, Wait)
	}
	if err := tok.Error(); err != nil {
		c.tb.Fatalf("%s: publish %s: %v", c.id, topic, err)
	}
}

// Next returns the next message from ch, failing the test if none arrives.
func Next(tb testing.TB, ch <-chan Message) Message {
	tb.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(Wait):
		tb.Fatalf("no message within %s", Wait)
		return Message{}
	}
}

// NextOn returns the next message on topic, skipping others.
func NextOn(tb testing.TB, ch <-chan Message, topic string) Message {
	tb.Helper()
	deadline := time.After(Wait)
	for {
		select {
		case m := <-ch:
			if m.Topic == topic {
				return m
			}
		case <-deadline:
			tb.Fatalf("no message on %s within %s", topic, Wait)
			return Message{}
		}
	}
}
