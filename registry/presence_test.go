package registry_test

import (
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/registry"
	"github.com/umbra-iot/umbra/registry/query"
)

// A connection reported after the connection that took it over (current
// false) stays in the history: the client's connectivity and the search
// index keep its successor. Two live reports out of version order (their
// sessions started concurrently) leave the later report current under a
// new, higher version.
func TestConnectionReportedAfterItsSuccessorStaysHistory(t *testing.T) {
	f := newFixture(t)
	f.thing("dev", nil)
	s := registry.Session{ClientID: "dev", Address: "10.0.0.1:1883", ProtocolVersion: 4}
	first, second := f.reg.Reserve("dev"), f.reg.Reserve("dev")
	if first != 1 || second != 2 {
		t.Fatalf("reserved %d, %d", first, second)
	}
	f.reg.ConnectedAs(s, second, true)
	l := f.reg.ConnectedAs(s, first, false)
	if ev := gjson.ParseBytes(f.pub.get("$aws/events/presence/connected/dev")); ev.Get("versionNumber").Int() != 1 {
		t.Fatalf("connected event of the taken-over connection: %s", ev.Raw)
	}
	f.reg.Disconnected(s, l, "DUPLICATE_CLIENTID")
	if c, _ := f.reg.Connectivity("dev"); !c.Connected || c.Version != 2 {
		t.Fatalf("connectivity %+v, want connected under version 2", c)
	}
	connected, err := query.Parse("connectivity.connected:true")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.reg.Search(connected, "", 10).Things; len(got) != 1 {
		t.Fatalf("index: connected things %v", got)
	}
	h, err := f.reg.ConnectivityHistory(ctx, "dev")
	if err != nil || len(h) != 3 || h[0].Version != 2 || !h[0].Connected || h[1].Version != 1 || h[1].Connected || !h[2].Connected {
		t.Fatalf("history %+v %v", h, err)
	}

	a, b := f.reg.Reserve("dev"), f.reg.Reserve("dev") // 3, 4
	f.reg.ConnectedAs(s, b, true)
	la := f.reg.ConnectedAs(s, a, true) // live, yet reserved before: renumbered
	if la.Version != 5 {
		t.Fatalf("renumbered to %d, want 5", la.Version)
	}
	if c, _ := f.reg.Connectivity("dev"); !c.Connected || c.Version != 5 {
		t.Fatalf("connectivity %+v", c)
	}
	if next := f.reg.Reserve("dev"); next != 6 {
		t.Fatalf("next reservation %d, want 6", next)
	}
}
