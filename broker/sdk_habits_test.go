package broker_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// AWS's own device SDKs have habits a compatible broker must tolerate; each
// subtest is one of them.
func TestAWSDeviceSDKHabits(t *testing.T) {
	srv := brokertest.Start(t)

	t.Run("metadata in the request is ignored", func(t *testing.T) {
		c := mt.Connect(t, srv.MQTTURL(), "habit-meta")
		acc := c.Subscribe("$aws/things/habit-meta/shadow/update/accepted", 1)
		c.Publish("$aws/things/habit-meta/shadow/update", 1, false, `{"state":{"reported":{"a":1}},"metadata":{}}`)
		if m := mt.Next(t, acc); gjson.GetBytes(m.Payload, "version").Int() != 1 {
			t.Fatalf("accepted: %s", m.Payload)
		}
	})

	t.Run("small counter client tokens repeat across clients", func(t *testing.T) {
		for _, id := range []string{"tok-a", "tok-b"} {
			c := mt.Connect(t, srv.MQTTURL(), id)
			acc := c.Subscribe("$aws/things/"+id+"/shadow/update/accepted", 1)
			c.Publish("$aws/things/"+id+"/shadow/update", 1, false, `{"state":{"reported":{"x":1}},"clientToken":"1"}`)
			if m := mt.Next(t, acc); gjson.GetBytes(m.Payload, "clientToken").String() != "1" {
				t.Fatalf("%s: accepted %s", id, m.Payload)
			}
		}
	})

	t.Run("QoS 0 subscribers", func(t *testing.T) {
		c := mt.Connect(t, srv.MQTTURL(), "habit-qos0")
		acc := c.Subscribe("$aws/things/habit-qos0/shadow/update/accepted", 0)
		c.Publish("$aws/things/habit-qos0/shadow/update", 0, false, `{"state":{"reported":{"q":0}}}`)
		if m := mt.Next(t, acc); m.QoS != 0 || gjson.GetBytes(m.Payload, "state.reported.q").Int() != 0 {
			t.Fatalf("accepted %+v", m)
		}
	})

	t.Run("SDK metrics in the username", func(t *testing.T) {
		c := mt.Connect(t, srv.MQTTURL(), "habit-user", func(o *paho.ClientOptions) {
			o.SetUsername("?SDK=JavaScript&Version=1.19.0&Platform=Linux")
		})
		acc := c.Subscribe("$aws/things/habit-user/shadow/get/rejected", 1)
		c.Publish("$aws/things/habit-user/shadow/get", 1, false, `{"clientToken":"u"}`)
		if m := mt.Next(t, acc); gjson.GetBytes(m.Payload, "code").Int() != 404 {
			t.Fatalf("get: %s", m.Payload)
		}
	})

	t.Run("MQTT 5 subscribe-publish-unsubscribe around every request", func(t *testing.T) {
		conn, err := net.Dial("tcp", srv.MQTTAddr())
		if err != nil {
			t.Fatal(err)
		}
		replies := make(chan *paho5.Publish, 16)
		c := paho5.NewClient(paho5.ClientConfig{
			Conn: conn,
			OnPublishReceived: []func(paho5.PublishReceived) (bool, error){
				func(p paho5.PublishReceived) (bool, error) { replies <- p.Packet; return true, nil },
			},
		})
		ctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
		defer cancel()
		if _, err := c.Connect(ctx, &paho5.Connect{ClientID: "habit-v5", CleanStart: true, KeepAlive: 30}); err != nil {
			t.Fatal(err)
		}
		defer c.Disconnect(&paho5.Disconnect{})
		prefix := "$aws/things/habit-v5/shadow"
		for i := 1; i <= 5; i++ {
			acc, rej := prefix+"/update/accepted", prefix+"/update/rejected"
			if _, err := c.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: acc, QoS: 1}, {Topic: rej, QoS: 1}}}); err != nil {
				t.Fatal(err)
			}
			token := fmt.Sprint(i)
			if _, err := c.Publish(ctx, &paho5.Publish{Topic: prefix + "/update", QoS: 1,
				Payload: fmt.Appendf(nil, `{"state":{"reported":{"i":%d}},"clientToken":"%s"}`, i, token)}); err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-replies:
				if p.Topic != acc || gjson.GetBytes(p.Payload, "version").Int() != int64(i) || gjson.GetBytes(p.Payload, "clientToken").String() != token {
					t.Fatalf("request %d: %s %s", i, p.Topic, p.Payload)
				}
			case <-ctx.Done():
				t.Fatalf("request %d: no reply", i)
			}
			if _, err := c.Unsubscribe(ctx, &paho5.Unsubscribe{Topics: []string{acc, rej}}); err != nil {
				t.Fatal(err)
			}
		}
	})
}
