package broker

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/hooks/storage"
	bolt "go.etcd.io/bbolt"

	"github.com/umbra-iot/umbra/internal/hooks"
	"github.com/umbra-iot/umbra/internal/limits"
	"github.com/umbra-iot/umbra/internal/store"
)

// QuotaOptions bound what one client can make the broker hold in memory
// and on disk. Zero means the default; a negative value disables the quota.
// Quotas are per client id, which for Umbra is per principal (a device's
// client id is its thing name; a service principal names its client id).
type QuotaOptions struct {
	// RetainedMessages caps the retained topics one client owns (the
	// client that retained on a topic last owns it). Default 100.
	RetainedMessages int
	// RetainedBytes caps the bytes (topic + payload + properties) of those.
	// Default 1 MiB (or MaxPacketSize if larger); set explicitly, it must
	// be at least MaxPacketSize.
	RetainedBytes int64
	// InflightBytes caps the bytes of QoS 1/2 messages held for one
	// session: sent and not yet acknowledged, or queued while it is
	// offline (the count is capped by MaxInflight). Persisted with the
	// session, so this also bounds its storage. A session holding nothing
	// always gets its next message, however large. Default 8 MiB.
	InflightBytes int64
	// Subscriptions caps one session's subscriptions (persisted with a
	// persistent session); a SUBSCRIBE beyond it gets 0x97 (0x80 for MQTT
	// 3.1.1) for the extra filters. Default 256.
	Subscriptions int
}

// Default quotas.
const (
	DefaultRetainedMessages = 100
	DefaultRetainedBytes    = 1 << 20
	DefaultInflightBytes    = 8 << 20
	DefaultSubscriptions    = 256
)

// withDefaults fills in the defaults; the default retained bytes is at
// least one message of maxPacket bytes.
func (q QuotaOptions) withDefaults(maxPacket int) QuotaOptions {
	if q.RetainedMessages == 0 {
		q.RetainedMessages = DefaultRetainedMessages
	}
	if q.RetainedBytes == 0 {
		q.RetainedBytes = max(DefaultRetainedBytes, int64(maxPacket))
	}
	if q.InflightBytes == 0 {
		q.InflightBytes = DefaultInflightBytes
	}
	if q.Subscriptions == 0 {
		q.Subscriptions = DefaultSubscriptions
	}
	return q
}

// quotaHook builds the quota hook. Retained messages already stored are
// accounted to their publishers first; those over the quota (it was lowered,
// or the file predates quotas) are deleted before Mochi restores the rest,
// so a restart never brings back more than the quota.
func (b *Broker) quotaHook() (*hooks.Quota, error) {
	q := b.opts.Quotas.withDefaults(b.opts.MaxPacketSize)
	retained := &limits.Retained{MaxMessages: q.RetainedMessages, MaxBytes: q.RetainedBytes}
	inflight := &limits.Inflight{MaxBytes: q.InflightBytes}
	if !b.opts.EphemeralSessions {
		if err := b.loadRetained(retained); err != nil {
			return nil, err
		}
	}
	h := hooks.NewQuota(b.mqtt, retained, inflight, b.log.With("component", "quota"))
	h.MaxSubscriptions = q.Subscriptions
	refusals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "umbra_quota_refusals_total",
		Help: "Refusals of a per-client quota, by quota (retained: a retained publish; inflight_bytes: a delivery to a session holding too much; subscriptions: a subscription).",
	}, []string{"quota"})
	for _, k := range []string{hooks.QuotaRetained, hooks.QuotaInflight, hooks.QuotaSubscriptions} {
		refusals.WithLabelValues(k)
	}
	h.OnRefuse = func(kind string) { refusals.WithLabelValues(kind).Inc() }
	b.metrics.reg.MustRegister(refusals,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "umbra_quota_retained_bytes", Help: "Bytes of retained messages, as counted against the retained quota.",
		}, func() float64 { return float64(retained.Total().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "umbra_quota_inflight_bytes", Help: "Bytes of QoS 1/2 messages held for sessions, as counted against the in-flight quota (sessions with deliveries since start).",
		}, func() float64 { return float64(inflight.Total()) }),
	)
	return h, nil
}

func (b *Broker) loadRetained(r *limits.Retained) error {
	var stored []limits.StoredRetained
	err := b.db.Scan(store.BucketRetained, func(k, v []byte) error {
		var m storage.Message
		if err := m.UnmarshalBinary(v); err != nil {
			return nil // the session hook logs and skips it
		}
		owner := m.Client
		if owner == "" {
			owner = m.Origin
		}
		if owner == mqtt.InlineClientId {
			return nil // Umbra's and Mochi's own messages are not accounted
		}
		pk := m.ToPacket()
		stored = append(stored, limits.StoredRetained{Owner: owner, Topic: string(k), Size: hooks.MessageSize(pk), Created: m.Created})
		return nil
	})
	if err != nil {
		return fmt.Errorf("quota: read retained messages: %w", err)
	}
	over := r.Load(stored)
	if len(over) == 0 {
		return nil
	}
	err = b.db.Commit(context.Background(), func(tx *bolt.Tx) error {
		bk := tx.Bucket(store.BucketRetained)
		for _, m := range over {
			if err := bk.Delete([]byte(m.Topic)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("quota: delete retained messages over the quota: %w", err)
	}
	owners := map[string]int{}
	for _, m := range over {
		owners[m.Owner]++
	}
	for o, n := range owners {
		b.log.Warn("retained messages over the quota deleted at start-up", "client", o, "deleted", n,
			"max_messages", r.MaxMessages, "max_bytes", r.MaxBytes)
	}
	return nil
}
