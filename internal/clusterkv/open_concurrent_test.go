package clusterkv_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/clusterkv"
	"github.com/umbra-iot/umbra/internal/natstest"
)

// Three nodes starting together on a fresh cluster (the README's
// `umbra serve --cluster` example starts three at once) all open the
// store: each creates the stream concurrently, through its own server.
// Requests that race the creation or the leader election can go
// unanswered: without retries every node failed with "stream umbra_meta:
// context deadline exceeded" (5 of 6 runs of the README example); with
// only the creation retried, 2 of 3 rounds here failed with "stream info:
// context deadline exceeded" after 30 s.
func TestOpenConcurrentlyOnFreshCluster(t *testing.T) {
	for round := range 3 {
		c := natstest.StartCluster(t, 3)
		var wg sync.WaitGroup
		errs := make([]error, 3)
		took := make([]time.Duration, 3)
		for i := range 3 {
			wg.Go(func() {
				nc := c.Connect(i, nats.MaxReconnects(-1))
				js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(10*time.Second))
				if err != nil {
					errs[i] = err
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				start := time.Now()
				s, err := clusterkv.Open(ctx, js, clusterkv.Config{Node: "n" + strconv.Itoa(i), Dir: t.TempDir()})
				took[i] = time.Since(start)
				if err != nil {
					errs[i] = err
					return
				}
				_ = s.Close()
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: node %d: Open after %s: %v", round, i, took[i].Round(time.Millisecond), err)
			}
		}
		t.Logf("round %d: Open took %v", round, took)
		c.Shutdown()
	}
}
