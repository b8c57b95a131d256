package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/store"
)

// TestQuotaFloodFullSize runs issue 13's two floods at full size, once with
// quotas disabled and once with the defaults, and prints the figures
// RELIABILITY.md quotes ("Floods: per-client quotas"). It takes about ten seconds and
// about 1.5 GiB of memory, so it runs only when asked:
//
//	UMBRA_FLOOD_FULL=1 go test ./broker -run TestQuotaFloodFullSize -count=1 -v
func TestQuotaFloodFullSize(t *testing.T) {
	if os.Getenv("UMBRA_FLOOD_FULL") == "" {
		t.Skip("full-size floods: set UMBRA_FLOOD_FULL=1 to run (RELIABILITY.md)")
	}
	off := broker.QuotaOptions{RetainedMessages: -1, RetainedBytes: -1, InflightBytes: -1, Subscriptions: -1}
	var rows []string
	for _, c := range []struct {
		name   string
		quotas broker.QuotaOptions
	}{{"quotas off", off}, {"default quotas", broker.QuotaOptions{}}} {
		kept, refused, heap, file := retainedFloodFull(t, c.quotas)
		rows = append(rows, fmt.Sprintf("| retained 1,500 × 100 KB | %s | %d retained, %d refused | heap +%.1f MiB | db %.1f MiB |",
			c.name, kept, refused, mib(heap), mib(file)))
		if c.quotas != off && (kept > broker.DefaultRetainedMessages || mib(file) > 10) {
			t.Errorf("default quotas: %d retained, db %.1f MiB: not bounded", kept, mib(file))
		}
		held, n, heap, file := inflightFloodFull(t, c.quotas)
		rows = append(rows, fmt.Sprintf("| unacked QoS 1 2,000 × 120 KB | %s | session holds %d messages, %.1f MiB | heap +%.1f MiB | db %.1f MiB |",
			c.name, n, mib(held), mib(heap), mib(file)))
		if c.quotas != off && (held > broker.DefaultInflightBytes || mib(file) > 40) {
			t.Errorf("default quotas: session holds %d B, db %.1f MiB: not bounded", held, mib(file))
		}
	}
	t.Logf("\n| flood | quotas | kept | Go heap after GC | db file |\n|---|---|---|---|---|\n%s", strings.Join(rows, "\n"))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// heapNow is the live heap after a full collection.
func heapNow() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func retainedFloodFull(t *testing.T, q broker.QuotaOptions) (kept, refused int, heap, file int64) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Quotas = q })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := connect5(t, srv.MQTTAddr(), "flooder", nil)
	before := heapNow()
	payload := bytes.Repeat([]byte("r"), 100_000)
	for i := range 1500 {
		resp, err := c.Publish(ctx, &paho5.Publish{Topic: fmt.Sprintf("flood/flooder/%d", i), QoS: 1, Retain: true, Payload: payload})
		if resp == nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if resp.ReasonCode == 0x97 {
			refused++
		}
	}
	kept = retainedUnder(srv, "flood/flooder/")
	heap = heapNow() - before
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	_, _, _, file = storedBucket(t, srv.Options.DataDir, store.BucketRetained, "flood/")
	return kept, refused, heap, file
}

func inflightFloodFull(t *testing.T, q broker.QuotaOptions) (held int64, n int, heap, file int64) {
	const flood = 2000
	srv := brokertest.Start(t, func(o *broker.Options) { o.Quotas = q })
	victim := newRawSubscriber(t, srv.MQTTAddr(), "hog", "hog/in")
	pub := mt.Connect(t, srv.MQTTURL(), "feeder")
	quotaPoll(t, "the subscription", func() bool { return len(srv.MQTT().Topics.Subscribers("hog/in").Subscriptions) > 0 })
	before := heapNow()
	payload := strings.Repeat("y", 120_000)
	for range flood {
		pub.Publish("hog/in", 1, false, payload)
	}
	// Every delivery is either held for the session or refused (counted).
	refused := func() float64 {
		if q.InflightBytes < 0 {
			return 0
		}
		return metricValue(t, srv, `umbra_quota_refusals_total{quota="inflight_bytes"}`)
	}
	deadline := time.Now().Add(3 * time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		held, n = heldBytes(srv, "hog")
		if n+int(refused()) >= flood {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 3 min: %d held, %v refused of %d", n, refused(), flood)
		}
		<-tick.C
	}
	heap = heapNow() - before
	_ = victim.conn.Close()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	_, _, _, file = storedBucket(t, srv.Options.DataDir, store.BucketInflight, "hog\x00")
	return held, n, heap, file
}
