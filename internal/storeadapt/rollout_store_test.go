package storeadapt_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/umbra-iot/umbra/internal/clusterkv"
	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
)

func openKV(t *testing.T, c *natstest.Cluster, i int) *clusterkv.Store {
	t.Helper()
	js, err := jetstream.New(c.Connect(i))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := clusterkv.Open(ctx, js, clusterkv.Config{Node: fmt.Sprint(i), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// loaded is what Load returns, as text.
func loaded(t *testing.T, s storeadapt.RolloutStore) (rollouts map[string]string, devices map[string]int, jobs map[string]string) {
	t.Helper()
	rollouts, devices, jobs = map[string]string{}, map[string]int{}, map[string]string{}
	err := s.Load(func(id string, header []byte, devs [][]byte) error {
		rollouts[id], devices[id] = string(header), len(devs)
		return nil
	}, func(id string, job []byte) error {
		jobs[id] = string(job)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return
}

// The rollout store saves and loads the same on bbolt and on the shared
// store, where a rollout saved on one node loads on another, including one
// with more device records than a cluster transaction may write.
func TestRolloutStoreBboltAndCluster(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	db, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	a, b := openKV(t, c, 0), openKV(t, c, 2)
	for _, tc := range []struct {
		name       string
		save, load storeadapt.RolloutStore
	}{
		{"bbolt", storeadapt.RolloutStore{DB: db}, storeadapt.RolloutStore{DB: db}},
		{"cluster", storeadapt.RolloutStore{KV: storeadapt.ClusterKV{S: a}}, storeadapt.RolloutStore{KV: storeadapt.ClusterKV{S: b}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			devs := map[string][]byte{}
			for i := range 2*storeadapt.RolloutChunk + 7 {
				devs[fmt.Sprintf("dev-%05d", i)] = []byte(`{"state":"pending"}`)
			}
			if err := tc.save.SaveRollout(ctx, "r1", []byte(`{"id":"r1"}`), devs); err != nil {
				t.Fatal(err)
			}
			if err := tc.save.SaveRollout(ctx, "r2", []byte(`{"id":"r2"}`), map[string][]byte{"x": []byte("{}")}); err != nil {
				t.Fatal(err)
			}
			if err := tc.save.SaveJob(ctx, "j1", []byte(`{"job":1}`)); err != nil {
				t.Fatal(err)
			}
			r, d, j := loaded(t, tc.load)
			if fmt.Sprint(r) != `map[r1:{"id":"r1"} r2:{"id":"r2"}]` || d["r1"] != len(devs) || d["r2"] != 1 || j["j1"] != `{"job":1}` {
				t.Fatalf("loaded %v %v %v", r, d, j)
			}
		})
	}
}
