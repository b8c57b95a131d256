package config

import (
	"strings"
	"testing"
	"time"
)

func TestArtifactsSection(t *testing.T) {
	f, err := Decode(strings.NewReader("artifacts:\n  public_url: https://fw.example.com:8443\n  public_key_file: /etc/umbra/fw.pub\n  token_ttl: 2h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(&f, []string{"UMBRA_ARTIFACTS_MAX_SIZE=4194304"}); err != nil {
		t.Fatal(err)
	}
	a := f.Options().Artifacts
	if a.PublicURL != "https://fw.example.com:8443" || a.PublicKeyFile != "/etc/umbra/fw.pub" || a.TokenTTL != 2*time.Hour || a.MaxSize != 4<<20 {
		t.Fatalf("artifacts %+v", a)
	}
}
