package broker

import "github.com/prometheus/client_golang/prometheus"

// storePagesCounter counts the database pages the store's transactions
// wrote: the disk traffic of durability (pages ÷ commits, pages ÷ updates).
func storePagesCounter(b *Broker) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "umbra_store_pages_written_total",
		Help: "Database pages written by committed transactions.",
	}, func() float64 {
		if b.db == nil {
			return 0
		}
		return float64(b.db.PagesWritten())
	})
}
