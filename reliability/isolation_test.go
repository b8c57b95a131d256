package reliability

import (
	"flag"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

var (
	isoStorm   = flag.Int("iso.storm", 500, "clients in the reconnect storm of TestIsolationReconnectStorm")
	isoPhase   = flag.Duration("iso.phase", 1500*time.Millisecond, "length of each phase of the isolation tests")
	isoFlood   = flag.Int("iso.flood", 2000, "messages per second published to the stalled subscriber's topic")
	isoDevices = flag.Int("iso.devices", 8, "devices whose update latency is measured")
	isoDevRate = flag.Int("iso.devrate", 10, "updates per second per measured device (under the 20/s per-thing limit)")
	stallBound = 10 * time.Second
)

// latencies are the measured devices' update round trips, by phase.
type latencies struct {
	mu     sync.Mutex
	phase  atomic.Int32
	names  []string
	by     [][]time.Duration
	stalls atomic.Int32
}

func (l *latencies) add(d time.Duration) {
	p := l.phase.Load()
	l.mu.Lock()
	l.by[p] = append(l.by[p], d)
	l.mu.Unlock()
}

func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// deviceLoad is the measured devices: each updates its own shadow at a
// device-like pace and times the round trip to /update/accepted.
type deviceLoad struct {
	lat  *latencies
	stop chan struct{}
	wg   sync.WaitGroup
}

func startDevices(t *testing.T, srv *brokertest.Server, phases ...string) *deviceLoad {
	d := &deviceLoad{lat: &latencies{names: phases, by: make([][]time.Duration, len(phases))}, stop: make(chan struct{})}
	for i := range *isoDevices {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if !measureDevice(t, srv, i, d.lat, d.stop) {
				d.lat.stalls.Add(1)
			}
		}()
	}
	return d
}

func (d *deviceLoad) phase(p int) { d.lat.phase.Store(int32(p)) }

// finish stops the devices (each finishes its current update, or gives up
// on it after the stall bound), logs the figures and fails on a stall.
func (d *deviceLoad) finish(t *testing.T) {
	close(d.stop)
	d.wg.Wait()
	t.Logf("update latency of %d devices at %d/s each (p50 / p99 / max, samples):", *isoDevices, *isoDevRate)
	for p, name := range d.lat.names {
		s := slices.Clone(d.lat.by[p])
		slices.Sort(s)
		var mx time.Duration
		if len(s) > 0 {
			mx = s[len(s)-1]
		}
		t.Logf("  %-20s %8v / %8v / %8v  (%d)", name, percentile(s, 50).Round(10*time.Microsecond),
			percentile(s, 99).Round(10*time.Microsecond), mx.Round(10*time.Microsecond), len(s))
	}
	if n := d.lat.stalls.Load(); n > 0 {
		t.Fatalf("%d of %d devices had an update unanswered for %v: a stall", n, *isoDevices, stallBound)
	}
}

// TestIsolationStalledSubscriber measures the shadow update latency of
// ordinary devices while a subscriber that stopped reading (its TCP window
// closed, keepalive 60 s) is subscribed to a busy topic and to every shadow
// reply ($aws/things/#), and the busy topic is flooded. It logs p50/p99 per
// phase and fails only on a stall: an update not answered within 10 s.
//
// The broker's write timeout, which drops a client that accepts no data, is
// set far beyond that bound: no device may wait for it. (Before the patched
// Mochi took packet ids off the client's write lock, every reply to the
// stalled subscriber waited for its write to time out: p99 4.98 s with the
// default 5 s.)
func TestIsolationStalledSubscriber(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.WSAddr = broker.Off
		o.WriteTimeout = time.Hour
	})
	devs := startDevices(t, srv, "baseline", "stalled subscriber")
	<-time.After(*isoPhase) // the baseline phase

	devs.phase(1)
	stalled, err := dialRaw(srv.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	_ = stalled.Conn.(*net.TCPConn).SetReadBuffer(4096)
	if err := stalled.connect("stalled-subscriber", 60, true); err != nil {
		t.Fatal(err)
	}
	if _, err := stalled.Write(append(subscribePacket(1, "iso/busy", 1), subscribePacket(2, "$aws/things/#", 1)...)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if p, err := stalled.next(mt.Wait); err != nil || p.kind() != pktSuback {
			t.Fatalf("SUBACK: %v %v", p, err)
		}
	}
	// From here on it never reads again. It stays connected until the
	// devices are done, so a stall shows as an unanswered update.
	defer stalled.Close()
	droppedBefore := metricValue(t, srv.HTTPURL(), "umbra_mqtt_messages_dropped_total")
	// Flood for the phase, and on until the broker drops messages for the
	// stalled subscriber (its socket buffers are full), at most 20 s.
	flooded := flood(t, srv.MQTTAddr(), "iso/busy", *isoFlood, *isoPhase, func() bool {
		return metricValue(t, srv.HTTPURL(), "umbra_mqtt_messages_dropped_total") > droppedBefore
	})
	<-time.After(*isoPhase / 2) // the stalled subscriber stays, the flood is over
	t.Logf("stalled subscriber: %d messages of 4 KiB flooded at %d/s to its topic; %d messages dropped for its full queue",
		flooded, *isoFlood, int(metricValue(t, srv.HTTPURL(), "umbra_mqtt_messages_dropped_total")-droppedBefore))
	devs.finish(t)
}

// TestIsolationReconnectStorm measures the same latency while hundreds of
// devices with persistent sessions drop their connections and reconnect all
// at once, over and over (-iso.storm clients).
func TestIsolationReconnectStorm(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.WSAddr = broker.Off })
	devs := startDevices(t, srv, "baseline", "reconnect storm", "after")
	<-time.After(*isoPhase) // the baseline phase
	devs.phase(1)
	rounds, took := reconnectStorm(t, srv.MQTTAddr(), *isoStorm, *isoPhase)
	devs.phase(2)
	<-time.After(*isoPhase)
	slices.Sort(took)
	t.Logf("reconnect storm: %d rounds of %d persistent-session clients dropping and reconnecting at once; "+
		"a round (all connected and subscribed) took %v median, %v max", rounds, *isoStorm, took[len(took)/2], took[len(took)-1])
	devs.finish(t)
}

// measureDevice updates its own shadow at a steady pace until stop and
// records each round trip. It returns false on a stall.
func measureDevice(t *testing.T, srv *brokertest.Server, i int, lat *latencies, stop <-chan struct{}) bool {
	thing := fmt.Sprintf("iso-device-%d", i)
	topic := "$aws/things/" + thing + "/shadow/update"
	replies := make(chan string, 16)
	c, err := mt.TryConnect(srv.MQTTURL(), thing)
	if err != nil {
		t.Errorf("%s: connect: %v", thing, err)
		return true
	}
	defer c.Disconnect(0)
	tok := c.Subscribe(topic+"/+", 1, func(_ paho.Client, m paho.Message) {
		if strings.HasSuffix(m.Topic(), "/accepted") || strings.HasSuffix(m.Topic(), "/rejected") {
			replies <- gjson.GetBytes(m.Payload(), "clientToken").String() + " " + m.Topic()
		}
	})
	if !tok.WaitTimeout(mt.Wait) || tok.Error() != nil {
		t.Errorf("%s: subscribe: %v", thing, tok.Error())
		return true
	}
	tick := time.NewTicker(time.Second / time.Duration(*isoDevRate)) // the device's pace
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return true
		case <-tick.C:
		}
		token := fmt.Sprintf("%s-%d", thing, seq)
		start := time.Now()
		c.Publish(topic, 1, false, fmt.Sprintf(`{"state":{"reported":{"seq":%d,"temp":21.5}},"clientToken":%q}`, seq, token))
		deadline := time.After(stallBound)
	wait:
		for {
			select {
			case r := <-replies:
				tokGot, tp, _ := strings.Cut(r, " ")
				if tokGot != token {
					continue
				}
				if !strings.HasSuffix(tp, "/accepted") {
					t.Errorf("%s: update %d rejected on %s", thing, seq, tp)
				}
				lat.add(time.Since(start))
				break wait
			case <-deadline:
				t.Errorf("%s: update %d not answered within %v", thing, seq, stallBound)
				return false
			}
		}
	}
}

// flood publishes 4 KiB QoS 0 messages to topic at rate per second for at
// least d and until done reports true (at most 20 s), from a raw client, and
// returns how many it sent.
func flood(t *testing.T, addr, topic string, rate int, d time.Duration, done func() bool) int {
	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.connect("flooder", 0, true); err != nil {
		t.Fatal(err)
	}
	payload := []byte(strings.Repeat("x", 4096))
	const ticksPerSecond = 100
	perTick := max(rate/ticksPerSecond, 1)
	batch := make([]byte, 0, perTick*4200)
	for range perTick {
		batch = append(batch, publishPacket(topic, payload, 0, 0)...)
	}
	tick := time.NewTicker(time.Second / ticksPerSecond) // the load's pace
	defer tick.Stop()
	start := time.Now()
	sent := 0
	for n := 0; ; n++ {
		<-tick.C
		if el := time.Since(start); el > 20*time.Second || el >= d && n%10 == 0 && done() {
			return sent
		}
		_ = c.SetWriteDeadline(time.Now().Add(stallBound))
		if _, err := c.Write(batch); err != nil {
			t.Errorf("flooder: the broker stopped reading its publishes: %v", err)
			return sent
		}
		sent += perTick
	}
}

// reconnectStorm connects n persistent-session clients at once (each
// subscribing to its own delta topic), drops them all, and repeats for at
// least d. It returns the rounds run and how long each round took.
func reconnectStorm(t *testing.T, addr string, n int, d time.Duration) (int, []time.Duration) {
	var took []time.Duration
	end := time.Now().Add(d)
	for round := 0; round < 2 || time.Now().Before(end); round++ {
		start := time.Now()
		conns := make([]*rawConn, n)
		errs := make(chan error, n)
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				c, err := dialRaw(addr)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
				id := fmt.Sprintf("storm-%d", i)
				if err := c.connect(id, 60, false); err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
					return
				}
				if _, err := c.Write(subscribePacket(1, "$aws/things/"+id+"/shadow/update/delta", 1)); err != nil {
					errs <- err
					return
				}
				if p, err := c.next(mt.Wait); err != nil || p.kind() != pktSuback {
					errs <- fmt.Errorf("%s: SUBACK %v %v", id, p, err)
				}
			}()
		}
		close(gate) // all at once
		wg.Wait()
		took = append(took, time.Since(start).Round(time.Millisecond))
		close(errs)
		for err := range errs {
			t.Errorf("storm round %d: %v", round, err)
			break
		}
		for _, c := range conns {
			if c != nil {
				_ = c.Close() // dropped without DISCONNECT, as a power cut would
			}
		}
		if t.Failed() {
			return round + 1, took
		}
	}
	return len(took), took
}
