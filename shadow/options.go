package shadow

import "fmt"

// ConvergeMode says what happens to a desired value once reported matches it.
type ConvergeMode string

const (
	// ConvergePrune (the default) removes every desired leaf whose value equals
	// the reported value at the same path, in the same update: the seed's
	// "shadow reaches convergence" step. After every update desired == delta.
	ConvergePrune ConvergeMode = "prune"
	// ConvergeKeep keeps desired as written, exactly like AWS IoT.
	ConvergeKeep ConvergeMode = "keep"
)

// AWS defaults (spec §5).
const (
	DefaultMaxDocumentBytes    = 8192
	DefaultMaxDepth            = 6
	DefaultMaxClientTokenBytes = 64
	DefaultMaxPayloadBytes     = 128 * 1024
)

// MaxDepthLimit bounds Options.MaxDepth. The walks over desired/reported are
// recursive and their depth is what this limit allows; it is also the height a
// stored document may have before it is treated as corrupt.
const MaxDepthLimit = 64

// Options are the per-deployment limits and behaviours. The zero value is AWS's
// defaults with Umbra's prune convergence and the shorthand accepted.
type Options struct {
	MaxDocumentBytes    int          // 0 → 8192: compact size of the merged state object {"desired":…,"reported":…}; metadata excluded
	MaxDepth            int          // 0 → 6: levels in desired/reported, the section object itself being level 1 (Greengrass rule)
	MaxClientTokenBytes int          // 0 → 64: bytes of the decoded clientToken
	MaxPayloadBytes     int          // 0 → 128 KiB: the request payload itself
	Converge            ConvergeMode // "" → prune
	Strict              bool         // reject the {"desired":…} shorthand with 400 "Missing required node: state"
}

// Normalize returns a copy with zero (or negative) limits replaced by the AWS
// defaults and an empty Converge replaced by prune. It never fails; Validate is
// for configuration time.
func (o Options) Normalize() Options {
	if o.MaxDocumentBytes <= 0 {
		o.MaxDocumentBytes = DefaultMaxDocumentBytes
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = DefaultMaxDepth
	}
	o.MaxDepth = min(o.MaxDepth, MaxDepthLimit)
	if o.MaxClientTokenBytes <= 0 {
		o.MaxClientTokenBytes = DefaultMaxClientTokenBytes
	}
	if o.MaxPayloadBytes <= 0 {
		o.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if o.Converge == "" {
		o.Converge = ConvergePrune
	}
	return o
}

// Validate reports options that Normalize would have to guess about: negative
// limits, a depth above MaxDepthLimit, an unknown converge mode.
func (o Options) Validate() error {
	switch {
	case o.MaxDocumentBytes < 0:
		return fmt.Errorf("shadow: MaxDocumentBytes %d is negative", o.MaxDocumentBytes)
	case o.MaxDepth < 0 || o.MaxDepth > MaxDepthLimit:
		return fmt.Errorf("shadow: MaxDepth %d is outside 0..%d", o.MaxDepth, MaxDepthLimit)
	case o.MaxClientTokenBytes < 0:
		return fmt.Errorf("shadow: MaxClientTokenBytes %d is negative", o.MaxClientTokenBytes)
	case o.MaxPayloadBytes < 0:
		return fmt.Errorf("shadow: MaxPayloadBytes %d is negative", o.MaxPayloadBytes)
	}
	switch o.Converge {
	case "", ConvergePrune, ConvergeKeep:
		return nil
	}
	return fmt.Errorf("shadow: unknown converge mode %q (want %q or %q)", o.Converge, ConvergePrune, ConvergeKeep)
}
