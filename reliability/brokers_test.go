package reliability

import (
	"reflect"

	"github.com/umbra-iot/umbra/broker"
)

// noShadowLimits turns off the per-thing request rate and the per-principal
// in-flight cap (AWS IoT's 20/s and 10), when the broker has them, so that a
// test can put many concurrent requests on a few shadows. Tests that model
// outcomes still accept a 429 (it changes nothing).
//
// It goes through reflection on purpose: the limits are being added to
// broker.Options while this suite is written, and the suite must build
// with and without them.
func noShadowLimits(o *broker.Options) {
	lim := reflect.ValueOf(o).Elem().FieldByName("Limits")
	if !lim.IsValid() || lim.Kind() != reflect.Struct {
		return
	}
	set := func(name string) {
		f := lim.FieldByName(name)
		if !f.IsValid() || !f.CanSet() {
			return
		}
		switch f.Kind() {
		case reflect.Float32, reflect.Float64:
			f.SetFloat(-1)
		case reflect.Int, reflect.Int32, reflect.Int64:
			f.SetInt(-1)
		}
	}
	set("ShadowRate")
	set("ShadowInFlight")
}
