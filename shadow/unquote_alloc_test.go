package shadow

import "testing"

// unquoteSink makes the result escape, as a parsed member name does.
var unquoteSink string

// TestUnquoteWellKnownNamesNoAlloc pins that the document format's member
// names, parsed from every update and every stored document, are shared
// rather than copied, and that other strings still decode to fresh copies.
func TestUnquoteWellKnownNamesNoAlloc(t *testing.T) {
	for _, name := range []string{"state", "desired", "reported", "delta", "metadata", "timestamp", "version", "clientToken"} {
		raw := []byte(`"` + name + `"`)
		if n := testing.AllocsPerRun(100, func() { unquoteSink = unquote(raw) }); n != 0 {
			t.Errorf("unquote(%s): %v allocs, want 0", raw, n)
		}
		if unquoteSink != name {
			t.Errorf("unquote(%s) = %q", raw, unquoteSink)
		}
	}
	raw := []byte(`"temp"`)
	s := unquote(raw)
	raw[1] = 'X' // the parsed payload's buffer may be reused
	if s != "temp" {
		t.Fatalf("unquote copied %q, want temp", s)
	}
	if got := unquote([]byte(`"st\u0061te"`)); got != "state" {
		t.Fatalf("escaped name = %q, want state", got)
	}
}
