package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/clusterstore"
	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/shadow"
)

// TestClusterLinearizable checks with porcupine, against shadowModel, the
// histories of concurrent get/update/delete requests on a few shadows from
// clients spread over three shadow.Services, each on the clustered store
// engine over its own connection to a different server of a 3-node NATS
// JetStream cluster (bucket R3). In the middle of the run one NATS server
// (the one the second service is connected to) is shut down and started
// again on its store. Requests answered 500 (JetStream unreachable or a
// timeout) may or may not have taken effect and are recorded as open-ended.
//
// The clients call the services directly, as the HTTP and MQTT faces do;
// TestClusterNodesLinearizable is the same check through Umbra nodes and
// MQTT clients.
// -lin.duration and -lin.restarts make the run longer and restart more.
func TestClusterLinearizable(t *testing.T) {
	seed := *linSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("lin seed %d", seed)
	c := natstest.StartCluster(t, 3)
	var svcs []*shadow.Service
	for i := range c.N() {
		js, err := jetstream.New(c.Connect(i))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := clusterstore.Open(ctx, js, clusterstore.Config{Timeout: 3 * time.Second})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		svcs = append(svcs, shadow.NewService(shadow.Config{Store: st}))
	}

	rec := &linRecorder{t0: time.Now()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const clientsPerService = 3
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fails int
	)
	for id := range len(svcs) * clientsPerService {
		svc := svcs[id%len(svcs)]
		w := &linWorker{t: t, id: id, rec: rec, rng: rand.New(rand.NewPCG(seed, uint64(id))), prefix: fmt.Sprintf("C-%d-", id)}
		wg.Go(func() {
			for ctx.Err() == nil {
				in := w.next()
				w.seq++
				req := shadow.Request{Ref: linRefs[in.ref], Op: in.op, Origin: shadow.OriginHTTP, Principal: w.prefix}
				if in.op == shadow.OpUpdate {
					req.Payload = w.payload(in, fmt.Sprintf("%s%d", w.prefix, w.seq))
				}
				call := rec.now()
				rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp := svc.Handle(rctx, req)
				rcancel()
				if resp.Err != nil && resp.Err.Code == 500 {
					// The write may still land after this answer (a
					// timed-out acknowledgement): open-ended.
					w.unknown(in, call)
					mu.Lock()
					fails++
					mu.Unlock()
					continue
				}
				out := parseOutput(t, in, resp.Err == nil, resp.Payload)
				rec.add(w.id, in, out, call, rec.now())
				w.observe(in, out)
			}
		})
	}
	n := max(*linRestarts, 1)
	for range n {
		<-time.After(*linDuration / time.Duration(n+1)) // the schedule: evenly spaced restarts
		c.Stop(1)
		c.Restart(1)
	}
	<-time.After(*linDuration / time.Duration(n+1))
	cancel()
	wg.Wait()
	t.Logf("%d requests answered 500 (during the NATS server restart)", fails)
	checkLinearizable(t, rec.ops)
}
