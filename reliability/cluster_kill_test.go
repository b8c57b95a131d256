package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/internal/natstest"
)

// clusterAck is one update a client got accepted: its shadow, the version
// the accepted reply named, and the value it wrote under its own key.
type clusterAck struct {
	thing     string
	client    string
	version   int64
	seq       int
	afterKill bool
}

// No acknowledged update is lost when an Umbra node dies: three `umbra
// serve --cluster` child processes on a 3-node JetStream cluster (R3,
// SyncAlways), six HTTP clients (two per node, two per shadow on different
// nodes) making versioned read-modify-write updates, each writing an
// increasing sequence number under its own key. Node 2 is killed with
// SIGKILL mid-stream; the clients on nodes 0 and 1 go on. Afterwards, on
// both living nodes: each version was accepted once, every client saw its
// accepted versions strictly increase, every acknowledged update (before
// and after the kill, through any node, the killed one included) is in the
// shadow's history at the version its reply named with the value written,
// and the current document holds at least each client's last acknowledged
// value.
func TestClusterUmbraKillNoAcknowledgedUpdateLost(t *testing.T) {
	if testing.Short() {
		t.Skip("three Umbra processes on a NATS cluster")
	}
	nc := natstest.StartCluster(t, 3)
	bin := buildUmbra(t)
	var nodes []*umbraProc
	for i := range 3 {
		nodes = append(nodes, startUmbra(t, bin, t.TempDir(),
			"UMBRA_CLUSTER_URL="+nc.URL(i), fmt.Sprintf("UMBRA_CLUSTER_NAME=node%d", i),
			"UMBRA_SHADOW_HISTORY_VERSIONS=1000", "UMBRA_LIMITS_SHADOW_RATE=-1"))
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, p := range nodes {
				t.Logf("--- node %d stderr\n%s", i, p.stderr.String())
			}
		}
	})
	hc := &http.Client{Timeout: 15 * time.Second}
	things := []string{"kill-0", "kill-1", "kill-2"}
	// The first writes may meet the new buckets' leader elections: a 500
	// is retried (same content), as a client would.
	for _, th := range things {
		deadline := time.Now().Add(45 * time.Second)
		for {
			code, body, err := postShadow(hc, nodes[0], th, `{"state":{"reported":{"created":true}}}`)
			if err == nil && code == 200 {
				break
			}
			if time.Now().After(deadline) || (err == nil && code != 500) {
				t.Fatalf("create %s: %d %s %v", th, code, body, err)
			}
			t.Logf("create %s: %d %s %v (retrying)", th, code, body, err)
			time.Sleep(100 * time.Millisecond) // pacing of the retry
		}
	}

	const perClient = 250 // acknowledged updates per client at most (history keeps 1000 versions)
	var (
		killed   atomic.Bool
		mu       sync.Mutex
		acks     []clusterAck
		unknown  atomic.Int64 // 500s and transport errors: outcome unknown
		cut      atomic.Int64 // requests of node 2's clients that the kill cut off
		conflict atomic.Int64
		total    atomic.Int64
		afterCnt [3]atomic.Int64 // acks after the kill, per node
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for node := range 3 {
		for k := range 2 {
			name := fmt.Sprintf("n%dc%d", node, k)
			thing := things[(node+k)%3]
			wg.Go(func() {
				p := nodes[node]
				seq, acked := 0, 0
				for ctx.Err() == nil && acked < perClient {
					v, err := getVersion(hc, p, thing)
					if err != nil {
						if node == 2 && killed.Load() {
							cut.Add(1)
							return // its node is gone
						}
						unknown.Add(1)
						time.Sleep(20 * time.Millisecond) // pacing after a failed read
						continue
					}
					seq++
					after := killed.Load()
					code, body, err := postShadow(hc, p, thing, fmt.Sprintf(`{"state":{"reported":{%q:%d}},"version":%d}`, name, seq, v))
					switch {
					case err != nil || code == 500:
						if node == 2 && killed.Load() {
							cut.Add(1)
							return
						}
						unknown.Add(1)
					case code == 409:
						conflict.Add(1)
					case code == 200:
						var r struct {
							Version int64 `json:"version"`
						}
						if err := json.Unmarshal([]byte(body), &r); err != nil || r.Version != v+1 {
							t.Errorf("%s: accepted reply %s for an update at version %d", name, body, v)
							return
						}
						mu.Lock()
						acks = append(acks, clusterAck{thing: thing, client: name, version: r.Version, seq: seq, afterKill: after})
						mu.Unlock()
						acked++
						total.Add(1)
						if after {
							afterCnt[node].Add(1)
						}
					default:
						t.Errorf("%s: HTTP %d %s", name, code, body)
						return
					}
				}
			})
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				cancel()
				wg.Wait()
				t.Fatalf("timed out waiting for %s (acks %d, conflicts %d, unknown %d)", what, total.Load(), conflict.Load(), unknown.Load())
			}
			time.Sleep(10 * time.Millisecond) // pacing of the poll
		}
	}
	waitFor("300 acknowledged updates before the kill", func() bool { return total.Load() >= 300 })
	killed.Store(true)
	nodes[2].kill9(t)
	beforeKill := total.Load()
	waitFor("60 acknowledged updates on each living node after the kill", func() bool {
		return afterCnt[0].Load() >= 60 && afterCnt[1].Load() >= 60
	})
	cancel()
	wg.Wait()
	t.Logf("%d acknowledged updates (%d when node 2 was killed), %d conflicts (409), %d unknown outcomes, %d requests on node 2 cut by the kill",
		len(acks), beforeKill, conflict.Load(), unknown.Load(), cut.Load())

	// One accept per version; each client's accepted versions increase.
	byVersion := map[string]map[int64]clusterAck{}
	lastOf := map[string]clusterAck{}
	for _, a := range acks {
		if byVersion[a.thing] == nil {
			byVersion[a.thing] = map[int64]clusterAck{}
		}
		if prev, dup := byVersion[a.thing][a.version]; dup {
			t.Errorf("%s version %d accepted twice: %+v and %+v", a.thing, a.version, prev, a)
		}
		byVersion[a.thing][a.version] = a
	}
	mu.Lock()
	for _, a := range acks { // in each client's order (a client appends its own acks in order)
		if prev, ok := lastOf[a.client]; ok && a.version <= prev.version {
			t.Errorf("%s: accepted version %d after %d", a.client, a.version, prev.version)
		}
		lastOf[a.client] = a
	}
	mu.Unlock()

	// Every acknowledged update is in history, read through each living
	// node, and the current document holds each client's last value.
	for _, n := range []int{0, 1} {
		for _, th := range things {
			entries := historyEntries(t, hc, nodes[n], th)
			lost := 0
			for v, a := range byVersion[th] {
				e, ok := entries[v]
				if !ok || e[a.client] != float64(a.seq) {
					lost++
					if lost <= 5 {
						t.Errorf("node %d: %s version %d (acknowledged to %s, seq %d, after kill %v) reads %v", n, th, v, a.client, a.seq, a.afterKill, e)
					}
				}
			}
			if lost > 0 {
				t.Errorf("node %d: %s: %d of %d acknowledged updates lost", n, th, lost, len(byVersion[th]))
			}
			doc := currentReported(t, hc, nodes[n], th)
			for c, a := range lastOf {
				if a.thing != th {
					continue
				}
				if got, _ := doc[c].(float64); got < float64(a.seq) {
					t.Errorf("node %d: %s reported %s = %v, last acknowledged %d", n, th, c, doc[c], a.seq)
				}
			}
		}
	}
}

func getVersion(hc *http.Client, p *umbraProc, thing string) (int64, error) {
	resp, err := hc.Get(p.httpURL() + "/things/" + thing + "/shadow")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("get %s: HTTP %d %s", thing, resp.StatusCode, b)
	}
	var d struct {
		Version int64 `json:"version"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return 0, err
	}
	return d.Version, nil
}

func postShadow(hc *http.Client, p *umbraProc, thing, body string) (int, string, error) {
	resp, err := hc.Post(p.httpURL()+"/things/"+thing+"/shadow", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// historyEntries returns the reported state after each version in the
// shadow's history, read from node p.
func historyEntries(t *testing.T, hc *http.Client, p *umbraProc, thing string) map[int64]map[string]any {
	t.Helper()
	resp, err := hc.Get(p.httpURL() + "/things/" + thing + "/shadow/history?limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("history of %s: HTTP %d %s", thing, resp.StatusCode, b)
	}
	var h struct {
		Entries []struct {
			Version int64 `json:"version"`
			State   struct {
				Reported map[string]any `json:"reported"`
			} `json:"state"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("history of %s: %v", thing, err)
	}
	if len(h.Entries) == 1000 {
		t.Fatalf("history of %s has 1000 entries: the oldest may be cut off", thing)
	}
	out := map[int64]map[string]any{}
	for _, e := range h.Entries {
		out[e.Version] = e.State.Reported
	}
	return out
}

func currentReported(t *testing.T, hc *http.Client, p *umbraProc, thing string) map[string]any {
	t.Helper()
	resp, err := hc.Get(p.httpURL() + "/things/" + thing + "/shadow")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var d struct {
		State struct {
			Reported map[string]any `json:"reported"`
		} `json:"state"`
	}
	if resp.StatusCode != 200 {
		t.Fatalf("get %s: HTTP %d %s", thing, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return d.State.Reported
}
