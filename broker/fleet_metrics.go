package broker

import (
	"github.com/prometheus/client_golang/prometheus"
)

// fleetCollector reports fleet-level figures at scrape time: registry size,
// rollouts and jobs by state, and the store's write-behind queue.
type fleetCollector struct{ b *Broker }

var (
	descThings   = prometheus.NewDesc("umbra_registry_things", "Registered things.", nil, nil)
	descRollouts = prometheus.NewDesc("umbra_rollouts", "Rollouts by state.", []string{"state"}, nil)
	descJobs     = prometheus.NewDesc("umbra_jobs", "Bulk configuration jobs by state.", []string{"state"}, nil)
	descStaged   = prometheus.NewDesc("umbra_store_staged_writes", "Write-behind session changes waiting for the next commit.", nil, nil)
	descStreams  = prometheus.NewDesc("umbra_event_stream_subscribers", "Open live event streams.", nil, nil)
)

func (c fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descThings, descRollouts, descJobs, descStaged, descStreams} {
		ch <- d
	}
}

func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	if b.registry != nil {
		ch <- prometheus.MustNewConstMetric(descThings, prometheus.GaugeValue, float64(b.registry.Registered()))
	}
	if b.rollouts != nil && b.runsEngine() {
		counts := map[string]int{}
		for _, r := range b.rollouts.List() {
			counts[string(r.State)]++
		}
		for state, n := range counts {
			ch <- prometheus.MustNewConstMetric(descRollouts, prometheus.GaugeValue, float64(n), state)
		}
		jobs := map[string]int{}
		for _, j := range b.rollouts.Jobs() {
			jobs[string(j.State)]++
		}
		for state, n := range jobs {
			ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(n), state)
		}
	}
	if b.db != nil {
		ch <- prometheus.MustNewConstMetric(descStaged, prometheus.GaugeValue, float64(b.db.Staged()))
	}
	ch <- prometheus.MustNewConstMetric(descStreams, prometheus.GaugeValue, float64(b.events.Subscribers()))
}
