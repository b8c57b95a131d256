package auth

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// ErrRevoked refuses a client certificate on the denied list.
var ErrRevoked = errors.New("certificate revoked")

// DenyList is the set of denied client certificates, by serial number
// ("serial:" and hex digits, colons allowed) or by SHA-256 fingerprint of
// the DER certificate ("sha256:" and 64 hex digits, colons allowed). A
// serial is unique only per CA: with several client CAs prefer
// fingerprints.
type DenyList struct {
	serials      map[string]bool // lower-case hex, no leading zeros
	fingerprints map[[32]byte]bool
}

// ParseDenyList parses the configured entries.
func ParseDenyList(entries []string) (*DenyList, error) {
	d := &DenyList{serials: map[string]bool{}, fingerprints: map[[32]byte]bool{}}
	var errs []error
	for i, e := range entries {
		kind, value, _ := strings.Cut(strings.TrimSpace(e), ":")
		digits := strings.ToLower(strings.ReplaceAll(value, ":", ""))
		b, err := hex.DecodeString(digits)
		switch {
		case err != nil || len(b) == 0:
			errs = append(errs, fmt.Errorf("auth.denied_certificates[%d] %q: want serial:<hex> or sha256:<64 hex digits>", i, e))
		case strings.EqualFold(kind, "serial"):
			d.serials[new(big.Int).SetBytes(b).Text(16)] = true
		case strings.EqualFold(kind, "sha256") && len(b) == 32:
			d.fingerprints[[32]byte(b)] = true
		default:
			errs = append(errs, fmt.Errorf("auth.denied_certificates[%d] %q: want serial:<hex> or sha256:<64 hex digits>", i, e))
		}
	}
	return d, errors.Join(errs...)
}

// Denies reports whether cert is on the list.
func (d *DenyList) Denies(cert *x509.Certificate) bool {
	if d == nil || cert == nil {
		return false
	}
	if cert.SerialNumber != nil && d.serials[cert.SerialNumber.Text(16)] {
		return true
	}
	return d.fingerprints[sha256.Sum256(cert.Raw)]
}

// Len is the number of entries.
func (d *DenyList) Len() int {
	if d == nil {
		return 0
	}
	return len(d.serials) + len(d.fingerprints)
}
