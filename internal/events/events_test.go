package events

import (
	"testing"
)

func TestPublishFiltersAndNeverBlocks(t *testing.T) {
	var h Hub
	all := h.Subscribe(2, nil)
	onlyA := h.Subscribe(10, func(e Event) bool { return e.Thing == "a" })
	for _, th := range []string{"a", "b", "a", "c"} {
		h.PublishJSON("shadow", th, map[string]int{"v": 1})
	}
	if got := len(all.C); got != 2 || all.Dropped() != 2 || all.Dropped() != 0 {
		t.Fatalf("full subscriber: %d queued", got)
	}
	if len(onlyA.C) != 2 {
		t.Fatalf("filtered subscriber got %d", len(onlyA.C))
	}
	e := <-onlyA.C
	if e.Type != "shadow" || e.Thing != "a" || string(e.Data) != `{"v":1}` || e.Time == 0 {
		t.Fatalf("event %+v", e)
	}
	onlyA.Close()
	all.Close()
	if h.Subscribers() != 0 {
		t.Fatal("subscriptions left")
	}
}
