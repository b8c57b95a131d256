package broker_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// BenchmarkQoS1PubSub measures QoS 1 publish → subscriber round trips
// through the broker with MQTT session persistence off (plain Mochi, state in
// memory) and on (Umbra's write-behind session store). 50 devices with
// persistent sessions (clean session off) each publish QoS 1 on a topic they
// subscribe to at QoS 1 and wait for the message before the next one, so
// every message is an inflight record to persist and delete. Both variants
// run in one invocation so the ratio holds on a noisy machine:
//
//	go test ./broker -run '^$' -bench QoS1PubSub -benchtime 50000x -count 5
func BenchmarkQoS1PubSub(b *testing.B) {
	for _, persist := range []bool{false, true} {
		b.Run("persistence="+map[bool]string{false: "off", true: "on"}[persist], func(b *testing.B) {
			benchRoundTrips(b, "raw", 50, func(o *broker.Options) { o.EphemeralSessions = !persist },
				func(o *paho.ClientOptions) { o.SetCleanSession(false) })
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
	g0 := runtime.NumGoroutine()
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
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/conn")
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

// connectPacket is an MQTT 3.1.1 CONNECT with clean session and keepalive
// 0, optionally carrying a QoS 1 will (encoded by paho's packet codec).
func connectPacket(id string, will ...string) []byte {
	p := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	p.ProtocolName, p.ProtocolVersion, p.CleanSession, p.ClientIdentifier = "MQTT", 4, true, id
	if len(will) == 2 {
		p.WillFlag, p.WillQos, p.WillTopic, p.WillMessage = true, 1, will[0], []byte(will[1])
	}
	var b bytes.Buffer
	_ = p.Write(&b)
	return b.Bytes()
}
