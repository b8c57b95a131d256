// Package testpki makes certificate authorities and certificates for tests
// (ECDSA P-256, crypto/x509), written as PEM files into a directory.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	File    string // PEM file of the CA certificate
}

// Pair is an issued certificate with its key.
type Pair struct {
	CertFile, KeyFile string
	TLS               tls.Certificate
}

var serial int64

func next() *big.Int { serial++; return big.NewInt(time.Now().UnixNano() + serial) }

// NewCA creates a CA valid now, writing dir/name.pem.
func NewCA(tb testing.TB, dir, name string) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          next(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.File = filepath.Join(dir, name+".pem")
	write(tb, ca.File, ca.CertPEM)
	return ca
}

// Server issues a server certificate for 127.0.0.1 and localhost.
func (ca *CA) Server(tb testing.TB, dir string) Pair {
	tb.Helper()
	return ca.issue(tb, dir, "server", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "umbra-test-server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(24 * time.Hour),
	})
}

// Client issues a client certificate with that CN (and DNS SANs), valid
// from notBefore to notAfter.
func (ca *CA) Client(tb testing.TB, dir, cn string, sans []string, notBefore, notAfter time.Time) Pair {
	tb.Helper()
	return ca.issue(tb, dir, "client-"+cn+"-"+next().String(), &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    sans,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
	})
}

func (ca *CA) issue(tb testing.TB, dir, name string, tmpl *x509.Certificate) Pair {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl.SerialNumber = next()
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	p := Pair{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+".key")}
	write(tb, p.CertFile, certPEM)
	write(tb, p.KeyFile, keyPEM)
	if p.TLS, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Pool is a cert pool holding the CA, for clients to trust the server.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func write(tb testing.TB, path string, data []byte) {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}
