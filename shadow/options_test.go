package shadow

import (
	"strings"
	"testing"
)

func TestOptionsNormalize(t *testing.T) {
	got := Options{}.Normalize()
	want := Options{MaxDocumentBytes: 8192, MaxDepth: 6, MaxClientTokenBytes: 64, MaxPayloadBytes: 128 * 1024, Converge: ConvergePrune}
	if got != want {
		t.Errorf("zero Options normalise to %+v, want %+v", got, want)
	}
	custom := Options{MaxDocumentBytes: 30720, MaxDepth: 8, MaxClientTokenBytes: 10, MaxPayloadBytes: 1 << 20, Converge: ConvergeKeep, Strict: true}
	if got := custom.Normalize(); got != custom {
		t.Errorf("explicit options changed: %+v", got)
	}
	if got := (Options{MaxDepth: 1000}).Normalize().MaxDepth; got != MaxDepthLimit {
		t.Errorf("MaxDepth is not clamped: %d", got)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{}, {Converge: ConvergePrune}, {Converge: ConvergeKeep, MaxDepth: MaxDepthLimit}} {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Converge: "merge"}, `unknown converge mode "merge"`},
		{Options{MaxDepth: -1}, "MaxDepth -1"},
		{Options{MaxDepth: MaxDepthLimit + 1}, "MaxDepth 65"},
		{Options{MaxDocumentBytes: -1}, "MaxDocumentBytes"},
		{Options{MaxClientTokenBytes: -1}, "MaxClientTokenBytes"},
		{Options{MaxPayloadBytes: -1}, "MaxPayloadBytes"},
	} {
		err := c.o.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one mentioning %q", c.o, err, c.want)
		}
	}
}
