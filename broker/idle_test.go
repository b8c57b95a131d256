package broker_test

import (
	"net"
	"runtime"
	"testing"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
)

// TestIdleConnectionsRunOneGoroutineEach guards Umbra's patch to Mochi
// (tempfork/mochi, UMBRA-PATCHES.md): a connected client with
// nothing to receive costs one goroutine, its read loop. Upstream Mochi runs
// a second, writer goroutine for every client for the whole connection, and
// this test notices the patched copy going missing. BenchmarkIdleConnectionMemory measures what it saves.
func TestIdleConnectionsRunOneGoroutineEach(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.EphemeralSessions = true })
	const n = 100
	before := runtime.NumGoroutine()
	for i := range n {
		c, err := net.Dial("tcp", srv.MQTTAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		connectIdle(t, c, i)
	}
	// Each connection's goroutine is running before its CONNACK is sent.
	// The allowance covers unrelated background goroutines; two per client
	// would be 2n.
	if extra := runtime.NumGoroutine() - before; extra > n+n/4 {
		t.Fatalf("%d idle connections added %d goroutines; want about one each", n, extra)
	}
}
