package broker_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
)

// A numeric option outside what it is narrowed to (Mochi's uint32 packet
// size, int32 queue, uint16 in-flight window) or outside its meaning is
// refused by New with an error naming the option, the bound and the value;
// never wrapped around into another value (1<<32 would be 0 = no limit).
func TestNewRefusesOutOfRangeNumbers(t *testing.T) {
	cases := []struct {
		name   string
		modify func(*broker.Options)
		want   string
	}{
		{"packet size 1<<32", func(o *broker.Options) { o.MaxPacketSize = 1 << 32 }, "max packet size must be at most 268435460 (got 4294967296)"},
		{"packet size over MQTT's largest", func(o *broker.Options) { o.MaxPacketSize = 268435461 }, "max packet size must be at most 268435460 (got 268435461)"},
		{"client queue 1<<31", func(o *broker.Options) { o.ClientQueue = 1 << 31 }, "client queue must be at most 2147483647 (got 2147483648)"},
		{"inflight 1<<16", func(o *broker.Options) { o.MaxInflight = 1 << 16 }, "max inflight must be at most 65535 (got 65536)"},
		{"negative packet size", func(o *broker.Options) { o.MaxPacketSize = -1 }, "max packet size must not be negative (got -1)"},
		{"shadow rate NaN", func(o *broker.Options) { o.Limits.ShadowRate = math.NaN() }, "shadow rate must be a finite number (got NaN)"},
		{"shadow rate infinite", func(o *broker.Options) { o.Limits.ShadowRate = math.Inf(1) }, "shadow rate must be a finite number (got +Inf)"},
		{"negative shadow burst", func(o *broker.Options) { o.Limits.ShadowBurst = -5 }, "shadow burst must not be negative (got -5)"},
		{"negative max keep alive", func(o *broker.Options) { o.MaxKeepAlive = -time.Second }, "max keep alive must be between 0 and 18h12m15s (got -1s)"},
		{"max keep alive over 16 bits", func(o *broker.Options) { o.MaxKeepAlive = 65536 * time.Second }, "max keep alive must be between 0 and 18h12m15s (got 18h12m16s)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := broker.Options{DataDir: t.TempDir()}
			c.modify(&o)
			_, err := broker.New(o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, want an error containing %q", err, c.want)
			}
		})
	}
	// The bounds themselves are accepted.
	o := broker.Options{DataDir: t.TempDir(), MaxPacketSize: 268435460, ClientQueue: math.MaxInt32, MaxInflight: 65535}
	if _, err := broker.New(o); err != nil {
		t.Fatalf("New at the bounds: %v", err)
	}
}
