package keyed

import (
	"sync"
	"testing"
)

func TestSerialisesOneKeyAndForgetsFreeKeys(t *testing.T) {
	var m Mutex[string]
	var wg sync.WaitGroup
	var counts [2]int // one counter per key: different memory, different locks
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := m.Lock([]string{"a", "b"}[i%2])
			counts[i%2]++ // a data race unless Lock serialises each key
			unlock()
		}()
	}
	wg.Wait()
	if counts[0] != 100 || counts[1] != 100 {
		t.Fatalf("counts %v", counts)
	}
	if m.Len() != 0 {
		t.Fatalf("%d keys kept after every unlock", m.Len())
	}
}
