package broker_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// BenchmarkShadowVsRaw runs the same closed loop twice in one invocation:
// `devices` clients each publish QoS 1 and wait for the answer before the
// next publish.
//
//   - raw: the device publishes on a plain topic it is itself subscribed to
//     and waits for its own message (the broker's QoS 1 round trip: the ceiling);
//   - shadow-update: the device publishes a shadow update and waits for
//     /update/accepted, which Umbra sends only after the update is fsynced.
//
// Both report round trips per second; their ratio is what durability and
// shadow processing cost.
//
//	go test ./broker -run '^$' -bench ShadowVsRaw -benchtime 20000x -count 3
func BenchmarkShadowVsRaw(b *testing.B) {
	for _, devices := range []int{1, 50} {
		for _, mode := range []string{"raw", "shadow-update"} {
			b.Run(fmt.Sprintf("%s/devices=%d", mode, devices), func(b *testing.B) {
				benchRoundTrips(b, mode, devices, nil, nil)
			})
		}
	}
}

func benchRoundTrips(b *testing.B, mode string, devices int, server func(*broker.Options), client func(*paho.ClientOptions)) {
	// Benchmarks measure capacity, not the per-thing rate limit.
	srv := brokertest.Start(b, noRateLimit, func(o *broker.Options) {
		if server != nil {
			server(o)
		}
	})
	type device struct {
		c       *mt.Client
		replies chan struct{}
		pub     string
	}
	devs := make([]device, devices)
	for i := range devs {
		id := fmt.Sprintf("bench-%d", i)
		d := device{replies: make(chan struct{}, 1)}
		if client != nil {
			d.c = mt.Connect(b, srv.MQTTURL(), id, client)
		} else {
			d.c = mt.Connect(b, srv.MQTTURL(), id)
		}
		reply := "bench/" + id
		d.pub = reply
		if mode == "shadow-update" {
			reply = "$aws/things/" + id + "/shadow/update/accepted"
			d.pub = "$aws/things/" + id + "/shadow/update"
		}
		tok := d.c.Client.Subscribe(reply, 1, func(paho.Client, paho.Message) { d.replies <- struct{}{} })
		tok.Wait()
		devs[i] = d
	}
	per := b.N / devices
	if per == 0 {
		per = 1
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range devs {
		wg.Add(1)
		go func(d device) {
			defer wg.Done()
			for n := range per {
				payload := fmt.Sprintf(`{"state":{"reported":{"seq":%d,"temp":21.5,"led_is_on":true}}}`, n)
				d.c.Client.Publish(d.pub, 1, false, payload).Wait()
				select {
				case <-d.replies:
				case <-time.After(mt.Wait):
					b.Errorf("%s: no reply", d.pub)
					return
				}
			}
		}(devs[i])
	}
	wg.Wait()
	el := time.Since(start)
	b.ReportMetric(float64(per*devices)/el.Seconds(), "roundtrips/s")
	b.ReportMetric(float64(el.Microseconds())/float64(per), "µs/roundtrip")
}
