package broker_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// An application sends many QoS 1 shadow updates over one connection
// without waiting for each answer (as a backend setting desired state on
// a fleet does). They are worked on together and share commits, and what
// one-at-a-time processing promised still holds:
//   - every PUBACK comes, in the order the updates were sent (a rejected
//     update is acknowledged too);
//   - the updates of one shadow are applied in the order they were sent:
//     its /accepted answers carry versions 1, 2, 3... with the reported
//     values in publishing order, and so does the stored document;
//   - an accepted update reaches the subscribers of its topic, in order;
//     a rejected one does not.
func TestShadowUpdatesPipelinedOnOneConnection(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprint("MQTT v", v), func(t *testing.T) {
			srv := brokertest.Start(t, noRateLimit)
			const things, sent, bad = 6, 120, 50
			watcher := mt.Connect(t, srv.MQTTURL(), "pl-watcher")
			forwarded := watcher.Subscribe("$aws/things/+/shadow/update", 1)
			app, _ := rawConnect(t, hostPort(srv.MQTTURL()), nil, v, "pl-app", true)
			app.subscribe(1, "$aws/things/+/shadow/update/accepted", 0)
			app.subscribe(2, "$aws/things/+/shadow/update/rejected", 0)
			commits0 := metricValue(t, srv, "umbra_store_commit_seconds_count")

			thing := func(i int) string { return fmt.Sprint("pl-", i%things) }
			for i := 1; i <= sent; i++ {
				payload := fmt.Sprintf(`{"state":{"reported":{"seq":%d}}}`, i)
				if i == bad {
					payload = `{"state":{"reported":` // rejected: 400
				}
				app.publish(uint16(i), "$aws/things/"+thing(i)+"/shadow/update", 1, payload)
			}

			acked, answered := 0, 0
			seqs := map[string][]int64{} // thing -> reported.seq of its /accepted answers, in arrival order
			for acked < sent || answered < sent {
				pk := app.next()
				switch pk.FixedHeader.Type {
				case packets.Puback:
					acked++
					if int(pk.PacketID) != acked || pk.ReasonCode != 0 {
						t.Fatalf("PUBACK %d (reason %#x) after %d others: want every update acknowledged, in the order sent", pk.PacketID, pk.ReasonCode, acked-1)
					}
				case packets.Publish:
					answered++
					parts := strings.Split(pk.TopicName, "/")
					name, answer := parts[2], parts[len(parts)-1]
					if answer == "rejected" {
						if name != thing(bad) || gjson.GetBytes(pk.Payload, "code").Int() != 400 {
							t.Fatalf("rejected on %s: %s", pk.TopicName, pk.Payload)
						}
						continue
					}
					seqs[name] = append(seqs[name], gjson.GetBytes(pk.Payload, "state.reported.seq").Int())
					if version := gjson.GetBytes(pk.Payload, "version").Int(); version != int64(len(seqs[name])) {
						t.Fatalf("%s: answer %d has version %d", name, len(seqs[name]), version)
					}
				}
			}
			commits := metricValue(t, srv, "umbra_store_commit_seconds_count") - commits0
			t.Logf("%d updates on one connection: %.0f commits", sent, commits)
			if commits > sent*3/4 {
				t.Errorf("%.0f commits for %d updates sent at once on one connection: they were not worked on together", commits, sent)
			}

			fwd := map[string][]int64{}
			for range sent - 1 {
				m := mt.Next(t, forwarded)
				name := strings.Split(m.Topic, "/")[2]
				fwd[name] = append(fwd[name], gjson.GetBytes(m.Payload, "state.reported.seq").Int())
			}
			for k := range things {
				name := fmt.Sprint("pl-", k)
				var want []int64 // the thing's accepted updates, in the order sent
				for i := 1; i <= sent; i++ {
					if thing(i) == name && i != bad {
						want = append(want, int64(i))
					}
				}
				if fmt.Sprint(seqs[name]) != fmt.Sprint(want) {
					t.Errorf("%s: /accepted answers carry seq %v, want %v", name, seqs[name], want)
				}
				if fmt.Sprint(fwd[name]) != fmt.Sprint(want) {
					t.Errorf("%s: forwarded to subscribers: seq %v, want %v", name, fwd[name], want)
				}
				doc := httpGet(t, srv.HTTPURL()+"/things/"+name+"/shadow", 200)
				if gjson.Get(doc, "version").Int() != int64(len(want)) || gjson.Get(doc, "state.reported.seq").Int() != want[len(want)-1] {
					t.Errorf("%s stored: %s, want version %d and seq %d", name, doc, len(want), want[len(want)-1])
				}
			}
		})
	}
}

// A QoS 0 get sent right after QoS 1 updates of the same shadow on the
// same connection is answered after them, as when each request was
// answered before the next was read.
func TestShadowGetAfterPipelinedUpdates(t *testing.T) {
	srv := brokertest.Start(t, noRateLimit)
	app, _ := rawConnect(t, hostPort(srv.MQTTURL()), nil, 4, "pg-app", true)
	app.subscribe(1, "$aws/things/pg-lamp/shadow/get/accepted", 0)
	const updates = 20
	for i := 1; i <= updates; i++ {
		app.publish(uint16(i), "$aws/things/pg-lamp/shadow/update", 1, fmt.Sprintf(`{"state":{"reported":{"seq":%d}}}`, i))
	}
	app.publish(0, "$aws/things/pg-lamp/shadow/get", 0, "")
	for {
		pk := app.next()
		if pk.FixedHeader.Type != packets.Publish {
			continue
		}
		if v := gjson.GetBytes(pk.Payload, "version").Int(); v != updates {
			t.Fatalf("get after %d updates answered version %d: %s", updates, v, pk.Payload)
		}
		return
	}
}
