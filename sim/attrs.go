package sim

import (
	"hash/fnv"
	"strconv"
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

// Ring is the deployment ring of a device: ~1% canary, ~10% early adopters,
// the rest general. It depends on the id only.
func Ring(id string) string {
	switch u := unit("deployment_ring", id); {
	case u < 0.01:
		return RingCanary
	case u < 0.11:
		return RingEarlyAdopters
	default:
		return RingGeneral
	}
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

// Attributes are the registry tags of a device: its ring, hardware
// revision, location and customer, then extra (which may override them).
func Attributes(id string, extra map[string]string) map[string]string {
	a := map[string]string{
		"deployment_ring": Ring(id),
		"hardware_rev":    HardwareRev(id),
		"location":        Location(id),
		"customer_id":     CustomerID(id),
	}
	for k, v := range extra {
		a[k] = v
	}
	return a
}
