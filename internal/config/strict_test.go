package config

import (
	"strings"
	"testing"
)

// The file is decoded strictly: nothing in it may be silently ignored. A
// second YAML document (after "---") is not read at all today, so an unknown
// key or even invalid YAML there passes unnoticed.
func TestDecodeRejectsASecondDocument(t *testing.T) {
	for _, in := range []string{
		"data_dir: one\n---\ndata_dir: two\nbogus: 1\n",
		"data_dir: x\n--- [\n",
	} {
		if f, err := Decode(strings.NewReader(in)); err == nil {
			t.Errorf("Decode(%q) = data_dir %q, no error; want an error: only one document is read, the rest would be ignored", in, f.DataDir)
		}
	}
}
