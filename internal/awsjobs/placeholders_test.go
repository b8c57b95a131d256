package awsjobs_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/umbra-iot/umbra/internal/awsjobs"
)

func TestPlaceholdersAndRender(t *testing.T) {
	doc := `{"b":{"url":"${umbra:artifact.url}","size":"${umbra:artifact.size}","n":"size ${umbra:artifact.size}, v${umbra:artifact.version}",
 "s":"${umbra:artifact.sha256}","sig":"${umbra:artifact.signature}"},"a":[1.50,-2e3,true,false,null,"\u0024{umbra:artifact.version}",{}],"aws":"${aws:iot:s3-presigned-url:x}","z":""}`
	names, err := awsjobs.Placeholders([]byte(doc))
	if err != nil || strings.Join(names, " ") != "artifact.sha256 artifact.signature artifact.size artifact.url artifact.version" {
		t.Fatalf("placeholders %v %v", names, err)
	}
	out, err := awsjobs.RenderDocument([]byte(doc), awsjobs.ArtifactValues{URL: "http://h/firmware/ab?thing=t&expires=1&token=<x>", SHA256: "ab", Size: 1500000, Version: "1.2.0", Signature: "c2ln"})
	want := `{"b":{"url":"http://h/firmware/ab?thing=t&expires=1&token=<x>","size":1500000,"n":"size 1500000, v1.2.0","s":"ab","sig":"c2ln"},"a":[1.50,-2e3,true,false,null,"1.2.0",{}],"aws":"${aws:iot:s3-presigned-url:x}","z":""}`
	if err != nil || string(out) != want {
		t.Fatalf("rendered\n%s (%v), want\n%s", out, err, want)
	}
	for _, bad := range []string{`{"a":"${umbra:artifact.md5}"}`, `{"a":"${umbra:artifact.url"}`, `{"${umbra:artifact.url}":1}`, `{"a":["${umbra:}"]}`} {
		if _, err := awsjobs.Placeholders([]byte(bad)); !errors.Is(err, awsjobs.ErrPlaceholder) {
			t.Errorf("%s: %v, want ErrPlaceholder", bad, err)
		}
	}
	if names, err := awsjobs.Placeholders([]byte(`{"a":"$","b":"${x}"}`)); err != nil || len(names) != 0 {
		t.Errorf("no placeholders: %v %v", names, err)
	}
}
