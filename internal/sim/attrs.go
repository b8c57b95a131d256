package sim

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Rings and their shares of the fleet (the seed's phased rollout).
const (
	RingCanary        = "canary"
	RingEarlyAdopters = "early_adopters"
	RingGeneral       = "general"
)

// unit maps (salt, id) to a number in [0, 1), the same on every run.
func unit(salt, id string) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(salt))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(id))
	// Mix the FNV output (its low bits are weak for short, similar keys).
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return float64(x>>11) / (1 << 53)
}

// RingShare is a deployment ring and the share of the fleet in it.
type RingShare struct {
	Name  string
	Share float64 // 0..1
}

// DefaultRings are the seed's rings: 1% canary, 10% early adopters; the
// rest of the fleet is general.
var DefaultRings = []RingShare{{RingCanary, 0.01}, {RingEarlyAdopters, 0.10}}

// Ring is the deployment ring of a device with the default rings: ~1%
// canary, ~10% early adopters, the rest general. It depends on the id only.
func Ring(id string) string { return RingOf(id, DefaultRings) }

// RingOf is the ring of a device among rings (in order; the devices left
// over are general). The same id always lands in the same ring, and growing
// a ring's share only moves devices into it.
func RingOf(id string, rings []RingShare) string {
	u, acc := unit("deployment_ring", id), 0.0
	for _, r := range rings {
		acc += r.Share
		if u < acc {
			return r.Name
		}
	}
	return RingGeneral
}

// ParseRings reads ring shares written as name=share,... where a share is a
// percentage (5%) or a fraction (0.05), e.g. "canary=5%,early_adopters=20%".
// The shares must add up to at most 100%; the rest of the fleet is general,
// which is therefore not listed.
func ParseRings(s string) ([]RingShare, error) {
	var out []RingShare
	total := 0.0
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, v, ok := strings.Cut(part, "=")
		name, v = strings.TrimSpace(name), strings.TrimSpace(v)
		if !ok || name == "" {
			return nil, fmt.Errorf("rings %q: %q is not name=share (e.g. canary=5%%)", s, part)
		}
		if name == RingGeneral {
			return nil, fmt.Errorf("rings %q: %s is the rest of the fleet; list only the other rings", s, RingGeneral)
		}
		if seen[name] {
			return nil, fmt.Errorf("rings %q: %s listed twice", s, name)
		}
		seen[name] = true
		share, err := parseShare(v)
		if err != nil {
			return nil, fmt.Errorf("rings %q: %s: %v", s, name, err)
		}
		total += share
		out = append(out, RingShare{name, share})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("rings %q: want name=share,... (e.g. canary=5%%,early_adopters=20%%)", s)
	}
	if total > 1+1e-9 {
		return nil, fmt.Errorf("rings %q: shares add up to %g%%, more than 100%%", s, total*100)
	}
	return out, nil
}

// parseShare reads a fraction (0.3) or a percentage (30%) in [0, 1].
func parseShare(v string) (float64, error) {
	pct := strings.HasSuffix(v, "%")
	r, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if pct {
		r /= 100
	}
	if err != nil || r < 0 || r > 1 {
		return 0, fmt.Errorf("%q is not a fraction in [0,1] or a percentage", v)
	}
	return r, nil
}

// HardwareRev is a device's board revision: A 10%, B 20%, C 30%, D 40%.
func HardwareRev(id string) string {
	switch u := unit("hardware_rev", id); {
	case u < 0.1:
		return "A"
	case u < 0.3:
		return "B"
	case u < 0.6:
		return "C"
	default:
		return "D"
	}
}

// Location is one of factory-A, factory-B, factory-C.
func Location(id string) string {
	return "factory-" + string(rune('A'+int(unit("location", id)*3)))
}

// CustomerID is one of cust-001 … cust-050.
func CustomerID(id string) string {
	n := 1 + int(unit("customer_id", id)*50)
	s := strconv.Itoa(n)
	for len(s) < 3 {
		s = "0" + s
	}
	return "cust-" + s
}

// Attributes are the registry tags of a device with the default rings: its
// ring, hardware revision, location and customer, then extra (which may
// override them).
func Attributes(id string, extra map[string]string) map[string]string {
	return attributes(id, DefaultRings, extra)
}

func attributes(id string, rings []RingShare, extra map[string]string) map[string]string {
	a := map[string]string{
		"deployment_ring": RingOf(id, rings),
		"hardware_rev":    HardwareRev(id),
		"location":        Location(id),
		"customer_id":     CustomerID(id),
	}
	for k, v := range extra {
		a[k] = v
	}
	return a
}
