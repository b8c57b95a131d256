package broker

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/umbra-iot/umbra/tempfork/mochi/system"

	"github.com/umbra-iot/umbra/shadow"
)

// metrics is the broker's own Prometheus registry (one per Broker, so that
// several brokers in one process, as in tests, do not collide).
type metrics struct {
	reg         *prometheus.Registry
	commitDur   prometheus.Histogram
	commitBatch prometheus.Histogram
	shadowOps   *prometheus.CounterVec
	shadowDur   *prometheus.HistogramVec
}

func newMetrics(info func() *system.Info, dbSize func() int64) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.commitDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "umbra_store_commit_seconds",
		Help:    "Duration of one group-commit transaction including fsync.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.commitBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "umbra_store_commit_writes",
		Help:    "Writes carried by one group-commit transaction.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14),
	})
	m.shadowOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "umbra_shadow_requests_total",
		Help: "Shadow requests by operation and result code (200 = accepted).",
	}, []string{"op", "code"})
	m.shadowDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "umbra_shadow_request_seconds",
		Help:    "Shadow request duration, from receipt to replies published (includes the durable commit).",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
	}, []string{"op"})
	m.reg.MustRegister(
		m.shadowOps, m.shadowDur,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.commitDur, m.commitBatch,
		&mqttCollector{info: info},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "umbra_store_size_bytes", Help: "Size of the database file.",
		}, func() float64 { return float64(dbSize()) }),
	)
	return m
}

func (m *metrics) observeCommit(d time.Duration, writes int) {
	m.commitDur.Observe(d.Seconds())
	m.commitBatch.Observe(float64(writes))
}

func (m *metrics) observeShadow(op shadow.Op, code int, d time.Duration) {
	m.shadowOps.WithLabelValues(string(op), strconv.Itoa(code)).Inc()
	m.shadowDur.WithLabelValues(string(op)).Observe(d.Seconds())
}

// mqttCollector reads Mochi's counters at scrape time.
type mqttCollector struct{ info func() *system.Info }

var mqttDescs = []struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(*system.Info) int64
}{
	{prometheus.NewDesc("umbra_mqtt_clients_connected", "MQTT clients connected now.", nil, nil), prometheus.GaugeValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.ClientsConnected) }},
	{prometheus.NewDesc("umbra_mqtt_sessions", "MQTT sessions known (connected and persistent disconnected).", nil, nil), prometheus.GaugeValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.ClientsTotal) }},
	{prometheus.NewDesc("umbra_mqtt_messages_received_total", "PUBLISH packets received.", nil, nil), prometheus.CounterValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.MessagesReceived) }},
	{prometheus.NewDesc("umbra_mqtt_messages_sent_total", "PUBLISH packets sent.", nil, nil), prometheus.CounterValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.MessagesSent) }},
	{prometheus.NewDesc("umbra_mqtt_messages_dropped_total", "Messages dropped because a subscriber's queue was full.", nil, nil), prometheus.CounterValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.MessagesDropped) }},
	{prometheus.NewDesc("umbra_mqtt_inflight_messages", "QoS 1/2 messages in flight or queued for offline sessions.", nil, nil), prometheus.GaugeValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.Inflight) }},
	{prometheus.NewDesc("umbra_mqtt_inflight_dropped_total", "QoS 1/2 messages dropped (expired or over quota).", nil, nil), prometheus.CounterValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.InflightDropped) }},
	{prometheus.NewDesc("umbra_mqtt_retained_messages", "Retained messages.", nil, nil), prometheus.GaugeValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.Retained) }},
	{prometheus.NewDesc("umbra_mqtt_subscriptions", "Active subscriptions.", nil, nil), prometheus.GaugeValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.Subscriptions) }},
	{prometheus.NewDesc("umbra_mqtt_bytes_received_total", "Bytes received from MQTT clients.", nil, nil), prometheus.CounterValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.BytesReceived) }},
	{prometheus.NewDesc("umbra_mqtt_bytes_sent_total", "Bytes sent to MQTT clients.", nil, nil), prometheus.CounterValue, func(i *system.Info) int64 { return atomic.LoadInt64(&i.BytesSent) }},
}

func (c *mqttCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range mqttDescs {
		ch <- d.desc
	}
}

func (c *mqttCollector) Collect(ch chan<- prometheus.Metric) {
	info := c.info()
	for _, d := range mqttDescs {
		ch <- prometheus.MustNewConstMetric(d.desc, d.kind, float64(d.value(info)))
	}
}
