package broker

import (
	"encoding/json"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"

	"golang.org/x/time/rate"

	"github.com/umbra-iot/umbra/internal/limits"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/shadow"
)

// mqttPublisher publishes service replies through Mochi's inline client at
// QoS 1: each subscriber receives them at its own subscription's QoS, and
// QoS 1 subscribers with persistent sessions get them queued while offline.
type mqttPublisher struct{ s *mqtt.Server }

func (p mqttPublisher) Publish(topic string, payload []byte) error {
	return p.s.Publish(topic, payload, false, 1)
}

// HasSubscribers implements shadow.SubscriberChecker with a read of Mochi's
// topic index (the walk the publish itself would do, without its
// allocations: fork patch 15).
func (p mqttPublisher) HasSubscribers(topic string) bool {
	return p.s.Topics.HasSubscribers(topic)
}

// shadowLister serves the read-only shadow listings from the store.
type shadowLister struct{ db *store.DB }

func (l shadowLister) ListNamedShadows(thing, after string, limit int) ([]string, string, error) {
	return l.db.ListNamedShadows(thing, after, limit)
}

func (l shadowLister) History(ref shadow.Ref, before int64, limit int) ([]json.RawMessage, error) {
	recs, err := l.db.ShadowHistory(storeadapt.Key(ref), before, limit)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(recs))
	for i, r := range recs {
		out[i] = r.Entry
	}
	return out, nil
}

// newShadowService builds the shadow service over the store and Mochi.
func (b *Broker) newShadowService() *shadow.Service {
	return shadow.NewService(shadow.Config{
		Options:   b.opts.Shadow,
		Store:     b.shadowStore(storeadapt.ShadowStore{DB: b.db, TombstoneTTL: b.opts.TombstoneTTL, History: max(b.opts.HistoryVersions, 0)}),
		Publisher: b.shadowPublisher(),
		Logger:    b.log.With("component", "shadow"),
		OnResult:  b.metrics.observeShadow,
		Limiter:   b.shadowLimits(),
		OnEvent:   b.shadowChanged,
	})
}

// Shadows is the shadow service: the one way to read and change shadows
// in-process (what MQTT and HTTP requests go through).
func (b *Broker) Shadows() *shadow.Service { return b.shadows }

func (b *Broker) shadowLimits() shadow.Limiter {
	l := &limits.Shadow{Burst: b.opts.Limits.ShadowBurst}
	if b.opts.Limits.ShadowRate > 0 {
		l.PerThing = rate.Limit(b.opts.Limits.ShadowRate)
	}
	if b.opts.Limits.ShadowInFlight > 0 {
		l.InFlight = b.opts.Limits.ShadowInFlight
	}
	return l
}

// shadowChanged runs after every committed shadow change, in version order
// per shadow: the fleet index, then the live event stream.
func (b *Broker) shadowChanged(ev shadow.Event) {
	if b.clusterShadows == nil {
		// on a cluster node the watch on the shadow bucket indexes every
		// node's changes in commit order (followCluster)
		b.registry.ShadowChanged(ev)
	}
	if b.rollouts != nil {
		b.rollouts.ShadowChanged(ev.Ref.Thing)
	}
	if b.events.Subscribers() == 0 {
		return
	}
	out := map[string]any{"thing": ev.Ref.Thing, "shadow": ev.Ref.Name, "op": ev.Op, "version": ev.Version, "principal": ev.Principal}
	if ev.Doc != nil {
		desired, reported := shadow.DocState(ev.Doc)
		out["state"] = map[string]json.RawMessage{"desired": raw(desired), "reported": raw(reported), "delta": raw(shadow.DocDelta(ev.Doc))}
	}
	b.events.PublishJSON("shadow", ev.Ref.Thing, out)
}

func raw(b []byte) json.RawMessage {
	if b == nil {
		return json.RawMessage("null")
	}
	return b
}
