package reliability

import (
	"context"
	"flag"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

var (
	soakDuration   = flag.Duration("soak.duration", 0, "run TestSoak for this long (0 skips it); e.g. 1h")
	soakRate       = flag.Int("soak.rate", 5000, "target shadow updates per second in TestSoak")
	soakThings     = flag.Int("soak.things", 2000, "distinct shadows updated in TestSoak (the per-thing limit is 20/s)")
	soakPublishers = flag.Int("soak.publishers", 64, "MQTT connections publishing updates in TestSoak")
	soakChurn      = flag.Int("soak.churn", 50, "connects and disconnects per second in TestSoak")
	soakSample     = flag.Duration("soak.sample", 10*time.Second, "sampling interval of TestSoak")
	soakTolerance  = flag.Float64("soak.tolerance", 0.25, "allowed growth of the last quarter's average over the second quarter's")
)

// soakPoint is one sample of the broker's resources.
type soakPoint struct {
	at                                 time.Duration
	rssKiB                             int64
	goroutines, fds, storeBytes        float64
	clients, sessions, accepted, other float64
}

// TestSoak runs `umbra serve` as a subprocess under steady shadow update
// load plus connect/disconnect churn for -soak.duration, sampling its RSS
// (/proc), goroutines, open files and bbolt size (/metrics). It fails on
// sustained growth: the last quarter's average above the second quarter's by
// more than -soak.tolerance (plus a small absolute slack), or on a stalled
// update (no PUBACK within 10 s). Skipped unless -soak.duration is set:
//
//	go test ./reliability -run Soak -soak.duration=1h -soak.rate=5000 -timeout 0 -v
func TestSoak(t *testing.T) {
	if *soakDuration <= 0 {
		t.Skip("soak runs only with -soak.duration (e.g. -soak.duration=1h)")
	}
	bin := buildUmbra(t)
	p := startUmbra(t, bin, t.TempDir())
	t.Logf("soak: %v at %d updates/s over %d shadows from %d connections, churn %d connects/s; broker pid %d",
		*soakDuration, *soakRate, *soakThings, *soakPublishers, *soakChurn, p.pid())

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var published, stalls, pubErrs, churned, churnErrs atomic.Int64
	var latMu sync.Mutex
	var lat []time.Duration

	perPub := float64(*soakRate) / float64(*soakPublishers)
	for w := range *soakPublishers {
		c, err := mt.TryConnect(p.mqttURL(), fmt.Sprintf("soak-pub-%d", w))
		if err != nil {
			t.Fatalf("connect publisher: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Disconnect(0)
			tick := time.NewTicker(time.Duration(float64(time.Second) / perPub)) // the load's pace
			defer tick.Stop()
			var mine []int
			for i := w; i < *soakThings; i += *soakPublishers {
				mine = append(mine, i)
			}
			for seq := 0; ; seq++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				thing := mine[seq%len(mine)]
				payload := fmt.Sprintf(`{"state":{"reported":{"seq":%d,"temp":%d.%d,"fw":"2.1.3"},"desired":{"interval":%d}}}`,
					seq, 15+seq%20, seq%10, 30+seq%3)
				start := time.Now()
				tok := c.Publish(fmt.Sprintf("$aws/things/soak-%d/shadow/update", thing), 1, false, payload)
				if !tok.WaitTimeout(10 * time.Second) {
					stalls.Add(1)
					continue
				}
				if tok.Error() != nil {
					pubErrs.Add(1)
					continue
				}
				published.Add(1)
				if seq%16 == 0 {
					latMu.Lock()
					lat = append(lat, time.Since(start))
					latMu.Unlock()
				}
			}
		}()
	}
	// A backend watching every accepted update (QoS 0 fan-out).
	watcher, err := mt.TryConnect(p.mqttURL(), "soak-watcher")
	if err != nil {
		t.Fatal(err)
	}
	var watched atomic.Int64
	watcher.Subscribe("$aws/things/+/shadow/update/accepted", 0, func(paho.Client, paho.Message) { watched.Add(1) })
	defer watcher.Disconnect(0)

	// Churn: devices connecting and leaving, half with persistent sessions
	// and a subscription, from a bounded pool of ids (sessions of a real
	// fleet are bounded by the fleet).
	if *soakChurn > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second / time.Duration(*soakChurn))
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				go func() {
					if err := churnOnce(p.mqttAddr, n); err != nil {
						churnErrs.Add(1)
						return
					}
					churned.Add(1)
				}()
			}
		}()
	}

	var points []soakPoint
	start := time.Now()
	tick := time.NewTicker(*soakSample)
	end := time.After(*soakDuration)
sampling:
	for {
		select {
		case <-end:
			break sampling
		case <-tick.C:
		}
		pt, err := sampleBroker(p, time.Since(start))
		if err != nil {
			t.Errorf("sample: %v", err)
			continue
		}
		if n := len(points); n > 0 {
			prev := points[n-1]
			t.Logf("t=%-6v rss=%6.1fMiB goroutines=%5.0f fds=%4.0f store=%7.2fMiB clients=%4.0f sessions=%4.0f accepted/s=%6.0f rejected=%0.f",
				pt.at.Round(time.Second), float64(pt.rssKiB)/1024, pt.goroutines, pt.fds, pt.storeBytes/(1<<20), pt.clients, pt.sessions,
				(pt.accepted-prev.accepted)/(pt.at-prev.at).Seconds(), pt.other)
		}
		points = append(points, pt)
	}
	tick.Stop()
	cancel()
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	t.Logf("soak done: %v, %d updates acknowledged (%.0f/s), %d publish errors, %d stalls; %d churn connects (%d failed); watcher got %d accepted",
		elapsed.Round(time.Second), published.Load(), float64(published.Load())/elapsed.Seconds(), pubErrs.Load(), stalls.Load(),
		churned.Load(), churnErrs.Load(), watched.Load())
	if len(lat) > 0 {
		t.Logf("update round trip (PUBACK after the durable commit): p50 %v, p99 %v, max %v",
			percentile(lat, 50).Round(10*time.Microsecond), percentile(lat, 99).Round(10*time.Microsecond), lat[len(lat)-1].Round(time.Millisecond))
	}
	p.stop(t)

	if stalls.Load() > 0 {
		t.Errorf("%d updates not acknowledged within 10 s", stalls.Load())
	}
	if len(points) < 8 {
		t.Fatalf("%d samples: run longer (or sample more often) to judge growth", len(points))
	}
	checkGrowth(t, points)
}

// churnOnce connects a device, maybe subscribes, and leaves (cleanly or not).
func churnOnce(addr string, n int) error {
	c, err := dialRaw(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	id := fmt.Sprintf("churn-%d", n%500)
	persistent := n%2 == 0
	if err := c.connect(id, 30, !persistent); err != nil {
		return err
	}
	if persistent {
		if _, err := c.Write(subscribePacket(1, "$aws/things/"+id+"/shadow/update/delta", 1)); err != nil {
			return err
		}
		if p, err := c.next(10 * time.Second); err != nil || p.kind() != pktSuback {
			return fmt.Errorf("SUBACK: %v %v", p, err)
		}
	}
	if n%3 == 0 {
		return nil // dropped without DISCONNECT
	}
	_, err = c.Write([]byte{pktDisconnect, 0})
	return err
}

func sampleBroker(p *umbraProc, at time.Duration) (soakPoint, error) {
	rss, err := p.rssKiB()
	if err != nil {
		return soakPoint{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := metrics(ctx, p.httpURL())
	if err != nil {
		return soakPoint{}, err
	}
	pt := soakPoint{at: at, rssKiB: rss, goroutines: m["go_goroutines"], fds: m["process_open_fds"], storeBytes: m["umbra_store_size_bytes"],
		clients: m["umbra_mqtt_clients_connected"], sessions: m["umbra_mqtt_sessions"],
		accepted: m[`umbra_shadow_requests_total{code="200",op="update"}`]}
	for k, v := range m {
		if strings.HasPrefix(k, "umbra_shadow_requests_total{") && !strings.Contains(k, `code="200"`) {
			pt.other += v
		}
	}
	return pt, nil
}

// checkGrowth compares, per resource, the average of the last quarter of
// the samples with that of the second quarter (the first quarter is warm-up).
func checkGrowth(t *testing.T, pts []soakPoint) {
	q := len(pts) / 4
	avg := func(from, to int, f func(soakPoint) float64) float64 {
		s := 0.0
		for _, p := range pts[from:to] {
			s += f(p)
		}
		return s / float64(to-from)
	}
	peak := func(f func(soakPoint) float64) float64 {
		m := math.Inf(-1)
		for _, p := range pts {
			m = max(m, f(p))
		}
		return m
	}
	for _, r := range []struct {
		name  string
		unit  float64
		slack float64 // absolute, in unit
		f     func(soakPoint) float64
	}{
		{"RSS (MiB)", 1 << 20, 16, func(p soakPoint) float64 { return float64(p.rssKiB) * 1024 }},
		{"goroutines", 1, 50, func(p soakPoint) float64 { return p.goroutines }},
		{"open files", 1, 20, func(p soakPoint) float64 { return p.fds }},
		{"bbolt size (MiB)", 1 << 20, 8, func(p soakPoint) float64 { return p.storeBytes }},
	} {
		q2 := avg(q, 2*q, r.f) / r.unit
		q4 := avg(len(pts)-q, len(pts), r.f) / r.unit
		limit := q2*(1+*soakTolerance) + r.slack
		verdict := "ok"
		if q4 > limit {
			verdict = "GROWTH"
			t.Errorf("%s grew: last-quarter average %.1f > %.1f (second quarter %.1f × %.2f + %.0f)", r.name, q4, limit, q2, 1+*soakTolerance, r.slack)
		}
		t.Logf("%-17s second quarter %8.1f, last quarter %8.1f, peak %8.1f: %s", r.name, q2, q4, peak(r.f)/r.unit, verdict)
	}
}
