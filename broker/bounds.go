package broker

import (
	"fmt"
	"math"
	"time"
)

// MaxMQTTPacket is the largest packet MQTT can carry: a remaining length of
// at most 268435455 bytes plus a fixed header of at most 5.
const MaxMQTTPacket = 268435455 + 5

// checkBounds refuses numbers that the broker narrows (to Mochi's uint32
// packet size, int32 queue length, uint16 in-flight window) or that mean
// nothing, before any cast could wrap them around (called from validate).
func (o Options) checkBounds() []error {
	var errs []error
	atMost := func(name string, v, limit int64) {
		if v > limit {
			errs = append(errs, fmt.Errorf("%s must be at most %d (got %d)", name, limit, v))
		}
	}
	atMost("max packet size", int64(o.MaxPacketSize), MaxMQTTPacket)
	atMost("client queue", int64(o.ClientQueue), math.MaxInt32)
	if r := o.Limits.ShadowRate; math.IsNaN(r) || math.IsInf(r, 0) {
		errs = append(errs, fmt.Errorf("limits shadow rate must be a finite number (got %v)", r))
	}
	// MQTT's keep alive is a 16-bit number of seconds.
	if o.MaxKeepAlive < 0 || o.MaxKeepAlive > math.MaxUint16*time.Second {
		errs = append(errs, fmt.Errorf("max keep alive must be between 0 and %v (got %v)", math.MaxUint16*time.Second, o.MaxKeepAlive))
	}
	if o.Limits.ShadowBurst < 0 {
		errs = append(errs, fmt.Errorf("limits shadow burst must not be negative (got %d)", o.Limits.ShadowBurst))
	}
	return errs
}
