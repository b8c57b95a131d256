package hooks

import (
	"context"
	"errors"
	"sync"
	"time"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// Protocol applies two connection policies Mochi leaves to hooks:
//
//   - a maximum keep alive: an MQTT 5 client asking for more, or for none,
//     gets the maximum, announced in CONNACK as Server Keep Alive;
//   - a back-off for offenders: a client whose connection was closed because
//     its publish was denied (MQTT 3.1.1, which can carry no refusal; see
//     mqtt.ErrPublishNotAuthorized; QoS 0 ones are dropped silently, as
//     upstream Mochi does) has its next CONNACK held back, first
//     for Backoff, doubling with each further offence up to MaxBackoff. An
//     SDK that replays the denied publish after each reconnect (the AWS Go
//     SDK's jobs client did, 74 times in 15 s) then loops at the back-off's
//     pace, not at full speed. An offender that stays clean for ForgiveAfter
//     starts again from Backoff.
type Protocol struct {
	mqtt.HookBase
	ctx          context.Context
	MaxKeepAlive uint16 // seconds; 0: no maximum
	Backoff      time.Duration
	MaxBackoff   time.Duration
	ForgiveAfter time.Duration

	mu        sync.Mutex
	offenders map[string]*offence
}

type offence struct {
	strikes int
	last    time.Time
}

// NewProtocol returns the hook; ctx ends waits when the broker stops.
// backoff <= 0 disables the back-off.
func NewProtocol(ctx context.Context, maxKeepAlive uint16, backoff time.Duration) *Protocol {
	return &Protocol{ctx: ctx, MaxKeepAlive: maxKeepAlive, Backoff: backoff,
		MaxBackoff: time.Minute, ForgiveAfter: 10 * time.Minute, offenders: map[string]*offence{}}
}

// ID implements mqtt.Hook.
func (h *Protocol) ID() string { return "umbra-protocol" }

// Provides implements mqtt.Hook.
func (h *Protocol) Provides(b byte) bool { return b == mqtt.OnConnect || b == mqtt.OnPacketProcessed }

// OnConnect caps the keep alive and holds back an offender.
func (h *Protocol) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if h.MaxKeepAlive > 0 && cl.Properties.ProtocolVersion == 5 &&
		(cl.State.Keepalive == 0 || cl.State.Keepalive > h.MaxKeepAlive) {
		cl.State.Keepalive = h.MaxKeepAlive // [MQTT-3.2.2-21]
		cl.State.ServerKeepalive = true
	}
	if wait := h.penalty(cl.ID); wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-h.ctx.Done():
			return packets.ErrServerShuttingDown
		}
	}
	return nil
}

// errPublishNotAuthorized is Mochi's stop cause, boxed once.
var errPublishNotAuthorized error = mqtt.ErrPublishNotAuthorized

// OnPacketProcessed records an offence. It runs before Mochi closes the
// offender's connection, so the offender cannot reconnect before it counts.
func (h *Protocol) OnPacketProcessed(cl *mqtt.Client, _ packets.Packet, err error) {
	// err == nil first: converting the packets.Code value to an error
	// interface for errors.Is allocates, and this runs for every packet.
	if h.Backoff <= 0 || err == nil || !errors.Is(err, errPublishNotAuthorized) {
		return
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.offenders[cl.ID]
	if o == nil || now.Sub(o.last) > h.ForgiveAfter {
		if len(h.offenders) >= 10000 {
			h.sweep(now)
		}
		o = &offence{}
		h.offenders[cl.ID] = o
	}
	o.strikes++
	o.last = now
}

// penalty is how long an offender's CONNACK waits: Backoff after the first
// offence, doubling, at most MaxBackoff.
func (h *Protocol) penalty(id string) time.Duration {
	if h.Backoff <= 0 {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	o := h.offenders[id]
	if o == nil || time.Since(o.last) > h.ForgiveAfter {
		return 0
	}
	d := h.Backoff
	for i := 1; i < o.strikes && d < h.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, h.MaxBackoff)
}

// sweep forgets offenders that have been clean long enough.
func (h *Protocol) sweep(now time.Time) {
	for id, o := range h.offenders {
		if now.Sub(o.last) > h.ForgiveAfter {
			delete(h.offenders, id)
		}
	}
}
