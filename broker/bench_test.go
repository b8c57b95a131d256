package broker_test

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// BenchmarkQoS1PubSub measures QoS 1 publish → subscriber throughput through
// the broker with MQTT session persistence off (plain Mochi) and on (Umbra's
// write-behind session store). Run both in one invocation so the ratio holds
// on a noisy machine:
//
//	go test ./broker -run '^$' -bench QoS1PubSub -benchtime 20000x -count 5
func BenchmarkQoS1PubSub(b *testing.B) {
	for _, persist := range []bool{false, true} {
		b.Run(fmt.Sprintf("persistence=%v", map[bool]string{false: "off", true: "on"}[persist]), func(b *testing.B) {
			// A queue deep enough that the fire-hose publisher never makes
			// the broker drop for the subscriber (the same in both runs).
			srv := brokertest.Start(b, func(o *broker.Options) { o.EphemeralSessions = !persist; o.ClientQueue = 1 << 16 })
			var got atomic.Int64
			done := make(chan struct{})
			n := int64(b.N)
			sub := mt.Connect(b, srv.MQTTURL(), "bench-sub", func(o *paho.ClientOptions) { o.SetCleanSession(false) })
			tok := sub.Client.Subscribe("bench/qos1", 1, func(paho.Client, paho.Message) {
				if got.Add(1) == n {
					close(done)
				}
			})
			tok.Wait()
			pub := mt.Connect(b, srv.MQTTURL(), "bench-pub", func(o *paho.ClientOptions) { o.SetMaxResumePubInFlight(1000) })
			payload := make([]byte, 64)
			window := make(chan paho.Token, 256) // bounded publishes in flight
			drained := make(chan struct{})
			go func() {
				for t := range window {
					t.Wait()
				}
				close(drained)
			}()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				window <- pub.Client.Publish("bench/qos1", 1, false, payload)
			}
			close(window)
			<-drained
			select {
			case <-done:
			case <-time.After(mt.Wait):
				b.Fatalf("subscriber got %d of %d", got.Load(), n)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
		})
	}
}

// BenchmarkIdleConnectionMemory measures the broker memory held per idle
// MQTT connection (Go heap and stacks after GC, divided by connections). The
// client side of each connection is a bare socket in the same process, so
// the figure slightly overstates the broker's share.
//
//	go test ./broker -run '^$' -bench IdleConnectionMemory -benchtime 5000x
func BenchmarkIdleConnectionMemory(b *testing.B) {
	srv := brokertest.Start(b, func(o *broker.Options) {
		o.EphemeralSessions = true
		if q := os.Getenv("UMBRA_BENCH_CLIENT_QUEUE"); q != "" {
			o.ClientQueue, _ = strconv.Atoi(q)
		}
	})
	before := heapAndStacks()
	conns := make([]net.Conn, 0, b.N)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	b.ResetTimer()
	for i := range b.N {
		c, err := net.Dial("tcp", srv.MQTTAddr())
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		if _, err := c.Write(connectPacket(fmt.Sprintf("idle-%d", i))); err != nil {
			b.Fatal(err)
		}
		ack := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(mt.Wait))
		if _, err := c.Read(ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			b.Fatalf("connection %d: CONNACK %x err %v", i, ack, err)
		}
	}
	b.StopTimer()
	after := heapAndStacks()
	n := float64(b.N)
	b.ReportMetric(float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse)/n, "B/conn")
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "heap-B/conn")
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stack-B/conn")
}

func heapAndStacks() runtime.MemStats {
	// Stacks shrink by half per GC cycle while mostly unused: a few cycles
	// reach the steady size an idle broker settles at.
	for range 5 {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// connectPacket is an MQTT 3.1.1 CONNECT with clean session and keepalive 0.
func connectPacket(id string) []byte {
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0}
	body := append(vh, byte(len(id)>>8), byte(len(id)))
	body = append(body, id...)
	return append([]byte{0x10, byte(len(body))}, body...)
}
