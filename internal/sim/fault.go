package sim

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// FaultKind is what goes wrong.
type FaultKind string

const (
	// FailUpdate makes an OTA update to the matching version fail during
	// download: the device reports ota_status "failed" and stays on its
	// firmware.
	FailUpdate FaultKind = "fail-update"
	// CrashLoop makes a device that updated to the matching version crash
	// and reboot every Fault.Delay (reset_reason "panic"), forever.
	CrashLoop FaultKind = "crash-loop"
	// NeverReturn makes a device go silent at the reboot of an update to the
	// matching version: it never reconnects (a bricked device).
	NeverReturn FaultKind = "never-return"
	// Slow makes a device take Fault.Delay before acting on a delta, and
	// download updates four times more slowly.
	Slow FaultKind = "slow"
)

// Fault is one fault-injection rule. It hits Rate of the devices whose tags
// match Tags (all of them) and, for the OTA faults, only updates to Version
// ("" means any version). Which devices it hits is decided by a hash of the
// device id, the rule's position and Config.Seed: the same on every run.
type Fault struct {
	Kind    FaultKind
	Version string            // target version (OTA faults); "" any
	Tags    map[string]string // device attributes that must all match
	Rate    float64           // fraction of matching devices, 0..1 (default 1)
	Delay   time.Duration     // Slow: extra delay; CrashLoop: uptime before each crash
}

// ParseFault reads a rule written as kind[:key=value,...], where the keys
// version, rate and delay are the rule's fields and any other key is a tag
// to match:
//
//	fail-update:version=1.1,hardware_rev=D,rate=0.3   1.1 fails on 30% of rev D
//	crash-loop:version=1.2,rate=0.05,delay=20s
//	never-return:version=1.2,deployment_ring=canary,rate=0.5
//	slow:rate=0.1,delay=5s
//
// rate accepts a fraction (0.3) or a percentage (30%).
func ParseFault(s string) (Fault, error) {
	kind, rest, _ := strings.Cut(strings.TrimSpace(s), ":")
	f := Fault{Kind: FaultKind(kind), Rate: 1}
	switch f.Kind {
	case FailUpdate, CrashLoop, NeverReturn, Slow:
	default:
		return f, fmt.Errorf("fault %q: unknown kind %q (want fail-update, crash-loop, never-return or slow)", s, kind)
	}
	if rest != "" {
		for _, kv := range strings.Split(rest, ",") {
			k, v, ok := strings.Cut(kv, "=")
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if !ok || k == "" {
				return f, fmt.Errorf("fault %q: %q is not key=value", s, kv)
			}
			switch k {
			case "version":
				f.Version = v
			case "rate":
				r, err := parseShare(v)
				if err != nil {
					return f, fmt.Errorf("fault %q: rate %q is not a fraction in [0,1] or a percentage", s, v)
				}
				f.Rate = r
			case "delay":
				d, err := time.ParseDuration(v)
				if err != nil || d < 0 {
					return f, fmt.Errorf("fault %q: delay %q: want a duration such as 5s", s, v)
				}
				f.Delay = d
			default:
				if f.Tags == nil {
					f.Tags = map[string]string{}
				}
				f.Tags[k] = v
			}
		}
	}
	if f.Delay == 0 {
		switch f.Kind {
		case Slow:
			f.Delay = 5 * time.Second
		case CrashLoop:
			f.Delay = 30 * time.Second
		}
	}
	return f, nil
}

// String is the rule in ParseFault's syntax.
func (f Fault) String() string {
	parts := []string{}
	if f.Version != "" {
		parts = append(parts, "version="+f.Version)
	}
	for k, v := range f.Tags {
		parts = append(parts, k+"="+v)
	}
	parts = append(parts, "rate="+strconv.FormatFloat(f.Rate, 'g', -1, 64))
	if f.Delay > 0 {
		parts = append(parts, "delay="+f.Delay.String())
	}
	return string(f.Kind) + ":" + strings.Join(parts, ",")
}

// hits reports whether rule number i applies to device id (with attributes
// attrs) for an update to version ("" when not about an update).
func (f Fault) hits(i int, seed int64, id string, attrs map[string]string, version string) bool {
	if f.Version != "" && f.Version != version {
		return false
	}
	for k, v := range f.Tags {
		if attrs[k] != v {
			return false
		}
	}
	return unit("fault/"+strconv.Itoa(i)+"/"+strconv.FormatInt(seed, 10), id) < f.Rate
}

// compareVersions compares dotted version strings numerically part by part
// ("1.10" > "1.9", "1.0" == "1.0.0"); non-numeric parts compare as strings.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		x, y := "0", "0"
		if i < len(as) {
			x = as[i]
		}
		if i < len(bs) {
			y = bs[i]
		}
		xn, err1 := strconv.Atoi(x)
		yn, err2 := strconv.Atoi(y)
		switch {
		case err1 == nil && err2 == nil:
			if xn != yn {
				if xn < yn {
					return -1
				}
				return 1
			}
		case x != y:
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}
