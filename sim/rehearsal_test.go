package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/sim"
)

// BenchmarkCanaryHalt measures, on 1,000 simulated devices registered
// with their rings, how long a health-gated rollout takes to halt after a
// firmware that crash-loops after install first reports a panic: from the
// first shadow update/accepted carrying reset_reason "panic" to the
// rollout's halted event, both as an MQTT subscriber receives them. The
// engine steps at its default interval (1 s, as umbra serve). Run with
//
//	go test ./sim -run '^$' -bench CanaryHalt -benchtime 1x
func BenchmarkCanaryHalt(b *testing.B) {
	for range b.N {
		faultToHalt, notifiedOutside := canaryHalt(b, 1000)
		b.ReportMetric(float64(faultToHalt.Milliseconds()), "ms-fault-to-halt")
		if notifiedOutside > 0 {
			b.Fatalf("%d devices outside the canary were notified", notifiedOutside)
		}
	}
}

func canaryHalt(b *testing.B, n int) (time.Duration, int) {
	srv := brokertest.Start(b)
	var mu sync.Mutex
	var firstPanic, halted time.Time
	haltedCh := make(chan struct{})
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(srv.MQTTURL()).SetClientID("bench-observer").SetOrderMatters(false))
	if tok := sub.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		b.Fatalf("observer: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	onMsg := func(_ paho.Client, m paho.Message) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasSuffix(m.Topic(), "/update/accepted"):
			if firstPanic.IsZero() && bytes.Contains(m.Payload(), []byte(`"reset_reason":"panic"`)) {
				firstPanic = now
			}
		case strings.HasPrefix(m.Topic(), "$umbra/rollouts/"):
			var ev struct {
				Type string `json:"type"`
			}
			if json.Unmarshal(m.Payload(), &ev) == nil && ev.Type == "halted" && halted.IsZero() {
				halted = now
				close(haltedCh)
			}
		}
	}
	for _, topic := range []string{"$aws/things/+/shadow/update/accepted", "$umbra/rollouts/+/events"} {
		if tok := sub.Subscribe(topic, 0, onMsg); !tok.WaitTimeout(wait) || tok.Error() != nil {
			b.Fatalf("subscribe %s: %v", topic, tok.Error())
		}
	}
	crash, err := sim.ParseFault("crash-loop:version=2.0.0,delay=5s")
	if err != nil {
		b.Fatal(err)
	}
	f, err := sim.New(sim.Config{
		Broker: srv.MQTTURL(), Devices: n, TelemetryInterval: -1,
		OTADuration: time.Second, RebootDelay: 200 * time.Millisecond,
		Faults:    []sim.Fault{crash},
		Registrar: &sim.HTTPRegistry{BaseURL: srv.HTTPURL()},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer func() { _ = f.Stop(context.Background()) }()
	if err := f.Start(ctx); err != nil {
		b.Fatal(err)
	}
	spec := `{"name":"fw 2.0.0","target":"thingTypeName:esp32","start":true,
	  "patch":{"ota_url":"https://fw.example/2.0.0.bin","target_version":"2.0.0"},
	  "failureCondition":"shadow.reported.ota_status:failed",
	  "health":{"offlineWindow":"30s","errorCondition":"shadow.reported.reset_reason:panic","increaseOf":["crash_count"]},
	  "waves":[{"name":"canary","query":"attributes.deployment_ring:canary","deviceTimeout":"2m","bakeTime":"1m"},
	           {"name":"everyone","percent":100}]}`
	resp, err := http.Post(srv.HTTPURL()+"/api/rollouts", "application/json", strings.NewReader(spec))
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		b.Fatalf("create rollout: HTTP %d %s", resp.StatusCode, body)
	}
	select {
	case <-haltedCh:
	case <-ctx.Done():
		b.Fatalf("the rollout never halted: %s", rolloutState(b, srv, body))
	}
	// Devices outside the canary that ever had desired target_version.
	outside := 0
	for i := range n {
		id := f.ID(i)
		if sim.Ring(id) == sim.RingCanary {
			continue
		}
		d, _ := getShadow(b, srv, id)
		if d.State.Desired["target_version"] != nil || f.Firmware(i) != "1.0.0" {
			outside++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	b.Logf("%d devices (%d canaries): first panic report %s, halted %s later", n, f.RingCounts()[sim.RingCanary],
		firstPanic.Format(time.StampMilli), halted.Sub(firstPanic).Round(time.Millisecond))
	return halted.Sub(firstPanic), outside
}

func rolloutState(b *testing.B, srv *brokertest.Server, created []byte) string {
	var r struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(created, &r)
	resp, err := http.Get(srv.HTTPURL() + "/api/rollouts/" + r.ID)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if len(body) > 2000 {
		body = body[:2000]
	}
	return string(body)
}
