package hooks

import (
	"bytes"
	"context"
	"encoding"
	"encoding/binary"
	"log/slog"
	"time"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/hooks/storage"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
	"github.com/umbra-iot/umbra/tempfork/mochi/system"
)

// SessionStore is what the session hook needs from storage: write-behind
// puts and deletes (value nil) that are coalesced per key, prefix deletes,
// and a scan to restore state at start.
type SessionStore interface {
	Stage(bucket []byte, key string, value encoding.BinaryMarshaler)
	StageDeletePrefix(bucket []byte, prefix string)
	Scan(bucket []byte, fn func(key, value []byte) error) error
	// Flush returns once everything staged before the call is durable.
	Flush(ctx context.Context) error
}

// SessionBuckets names the buckets the session hook writes.
type SessionBuckets struct{ Clients, Subscriptions, Retained, Inflight []byte }

// Sessions persists MQTT session state (client records, subscriptions,
// retained messages, QoS 1/2 messages queued or in flight) so that persistent
// sessions survive a broker restart.
//
// Unlike Mochi's stock bolt hook, which runs two fsync'd transactions per QoS
// delivery on the publisher's goroutine, every write here is staged in
// memory and written behind by the store's group committer; a put followed
// by its delete before the next commit costs one map entry. What a crash can
// lose is therefore the session changes of the last commit interval (a few
// milliseconds); a clean shutdown loses nothing. Shadows do not go through
// this hook: their changes are durable before they are acknowledged.
type Sessions struct {
	mqtt.HookBase
	store   SessionStore
	buckets SessionBuckets
}

// NewSessions returns the session persistence hook.
func NewSessions(s SessionStore, b SessionBuckets) *Sessions {
	return &Sessions{store: s, buckets: b}
}

// ID implements mqtt.Hook.
func (h *Sessions) ID() string { return "umbra-sessions" }

// Provides implements mqtt.Hook.
func (h *Sessions) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnWillSent, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.OnClientExpired, mqtt.OnRetainedExpired,
		mqtt.StoredClients, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages, mqtt.StoredSubscriptions:
		return true
	}
	return false
}

// clientPrefix is the key prefix of everything stored for one client. MQTT
// forbids U+0000 in client ids, and the connect hook refuses one that has it.
func clientPrefix(id string) string { return id + "\x00" }

func subscriptionKey(id, filter string) string { return clientPrefix(id) + filter }

func inflightKey(id string, packetID uint16) string {
	return clientPrefix(id) + string(binary.BigEndian.AppendUint16(nil, packetID))
}

// put stages a record; it is encoded when written, if still current.
func (h *Sessions) put(bucket []byte, key string, v encoding.BinaryMarshaler) {
	h.store.Stage(bucket, key, v)
}

// OnSessionEstablished records the client. A clean start discards whatever
// an earlier session of the same id left behind.
func (h *Sessions) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Properties.Clean {
		h.forget(cl.ID)
	}
	h.putClient(cl)
}

// OnWillSent rewrites the client record, whose will is now spent.
func (h *Sessions) OnWillSent(cl *mqtt.Client, pk packets.Packet) { h.putClient(cl) }

func (h *Sessions) putClient(cl *mqtt.Client) {
	rec := ClientRecord(cl)
	h.put(h.buckets.Clients, cl.ID, &rec)
}

// ClientRecord is the stored form of cl's session (Mochi's storage.Client):
// what this hook persists and what cluster mode hands to another node.
func ClientRecord(cl *mqtt.Client) storage.Client {
	props := cl.Properties.Props.Copy(false)
	return storage.Client{
		ID: cl.ID, T: storage.ClientKey, Remote: cl.Net.Remote, Listener: cl.Net.Listener,
		Username: cl.Properties.Username, Clean: cl.Properties.Clean, ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval:     props.SessionExpiryInterval,
			SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag,
			AuthenticationMethod:      props.AuthenticationMethod,
			AuthenticationData:        props.AuthenticationData,
			RequestProblemInfo:        props.RequestProblemInfo,
			RequestProblemInfoFlag:    props.RequestProblemInfoFlag,
			RequestResponseInfo:       props.RequestResponseInfo,
			ReceiveMaximum:            props.ReceiveMaximum,
			TopicAliasMaximum:         props.TopicAliasMaximum,
			User:                      props.User,
			MaximumPacketSize:         props.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	}
}

// forget deletes every record of a client id.
func (h *Sessions) forget(id string) {
	h.store.Stage(h.buckets.Clients, id, nil)
	h.store.StageDeletePrefix(h.buckets.Subscriptions, clientPrefix(id))
	h.store.StageDeletePrefix(h.buckets.Inflight, clientPrefix(id))
}

// OnDisconnect forgets a session that ends with its connection.
func (h *Sessions) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if expire && cl.StopCause() != packets.ErrSessionTakenOver {
		h.forget(cl.ID)
	}
}

// OnClientExpired forgets a persistent session whose expiry passed.
func (h *Sessions) OnClientExpired(cl *mqtt.Client) { h.forget(cl.ID) }

// ephemeral reports whether a client's session ends with its connection
// (MQTT 3 clean session, MQTT 5 session expiry 0): there is nothing of it
// to restore after a restart, so its subscriptions and in-flight messages
// are not written at all.
func ephemeral(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval == 0
	}
	return cl.Properties.Clean
}

// OnSubscribed records the granted subscriptions (not the refused ones).
func (h *Sessions) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	if ephemeral(cl) {
		return
	}
	for i, f := range pk.Filters {
		if i < len(reasonCodes) && reasonCodes[i] >= 0x80 {
			continue
		}
		h.put(h.buckets.Subscriptions, subscriptionKey(cl.ID, f.Filter), &storage.Subscription{
			ID:                subscriptionKey(cl.ID, f.Filter),
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Qos:               reasonCodes[i],
			Filter:            f.Filter,
			Identifier:        f.Identifier,
			NoLocal:           f.NoLocal,
			RetainHandling:    f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		})
	}
}

// OnUnsubscribed deletes the subscriptions.
func (h *Sessions) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if ephemeral(cl) {
		return
	}
	for _, f := range pk.Filters {
		h.store.Stage(h.buckets.Subscriptions, subscriptionKey(cl.ID, f.Filter), nil)
	}
}

// OnRetainMessage records (r == 1) or deletes (r == -1) a retained message.
func (h *Sessions) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if r == -1 {
		h.store.Stage(h.buckets.Retained, pk.TopicName, nil)
		return
	}
	h.put(h.buckets.Retained, pk.TopicName, MessageRecord(pk, cl.ID, storage.RetainedKey, pk.TopicName, 0))
}

// OnRetainedExpired deletes an expired retained message.
func (h *Sessions) OnRetainedExpired(topic string) { h.store.Stage(h.buckets.Retained, topic, nil) }

// OnQosPublish records a QoS 1/2 message queued or in flight to a client,
// or the state of a QoS 2 flow (PUBREC: the client's publish was received;
// PUBREL: the client received the server's).
//
// The QoS 2 states are what exactly-once rests on, so they are made durable
// before Mochi sends the acknowledgement that the client will act on: a
// restart then resumes the flow (PUBREL again, never the PUBLISH). A QoS 1
// message stays write-behind: redelivering it is allowed.
func (h *Sessions) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	if ephemeral(cl) {
		return
	}
	key := inflightKey(cl.ID, pk.PacketID)
	h.put(h.buckets.Inflight, key, MessageRecord(pk, cl.ID, storage.InflightKey, key, sent))
	if t := pk.FixedHeader.Type; t == packets.Pubrec || t == packets.Pubrel {
		h.flush(cl)
	}
}

// OnQosComplete deletes a message whose delivery flow finished. The end of
// a QoS 2 flow the client started (its PUBREL) is durable before Mochi sends
// PUBCOMP: a stale PUBREC record would refuse the client's next publish
// that reuses the packet id. So are the copies of that publish queued for
// persistent subscribers (staged while Mochi routed it, before it read the
// PUBREL), also when the publisher's own session is not persistent: once
// the publisher has its PUBCOMP it will never send the message again, so a
// kill -9 must not lose it.
func (h *Sessions) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if ephemeral(cl) {
		if pk.FixedHeader.Type == packets.Pubrel {
			h.flush(cl)
		}
		return
	}
	h.store.Stage(h.buckets.Inflight, inflightKey(cl.ID, pk.PacketID), nil)
	if pk.FixedHeader.Type == packets.Pubrel {
		h.flush(cl)
	}
}

// flushTimeout bounds how long a QoS 2 acknowledgement waits for the disk.
const flushTimeout = 10 * time.Second

func (h *Sessions) flush(cl *mqtt.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	if err := h.store.Flush(ctx); err != nil {
		// The acknowledgement still goes out (withholding it would stall the
		// client for good); the state is written with the next commit.
		h.Log.Warn("QoS 2 state not durable before its acknowledgement", slog.String("client", cl.ID), slog.Any("error", err))
	}
}

// OnQosDropped deletes a message Mochi gave up on.
func (h *Sessions) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { h.OnQosComplete(cl, pk) }

// MessageRecord is the stored record of a message of client's session
// (kind: storage.InflightKey or storage.RetainedKey) under id: the one
// builder of it, also for a session handed to another cluster node
// (internal/clustersession).
func MessageRecord(pk packets.Packet, client, kind, id string, sent int64) *storage.Message {
	props := pk.Properties.Copy(false)
	return &storage.Message{
		ID:          id,
		T:           kind,
		Client:      client,
		Origin:      pk.Origin,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Sent:        sent,
		Created:     pk.Created,
		PacketID:    pk.PacketID,
		Sequence:    pk.Sequence,
		Properties: storage.MessageProperties{
			PayloadFormat:          props.PayloadFormat,
			PayloadFormatFlag:      props.PayloadFormatFlag,
			MessageExpiryInterval:  props.MessageExpiryInterval,
			ContentType:            props.ContentType,
			ResponseTopic:          props.ResponseTopic,
			CorrelationData:        props.CorrelationData,
			SubscriptionIdentifier: props.SubscriptionIdentifier,
			TopicAlias:             props.TopicAlias,
			User:                   props.User,
		},
	}
}

// StoredClients implements mqtt.Hook: the clients to restore at start.
func (h *Sessions) StoredClients() ([]storage.Client, error) {
	return restore[storage.Client](h, h.buckets.Clients)
}

// StoredSubscriptions implements mqtt.Hook.
func (h *Sessions) StoredSubscriptions() ([]storage.Subscription, error) {
	return restore[storage.Subscription](h, h.buckets.Subscriptions)
}

// StoredRetainedMessages implements mqtt.Hook.
func (h *Sessions) StoredRetainedMessages() ([]storage.Message, error) {
	return restore[storage.Message](h, h.buckets.Retained)
}

// StoredInflightMessages implements mqtt.Hook.
func (h *Sessions) StoredInflightMessages() ([]storage.Message, error) {
	return restore[storage.Message](h, h.buckets.Inflight)
}

// StoredSysInfo implements mqtt.Hook; $SYS counters are not persisted.
func (h *Sessions) StoredSysInfo() (storage.SystemInfo, error) { return storage.SystemInfo{}, nil }

// OnSysInfoTick implements mqtt.Hook (not provided; kept for clarity).
func (h *Sessions) OnSysInfoTick(*system.Info) {}

type record[T any] interface {
	*T
	UnmarshalBinary([]byte) error
}

// restore decodes every record of a bucket. A record that does not decode is
// logged and skipped rather than refusing to start the broker over one bad key.
func restore[T any, P record[T]](h *Sessions, bucket []byte) ([]T, error) {
	var out []T
	err := h.store.Scan(bucket, func(k, v []byte) error {
		var rec T
		if err := P(&rec).UnmarshalBinary(bytes.Clone(v)); err != nil {
			h.Log.Warn("skipping undecodable session record", slog.String("bucket", string(bucket)), slog.String("key", string(k)), slog.Any("error", err))
			return nil
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}
