package clusterstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/clusterstore"
	"github.com/umbra-iot/umbra/internal/natstest"
)

// Three nodes starting together on a fresh cluster all open the bucket:
// requests that reach a server before the new stream has a leader go
// unanswered, and Open retries them rather than wait out its deadline.
func TestOpenFromThreeNodesAtOnce(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() {
			js, err := jetstream.New(c.Connect(i))
			if err != nil {
				errs[i] = err
				return
			}
			_, errs[i] = clusterstore.Open(ctx, js, clusterstore.Config{})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: %v", i, err)
		}
	}
}
