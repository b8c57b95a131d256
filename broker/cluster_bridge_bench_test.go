package broker_test

import (
	"strconv"
	"testing"
	"time"

	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/natstest"
)

// BenchmarkClusterCrossNodeRoundTrip: one QoS 1 publish on node C, its
// PUBACK, and its arrival at a QoS 1 subscriber, one at a time, with the
// subscriber on node C itself (no NATS hop) and on node A (two Umbra nodes,
// two NATS servers), in one run so the ratio holds on a noisy machine.
//
//	go test -run XXX -bench ClusterCrossNode -benchtime 2000x -count 3 ./broker
func BenchmarkClusterCrossNodeRoundTrip(b *testing.B) {
	nc := natstest.StartCluster(b, 3)
	nodes := startClusterNodes(b, nc, 3)
	pub := mt.Connect(b, nodes[2].MQTTURL(), "bench-pub")
	for _, c := range []struct {
		name string
		node int
	}{{"subscriber=same-node", 2}, {"subscriber=other-node", 0}} {
		b.Run(c.name, func(b *testing.B) {
			topic := "bench/" + c.name
			sub := mt.Connect(b, nodes[c.node].MQTTURL(), "bench-sub-"+c.name).Subscribe(topic, 1)
			for routed := false; !routed; { // probe until the subscription is known on C's server
				pub.Publish(topic, 1, false, "probe")
				select {
				case <-sub:
					routed = true
				case <-time.After(50 * time.Millisecond):
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p := strconv.Itoa(i)
				pub.Publish(topic, 1, false, p)
				for string(mt.Next(b, sub).Payload) != p { // skips late probes
				}
			}
		})
	}
}
