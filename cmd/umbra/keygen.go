package main

import (
	"flag"
	"fmt"
	"io"

	"golang.org/x/crypto/bcrypt"

	"github.com/umbra-iot/umbra/internal/auth"
)

// keygen prints a fresh secret with the two hashed forms the configuration
// takes: sha256 for auth.api_keys, bcrypt for auth.services.
func keygen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("umbra keygen", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: umbra keygen\n\nPrint a new random secret with its sha256 (auth.api_keys) and bcrypt (auth.services) hashes.\n")
	}
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	secret := auth.NewSecret()
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), auth.SecretCost)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "secret:          %s\n", secret)
	fmt.Fprintf(stdout, "sha256:          %s   # auth.api_keys[].sha256\n", auth.SHA256Hex(secret))
	fmt.Fprintf(stdout, "password_bcrypt: %s   # auth.services[].password_bcrypt\n", hash)
	fmt.Fprintln(stdout, "Keep the secret; Umbra stores only the hashes.")
	return nil
}
