package clusterkv_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/umbra-iot/umbra/internal/clusterkv"
	"github.com/umbra-iot/umbra/internal/natstest"
)

// BenchmarkUpdateKV measures read-modify-write transactions of three
// records on an R3 stream, from one node (its writes are serialised).
func BenchmarkUpdateKV(b *testing.B) {
	c := natstest.StartCluster(b, 3)
	s := openB(b, c, 0)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		err := s.UpdateKV(ctx, func(kv clusterkv.KV) error {
			n, _ := strconv.Atoi(string(kv.Get("c", "n")))
			_ = kv.Put("c", "n", []byte(strconv.Itoa(n+1)))
			_ = kv.Put("things", "t"+strconv.Itoa(i%1000), []byte(`{"attributes":{"site":"north"}}`))
			return kv.Put("members", "g\x00t"+strconv.Itoa(i%1000), nil)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViewKV measures a read that catches up with the stream first.
func BenchmarkViewKV(b *testing.B) {
	c := natstest.StartCluster(b, 3)
	s := openB(b, c, 1)
	for b.Loop() {
		if err := s.ViewKV(func(kv clusterkv.KV) error { _ = kv.Get("c", "n"); return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
