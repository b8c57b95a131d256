package shadow_test

import (
	"fmt"
	"time"

	"github.com/umbra-iot/umbra/shadow"
)

// The seed's flow on one shadow: an app asks for the LED on, the device is
// told through the delta, reports, and desired converges away.
func ExampleUpdate() {
	ref := shadow.Ref{Thing: "esp32-01"}
	var cur shadow.Current // no shadow yet
	for i, payload := range []string{
		`{"state":{"reported":{"led_is_on":false}}}`,
		`{"state":{"desired":{"led_is_on":true}},"clientToken":"app-1"}`,
		`{"state":{"reported":{"led_is_on":true}}}`,
	} {
		now := time.Unix(1700000000+int64(i), 0)
		req, token, hasToken, err := shadow.ParseUpdate([]byte(payload), shadow.Options{})
		var res shadow.UpdateResult
		if err == nil {
			res, err = shadow.Update(cur, req, now, shadow.Options{})
		}
		if err != nil {
			fmt.Println(ref.Topic(shadow.OpUpdate, shadow.SuffixRejected), string(shadow.Rejected(err, token, hasToken, now)))
			continue
		}
		cur = shadow.Current{Doc: res.Doc} // after the store committed res.Doc
		if res.Delta != nil {
			fmt.Println(ref.Topic(shadow.OpUpdate, shadow.SuffixDelta), string(res.Delta))
		}
	}
	fmt.Println(string(cur.Doc))
	// Output:
	// $aws/things/esp32-01/shadow/update/delta {"state":{"led_is_on":true},"metadata":{"led_is_on":{"timestamp":1700000001}},"version":2,"timestamp":1700000001,"clientToken":"app-1"}
	// {"state":{"reported":{"led_is_on":true}},"metadata":{"reported":{"led_is_on":{"timestamp":1700000002}}},"version":3,"timestamp":1700000002}
}

func ExampleParseTopic() {
	t, ok := shadow.ParseTopic("$aws/things/esp32-01/shadow/name/config/update")
	fmt.Println(ok, t.Ref, t.Op, t.Suffix == shadow.SuffixNone)
	fmt.Println(t.Ref.Topic(shadow.OpUpdate, shadow.SuffixAccepted))
	_, ok = shadow.ParseTopic("$aws/things/esp32-01/shadow/update/#")
	fmt.Println(ok)
	// Output:
	// true esp32-01/config update true
	// $aws/things/esp32-01/shadow/name/config/update/accepted
	// false
}
