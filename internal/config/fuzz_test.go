package config

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Seeds shared by the fuzz targets; testdata/fuzz/<Target>/ holds more,
// including inputs that once failed.
var decodeSeeds = []string{
	"",
	"data_dir: ./umbra-data\n",
	"mqtt:\n  addr: 127.0.0.1:1883\n  ws_addr: \"off\"\n  connect_timeout: 10s\n  max_packet_size: 131072\n",
	"shadow:\n  converge: keep\n  strict: true\n  max_depth: 6\n  history_versions: -1\n  tombstone_ttl: 48h\n",
	"log:\n  level: debug\n  format: json\n",
	"mqtt:\n  adress: typo\n",
	"mqtt:\n  connect_timeout: soon\n",
	"mqtt: [1, 2]\n",
	"data_dir: {a: b}\n",
	"mqtt:\n  max_packet_size: 99999999999999999999999\n",
	"mqtt:\n  connect_timeout: -5s\n",
	"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n",
	"---\ndata_dir: one\n---\ndata_dir: two\n",
	"\tdata_dir: tab\n",
	"data_dir: \"\\xff\"\n",
	"limits:\n  shadow_rate: .inf\n",
	"auth:\n  enabled: true\n  api_keys:\n    - name: ops\n      sha256: abc\n      role: admin\n",
	strings.Repeat("[", 1000),
}

// FuzzDecode: Decode never panics, its errors say where, and what it
// accepts survives a round trip (encode, decode, encode gives the same
// text) and converts to broker options and a logger without panicking.
func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Decode(bytes.NewReader(data))
		if err != nil {
			msg := err.Error()
			if msg == "" {
				t.Fatal("empty error message")
			}
			if strings.Contains(msg, "not found in type") && !strings.Contains(msg, "line ") {
				t.Fatalf("unknown key without its line: %v", err)
			}
			return
		}
		out, err := yaml.Marshal(file)
		if err != nil {
			t.Fatalf("accepted configuration does not encode: %v", err)
		}
		again, err := Decode(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("re-decoding %q: %v", out, err)
		}
		out2, err := yaml.Marshal(again)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the configuration:\n%s\n---\n%s (%v)", out, out2, err)
		}
		_ = file.Options()
		_, _ = file.Logger(io.Discard)
	})
}

// FuzzEnv: any value of any UMBRA_* variable is either applied or refused
// with an error naming the variable; never a panic.
func FuzzEnv(f *testing.F) {
	for i, v := range []string{"", "10s", "-1", "true", "many", "127.0.0.1:0", "1e400", "0x10", " 5", "9223372036854775808", "\x00", "off"} {
		f.Add(uint(i), v)
	}
	names := EnvNames()
	f.Fuzz(func(t *testing.T, which uint, value string) {
		name := names[which%uint(len(names))]
		var file File
		err := applyEnv(&file, []string{name + "=" + value})
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("error for %s=%q does not name the variable: %v", name, value, err)
			}
			return
		}
		_ = file.Options()
		_, _ = file.Logger(io.Discard)
	})
}
