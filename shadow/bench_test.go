package shadow

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchDoc is a realistic stored shadow of about 1 KiB of state: a device's
// reported telemetry and configuration, and a couple of desired settings.
func benchDoc(b *testing.B) []byte {
	var r strings.Builder
	r.WriteString(`{"state":{"desired":{"led_is_on":true,"telemetry_interval":300,"cfg":{"mode":"eco","thresholds":[10,20,30]}},"reported":{`)
	r.WriteString(`"firmware_version":"2.1.3","led_is_on":false,"telemetry_interval":60,"cfg":{"mode":"eco","thresholds":[10,20,30]},`)
	for i := range 30 {
		r.WriteString(`"sensor_` + strconv.Itoa(i) + `":{"v":` + strconv.Itoa(i*7) + `.25,"ok":true},`)
	}
	r.WriteString(`"location":"factory-A"}}}`)
	res := mustUpdate(b, Current{}, r.String(), Options{Converge: ConvergeKeep})
	if d, rep := DocState(res.Doc); len(d)+len(rep) < 1000 || len(d)+len(rep) > 1400 {
		b.Fatalf("state is %d bytes, want about 1 KiB", len(d)+len(rep))
	}
	return res.Doc
}

func benchUpdate(b *testing.B, payload string) {
	doc := benchDoc(b)
	p := []byte(payload)
	now := time.Unix(1700000000, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		req, _, _, err := ParseUpdate(p, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Update(Current{Doc: doc}, req, now, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdate: a device reports one sensor (parse + merge + replies).
func BenchmarkUpdate(b *testing.B) {
	benchUpdate(b, `{"state":{"reported":{"sensor_3":{"v":22.5}}},"clientToken":"5f2b9c1e-7d4a-4b8e-9a31-2c6f0d8e4b17"}`)
}

// BenchmarkUpdateDesiredWithDelta: an app changes a setting; the delta is
// recomputed and published.
func BenchmarkUpdateDesiredWithDelta(b *testing.B) {
	benchUpdate(b, `{"state":{"desired":{"telemetry_interval":120,"cfg":{"mode":"turbo"}}},"clientToken":"app-1"}`)
}

func BenchmarkGet(b *testing.B) {
	doc := benchDoc(b)
	now := time.Unix(1700000000, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if _, err := Get(Current{Doc: doc}, "tok", true, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseTopic(b *testing.B) {
	topics := []string{
		"$aws/things/esp32-factory-A-0042/shadow/update",
		"$aws/things/esp32-factory-A-0042/shadow/name/config/update/delta",
		"$aws/things/esp32-factory-A-0042/telemetry",
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ParseTopic(topics[i%len(topics)])
	}
}
