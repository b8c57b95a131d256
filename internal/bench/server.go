package bench

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Server is what the broker used during one scenario: CPU (cores busy on
// average), memory at the end, and the store's group commits.
type Server struct {
	// CPUCores is CPU seconds used per wall second (2.0 = two cores busy).
	// For an in-process broker it is the whole process: broker and clients.
	CPUCores float64 `json:"cpu_cores"`
	// RSS is the resident set size at the end; RSSGrowth the change over
	// the scenario.
	RSS       int64 `json:"rss_bytes"`
	RSSGrowth int64 `json:"rss_growth_bytes"`
	// Go heap in use and goroutine stacks at the end (in-process, or from
	// the target's go_memstats metrics).
	Heap       int64 `json:"heap_bytes,omitempty"`
	Stacks     int64 `json:"stack_bytes,omitempty"`
	Goroutines int64 `json:"goroutines,omitempty"`
	// Commits is the store's group commits during the scenario, with the
	// writes they carried and their mean duration (fsync included).
	Commits         int64   `json:"commits,omitempty"`
	WritesPerCommit float64 `json:"writes_per_commit,omitempty"`
	CommitMs        float64 `json:"commit_ms,omitempty"`
	// Pages is the database pages those commits wrote (0 when the broker
	// does not export umbra_store_pages_written_total).
	Pages int64 `json:"pages,omitempty"`
	// ShadowMs is the broker's mean time per shadow request, from receipt
	// to replies published (waiting for the group commit included).
	ShadowMs float64 `json:"shadow_request_ms,omitempty"`
	// ShadowP99Ms is the broker's 99th percentile of the time per shadow
	// update, from receipt to replies published, estimated from its
	// histogram umbra_shadow_request_seconds{op="update"} as Prometheus's
	// histogram_quantile does (linear within a bucket; the buckets double,
	// so it is a coarse figure). Set beside the client's p99, it tells the
	// broker's share of the tail from the network's and the clients'.
	ShadowP99Ms float64 `json:"shadow_update_p99_ms,omitempty"`
}

// sample is one reading of the server's counters.
type sample struct {
	at                            time.Time
	cpu                           float64 // seconds
	rss, heap, stacks, goroutines int64
	commits, commitWrites         float64
	commitSeconds, pages          float64
	shadowCount, shadowSeconds    float64
	updateBuckets                 map[float64]float64 // le (seconds) → cumulative count
}

// probe reads the server's counters: in-process from the runtime and
// getrusage, for a target from its /metrics. Both read the store's commit
// histograms from /metrics when an HTTP address is known.
type probe struct {
	inProcess bool
	metrics   string // URL of /metrics ("" unknown)
	apiKey    string
	client    *http.Client
	buckets   map[float64]float64 // the last scrape's update-duration buckets
}

func (p *probe) sample(ctx context.Context) (sample, error) {
	s := sample{at: time.Now()}
	var prom map[string]float64
	if p.metrics != "" {
		var err error
		if prom, err = p.scrape(ctx); err != nil && !p.inProcess {
			return s, err
		}
	}
	if p.inProcess {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
			s.cpu = tv(ru.Utime) + tv(ru.Stime)
		}
		s.rss = selfRSS()
		ms := []metrics.Sample{
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/memory/classes/heap/stacks:bytes"},
			{Name: "/sched/goroutines:goroutines"},
		}
		metrics.Read(ms)
		s.heap = int64(ms[0].Value.Uint64())
		s.stacks = int64(ms[1].Value.Uint64())
		s.goroutines = int64(ms[2].Value.Uint64())
	} else {
		s.cpu = prom["process_cpu_seconds_total"]
		s.rss = int64(prom["process_resident_memory_bytes"])
		s.heap = int64(prom["go_memstats_heap_inuse_bytes"])
		s.stacks = int64(prom["go_memstats_stack_inuse_bytes"])
		s.goroutines = int64(prom["go_goroutines"])
	}
	s.commits = prom["umbra_store_commit_writes_count"]
	s.commitWrites = prom["umbra_store_commit_writes_sum"]
	s.commitSeconds = prom["umbra_store_commit_seconds_sum"]
	s.pages = prom["umbra_store_pages_written_total"]
	s.shadowCount = prom["umbra_shadow_request_seconds_count"]
	s.shadowSeconds = prom["umbra_shadow_request_seconds_sum"]
	s.updateBuckets = p.buckets
	return s, nil
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// selfRSS is this process's resident set size now.
func selfRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// scrape reads the unlabelled samples of a Prometheus text exposition.
func (p *probe) scrape(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.metrics, nil)
	if err != nil {
		return nil, err
	}
	if p.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+p.apiKey)
	}
	c := p.client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", p.metrics, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: HTTP %d", p.metrics, resp.StatusCode)
	}
	out := map[string]float64{}
	p.buckets = map[float64]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// Labelled series are summed under their bare name (for the
		// _sum and _count of a histogram by op, the total over ops).
		var name, labels, val string
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			name, labels, val = line[:i], line[i+1:j], strings.TrimSpace(line[j+1:])
		} else {
			var ok bool
			if name, val, ok = strings.Cut(line, " "); !ok {
				continue
			}
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			out[name] += v
			if name == "umbra_shadow_request_seconds_bucket" {
				addUpdateBucket(p.buckets, labels, v)
			}
		}
	}
	return out, sc.Err()
}

// between is the server's use from a to b.
func between(a, b sample) Server {
	s := Server{
		RSS: b.rss, RSSGrowth: b.rss - a.rss,
		Heap: b.heap, Stacks: b.stacks, Goroutines: b.goroutines,
	}
	if wall := b.at.Sub(a.at).Seconds(); wall > 0 {
		s.CPUCores = (b.cpu - a.cpu) / wall
	}
	if n := b.commits - a.commits; n > 0 {
		s.Commits = int64(n)
		s.WritesPerCommit = (b.commitWrites - a.commitWrites) / n
		s.CommitMs = (b.commitSeconds - a.commitSeconds) / n * 1000
		s.Pages = int64(b.pages - a.pages)
	}
	if n := b.shadowCount - a.shadowCount; n > 0 {
		s.ShadowMs = (b.shadowSeconds - a.shadowSeconds) / n * 1000
	}
	s.ShadowP99Ms = bucketQuantile(0.99, a.updateBuckets, b.updateBuckets) * 1000
	return s
}

// addUpdateBucket records the le="…" bound and count n of an
// umbra_shadow_request_seconds bucket when its labels say op="update".
func addUpdateBucket(into map[float64]float64, labels string, n float64) {
	if !strings.Contains(labels, `op="update"`) {
		return
	}
	_, rest, ok := strings.Cut(labels, `le="`)
	if !ok {
		return
	}
	bound, _, ok := strings.Cut(rest, `"`)
	if !ok {
		return
	}
	if le, err := strconv.ParseFloat(bound, 64); err == nil { // "+Inf" parses as +Inf
		into[le] += n
	}
}

// bucketQuantile is the q-quantile of the observations made between two
// readings of a cumulative histogram (upper bound → count), interpolated
// linearly within its bucket as Prometheus's histogram_quantile does; 0
// when there were none, the highest finite bound when it falls in +Inf.
func bucketQuantile(q float64, a, b map[float64]float64) float64 {
	bounds := make([]float64, 0, len(b))
	for le := range b {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return 0
	}
	total := b[bounds[len(bounds)-1]] - a[bounds[len(bounds)-1]]
	if total <= 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		n := b[le] - a[le]
		if n >= rank {
			if math.IsInf(le, 1) {
				return lower
			}
			if n == below {
				return le
			}
			return lower + (le-lower)*(rank-below)/(n-below)
		}
		lower, below = le, n
	}
	return lower
}
