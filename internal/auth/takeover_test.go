package auth

import "testing"

func TestMayTakeOver(t *testing.T) {
	a := &Authenticator{IsThing: func(n string) bool { return n == "dev-a" }}
	dev := Identity{Kind: Device, Name: "dev-a", ClientID: "dev-a"}
	svcA := Identity{Kind: Service, Name: "a", ClientID: "x"}
	svcB := Identity{Kind: Service, Name: "b", ClientID: "x"}
	granted := Identity{Kind: Service, Name: "b", ClientID: "dev-a"}
	for _, c := range []struct {
		name       string
		next, prev Identity
		want       bool
	}{
		{"same service", svcA, svcA, true},
		{"other service", svcB, svcA, false},
		{"device reclaims its id from a granted service", dev, granted, true},
		{"granted service takes the thing's session", granted, dev, true},
		{"session without identity", svcB, Nobody("x"), true},
		{"restored guess of an unregistered device", svcB, Identity{Kind: Device, Name: "x", ClientID: "x", Method: "restored"}, true},
		{"restored registered device", Identity{Kind: Service, Name: "b", ClientID: "dev-a"}, Identity{Kind: Device, Name: "dev-a", ClientID: "dev-a", Method: "restored"}, true},
		{"service over a live device with a non-thing id", svcB, Identity{Kind: Device, Name: "x", ClientID: "x"}, false},
	} {
		if got := a.MayTakeOver(c.next, c.prev); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
