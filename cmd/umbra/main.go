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

const usage = `Umbra: an MQTT broker with AWS-compatible device shadows for ESP32 fleets.

Usage:
  umbra serve [flags]    run the broker (umbra serve -h lists the flags)
  umbra keygen           print a new random secret and its hashes (API keys, service passwords)
  umbra sim [flags]      simulate a fleet of ESP32 devices against a broker (umbra sim -h)
  umbra bench [flags]    measure throughput, latency and memory (umbra bench -h)
  umbra version          print the version

`

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stdout, stderr, env)
	case "keygen":
		err = keygen(args[1:], stdout)
	case "sim":
		err = simCmd(ctx, args[1:], stdout, stderr, env)
	case "bench":
		err = benchCmd(ctx, args[1:], stdout, stderr, env)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "umbra", versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "umbra: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
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
