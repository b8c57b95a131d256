//go:build !unix

package sim

// RaiseFileLimit does nothing on this system.
func RaiseFileLimit(n uint64) (uint64, error) { return n, nil }
