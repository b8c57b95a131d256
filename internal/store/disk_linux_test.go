package store

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkDiskSyncAfterIdle measures the disk under the store, not Umbra:
// one page written and fdatasynced, then the meta page written and
// fdatasynced (what one bbolt commit of one update costs in syncs),
// back to back or after an idle gap. On the development box: 0.27 ms (p50)
// back to back, 0.61 ms (p90 1.68 ms) after 50 ms idle; a low rate of
// durable updates pays the second figure (BENCHMARKS.md,
// issue 17). Reported as ms per commit (median and 90th percentile).
func BenchmarkDiskSyncAfterIdle(b *testing.B) {
	for _, gap := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 50 * time.Millisecond} {
		b.Run("gap="+gap.String(), func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(16 << 20); err != nil {
				b.Fatal(err)
			}
			page := make([]byte, 4096)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				syncCommit(b, f, page, int64(1+i%4000)*4096)
				lat = append(lat, time.Since(start))
				b.StopTimer()
				time.Sleep(gap) // the idle gap being measured, not synchronisation
				b.StartTimer()
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*9/10])/1e6, "p90-ms")
		})
	}
}

// BenchmarkDiskSyncPages measures what a bbolt commit's size costs the
// disk under the store: n pages at scattered offsets written and
// fdatasynced, then the meta page written and fdatasynced, back to back.
// Reported per commit: wall time (median, 99th percentile) and the CPU the
// writing thread used (user + system: on a virtual disk the kernel's share
// of an fdatasync is not small). A durable update at a low rate commits
// alone and dirties ~10 pages with history (BENCHMARKS.md, issue 17).
func BenchmarkDiskSyncPages(b *testing.B) {
	for _, pages := range []int{1, 4, 10, 20, 40} {
		b.Run("pages="+strconv.Itoa(pages), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			const span = 16 << 20
			page := make([]byte, 4096)
			if err := f.Truncate(span); err != nil {
				b.Fatal(err)
			}
			for off := int64(0); off < span; off += int64(len(page)) { // no holes: bbolt rewrites allocated pages
				if _, err := f.WriteAt(page, off); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			lat := make([]time.Duration, 0, b.N)
			offsets := make([]int64, 0, pages)
			cpu0 := threadCPU(b)
			b.ResetTimer()
			for range b.N {
				offsets = offsets[:0]
				for range pages {
					offsets = append(offsets, int64(1+rng.IntN(span/4096-1))*4096)
				}
				start := time.Now()
				syncCommit(b, f, page, offsets...)
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			cpu := threadCPU(b) - cpu0
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/commit")
		})
	}
}

// syncCommit does to f what a bbolt commit does to its file: page written
// at each offset, fdatasync, the meta page (offset 0) written, fdatasync.
func syncCommit(b *testing.B, f *os.File, page []byte, offsets ...int64) {
	for _, off := range offsets {
		if _, err := f.WriteAt(page, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		b.Fatal(err)
	}
	if _, err := f.WriteAt(page[:512], 0); err != nil {
		b.Fatal(err)
	}
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		b.Fatal(err)
	}
}

// threadCPU is the user + system time of the calling OS thread.
func threadCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
