// Command umbra is the Umbra broker and its command-line client.
//
//	umbra serve [flags]   run the broker (MQTT, WebSocket, HTTP API)
//	umbra version         print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Environ())
	stop()
	os.Exit(code)
}

func usageText() string {
	return `Umbra: an MQTT broker with AWS-compatible device shadows for ESP32 fleets.

Usage:
  umbra serve [flags]    run the broker (umbra serve -h lists the flags)
  umbra keygen           print a new random secret and its hashes (API keys, service passwords)
  umbra sim [flags]      simulate a fleet of ESP32 devices against a broker (umbra sim -h)
  umbra bench [flags]    measure throughput, latency and memory (umbra bench -h)
  umbra version          print the version
  umbra db check|backup|compact|salvage   database maintenance (umbra db -h)

Client (talks to the REST API; --server/UMBRA_SERVER, --api-key/UMBRA_API_KEY,
or ~/.config/umbra/cli.yaml; -o json|yaml|wide picks the output, --json = -o json):
` + clientUsage() + `
Exit codes: 0 ok, 1 the server answered with an error, 2 usage error,
3 the server cannot be reached.

`
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText())
		return 2
	}
	if err, ok := runClient(ctx, args, stdout, stderr, env); ok {
		return exitCode(err, stderr)
	}
	var err error
	switch args[0] {
	case "completion":
		err = completion(args[1:], stdout)
	case "serve":
		err = serve(ctx, args[1:], stdout, stderr, env)
	case "keygen":
		err = keygen(args[1:], stdout)
	case "sim":
		err = simCmd(ctx, args[1:], stdout, stderr, env)
	case "bench":
		err = benchCmd(ctx, args[1:], stdout, stderr, env)
	case "db":
		err = dbCmd(ctx, args[1:], stdout, stderr, env)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "umbra", versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText())
		return 0
	default:
		fmt.Fprintf(stderr, "umbra: unknown command %q%s\n\n%s", args[0], didYouMean(args[0], allNouns()), usageText())
		return 2
	}
	return exitCode(err, stderr)
}

// exitCode prints err and returns the exit code for it: 0 ok, 1 error
// (a server-side one for client commands), 2 usage, 3 server unreachable.
func exitCode(err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var unreachable unreachableError
	if errors.As(err, &unreachable) {
		fmt.Fprintf(stderr, "umbra: %v\n", err)
		return 3
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "umbra: %v\n", err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "umbra: %v\n", err)
		return 1
	}
	return 0
}

// parseFlags parses a subcommand's flags: -h gives flag.ErrHelp (exit 0),
// a bad flag or, unless takesArgs, any argument is a usage error (exit 2).
func parseFlags(fs *flag.FlagSet, args []string, takesArgs bool) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return usageError{err}
	}
	if !takesArgs && fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", fs.Name(), fs.Args())}
	}
	return nil
}

// usageError is a mistake in the command line (exit code 2).
type usageError struct{ error }

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
