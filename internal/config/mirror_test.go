package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// programmaticOnly are broker.Options fields that a configuration file
// cannot set, each for a reason: they hold code or are for tests.
var programmaticOnly = []string{
	"Logger",            // built from log.level/log.format (File.Logger)
	"RolloutClock",      // a fake clock for tests
	"RolloutInterval",   // engine pacing, for tests
	"EphemeralSessions", // CI brokers and benchmarks (umbra bench), not a serving setting
	"UnsafeNoSync",      // benchmarks only: shows what durability costs
}

// fill sets every settable leaf of v to a non-zero value (one element in
// every slice), so that a field the conversion forgets stays zero.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	}
}

// zeroLeaves lists the paths of v's leaves that are zero.
func zeroLeaves(v reflect.Value, path string, out *[]string) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			break
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.IsExported() {
				zeroLeaves(v.Field(i), strings.TrimPrefix(path+"."+f.Name, "."), out)
			}
		}
		return
	case reflect.Slice:
		if v.Len() > 0 {
			zeroLeaves(v.Index(0), path+"[0]", out)
			return
		}
	}
	if v.IsZero() {
		*out = append(*out, path)
	}
}

// The file mirrors broker.Options by hand (its YAML layout groups settings
// differently), so this test keeps the mirror whole: with every field of
// the file set, every field of the options is set, except the few that no
// file can set. A new broker option without a configuration key, or a key
// that Options forgets to pass on, fails here.
func TestEveryBrokerOptionHasAConfigurationKey(t *testing.T) {
	var f File
	fill(reflect.ValueOf(&f).Elem())
	var missing []string
	zeroLeaves(reflect.ValueOf(f.Options()), "", &missing)
	missing = slices.DeleteFunc(missing, func(p string) bool {
		return slices.Contains(programmaticOnly, strings.SplitN(p, ".", 2)[0])
	})
	if len(missing) > 0 {
		t.Fatalf("broker options no configuration key reaches (add the key, or list the field in programmaticOnly with the reason):\n  %s", strings.Join(missing, "\n  "))
	}
}
