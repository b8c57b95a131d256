package reliability

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/shadow"
)

// TestGracefulShutdownDrainsInFlightHTTPWrites: Broker.Shutdown (SIGTERM
// for `umbra serve`) "drains in-flight HTTP requests and shadow commits".
// Many HTTP clients write two shadows (so that most requests wait for the
// shadow's lock) while the broker shuts down; every request must get a 200
// (and then be durable) or fail to reach the broker, and none may be
// answered 500 Internal service failure. Three rounds, because which
// requests are in flight at the shutdown is a matter of timing.
func TestGracefulShutdownDrainsInFlightHTTPWrites(t *testing.T) {
	const writers = 32
	for round := range 3 {
		srv := brokertest.Start(t, noShadowLimits, func(o *broker.Options) { o.WSAddr = broker.Off })
		base := srv.HTTPURL()
		type result struct{ ok, failed500, other, transport int }
		results := make([]result, writers)
		lastAcked := make([]int64, writers)
		refOf := func(w int) shadow.Ref { return shadow.Ref{Thing: fmt.Sprintf("drain-%d-%d", round, w%2)} }
		var wg sync.WaitGroup
		var started sync.WaitGroup
		started.Add(writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ref := refOf(w)
				for seq := 1; ; seq++ {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					code, body, err := httpDo(ctx, "POST", shadowURL(base, ref, ""), fmt.Appendf(nil, `{"state":{"reported":{"seq":%d}}}`, seq))
					cancel()
					if seq == 5 {
						started.Done()
					}
					switch {
					case err != nil:
						results[w].transport++
						if seq < 5 {
							started.Done()
						}
						return // the broker is gone
					case code == 200:
						results[w].ok++
						lastAcked[w] = gjson.GetBytes(body, "version").Int()
					case code == 500:
						results[w].failed500++
					default:
						results[w].other++
						t.Errorf("writer %d: %d %s", w, code, body)
					}
				}
			}()
		}
		started.Wait() // every writer has had a few requests answered
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("round %d: shutdown: %v", round, err)
		}
		cancel()
		wg.Wait()
		var total result
		for _, r := range results {
			total.ok += r.ok
			total.failed500 += r.failed500
			total.other += r.other
			total.transport += r.transport
		}
		t.Logf("round %d: %d accepted, %d answered 500, %d refused or cut off by the shutdown", round, total.ok, total.failed500, total.transport)
		if total.failed500 > 0 {
			t.Errorf("round %d: %d in-flight HTTP updates were answered 500 Internal service failure by a graceful shutdown instead of being drained", round, total.failed500)
		}
		// Whatever was accepted is durable.
		after := brokertest.StartWith(t, srv.Options)
		for w := range writers {
			if lastAcked[w] == 0 {
				continue
			}
			code, doc := mustHTTP(t, "GET", shadowURL(after.HTTPURL(), refOf(w), ""), nil)
			if v := gjson.GetBytes(doc, "version").Int(); code != 200 || v < lastAcked[w] {
				t.Errorf("round %d writer %d: version %d acknowledged, %d stored after restart (%d %s)", round, w, lastAcked[w], v, code, doc)
			}
		}
	}
}
