package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// benchDoc is a stored document of about 600 bytes, as a small device's.
var benchDoc = []byte(`{"state":{"reported":{"firmware_version":"1.4.2","battery":87,"led_is_on":true,"location":"berlin","rssi":-61,` +
	`"uptime_s":123456,"temp_c":21.5}},"metadata":{"reported":{"firmware_version":{"timestamp":1800000000},"battery":{"timestamp":1800000000},` +
	`"led_is_on":{"timestamp":1800000000},"location":{"timestamp":1800000000},"rssi":{"timestamp":1800000000},"uptime_s":{"timestamp":1800000000},` +
	`"temp_c":{"timestamp":1800000000}}},"version":1,"timestamp":1800000000}` + strings.Repeat(" ", 150))

// benchEntry is a history entry of about 250 bytes.
var benchEntry = []byte(`{"version":1,"op":"update","timestamp":1800000000,"principal":"esp32-0000001","origin":"mqtt",` +
	`"request":{"state":{"reported":{"battery":87,"rssi":-61}}},"state":{"reported":{"firmware_version":"1.4.2","battery":87,"rssi":-61}}}`)

// BenchmarkShadowCommit measures durable shadow writes through the group
// committer: writers goroutines each update their share of 1,000 shadows
// that already hold a full history (100 versions), as a fleet does.
// pages/op is bbolt's page writes per update, commits/op the transactions.
func BenchmarkShadowCommit(b *testing.B) {
	for _, history := range []bool{false, true} {
		for _, writers := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("history=%v/writers=%d", history, writers), func(b *testing.B) {
				benchShadowCommit(b, Options{}, history, writers, nil)
			})
		}
	}
}

// BenchmarkCommitSync compares bbolt's two fdatasyncs per commit (data
// pages, then the meta page) with one: NoSync and a single Sync after the
// transaction, which is NOT crash safe (the meta page may reach the disk
// before the pages it points to). It only measures what the second costs.
// The freelistSync variant writes bbolt's freelist with every commit (Umbra
// opens bbolt with NoFreelistSync, as etcd does: the freelist is rebuilt by
// a scan at open instead).
func BenchmarkCommitSync(b *testing.B) {
	for _, mode := range []string{"two-fdatasync", "one-fdatasync-UNSAFE", "freelistSync"} {
		for _, writers := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/writers=%d", mode, writers), func(b *testing.B) {
				benchShadowCommit(b, Options{}, true, writers, func(db *DB) {
					switch mode {
					case "one-fdatasync-UNSAFE":
						db.unsafeOneSync, db.bolt.NoSync = true, true
					case "freelistSync":
						db.bolt.NoFreelistSync = false
					}
				})
			})
		}
	}
}

// BenchmarkCommitBatchCap: the same load (1,000 writers, history on) with
// the committer's batch capped at different sizes.
func BenchmarkCommitBatchCap(b *testing.B) {
	for _, maxBatch := range []int{64, 256, 1024, 4096} {
		b.Run(fmt.Sprintf("maxBatch=%d", maxBatch), func(b *testing.B) {
			benchShadowCommit(b, Options{MaxBatch: maxBatch}, true, 1000, nil)
		})
	}
}

func benchShadowCommit(b *testing.B, opts Options, history bool, writers int, adjust func(*DB)) {
	const shadows, versions = 1000, 100
	var commits atomic.Int64
	opts.OnCommit = func(time.Duration, int) { commits.Add(1) }
	db, err := Open(b.TempDir(), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if adjust != nil {
		adjust(db)
	}
	keys := make([]ShadowKey, shadows)
	for i := range keys {
		keys[i] = ShadowKey{Thing: fmt.Sprintf("esp32-%07d", i)}
	}
	// A realistic file: every shadow with a document and a full history.
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		for _, k := range keys {
			if err := tx.Bucket(bucketShadows).Put(k.bytes(), benchDoc); err != nil {
				return err
			}
			for v := int64(1); v <= versions; v++ {
				w := ShadowWrite{Key: k, Version: v, History: benchEntry, HistoryKind: HistoryUpdate, HistoryLimit: versions}
				if err := appendHistory(tx, k.bytes(), w); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	versionOf := make([]int64, shadows)
	for i := range versionOf {
		versionOf[i] = versions
	}
	pages0 := txWrites(db)
	commits.Store(0)
	b.ResetTimer()
	var wg sync.WaitGroup
	lat := make([][]time.Duration, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				// Writer w owns shadows w, w+writers, …: one write per shadow at a time.
				i := (w + writers*int(n/int64(writers))) % shadows
				versionOf[i]++
				sw := ShadowWrite{Key: keys[i], Doc: benchDoc, Version: versionOf[i], Time: time.Unix(1800000000, 0)}
				if history {
					sw.History, sw.HistoryKind, sw.HistoryLimit = benchEntry, HistoryUpdate, versions
				}
				start := time.Now()
				if err := db.CommitShadow(context.Background(), sw); err != nil {
					b.Error(err)
					return
				}
				lat[w] = append(lat[w], time.Since(start))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(txWrites(db)-pages0)/float64(b.N), "pages/op")
	b.ReportMetric(float64(commits.Load())/float64(b.N), "commits/op")
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
}

func txWrites(db *DB) int64 {
	st := db.bolt.Stats()
	return st.TxStats.GetWrite()
}
