// Package brokertest runs a complete Umbra in-process for tests: MQTT over
// TCP and WebSocket, the HTTP API and shadows, on random loopback ports,
// with a temporary data directory. It is meant for users' CI as much as for
// Umbra's own tests:
//
//	func TestDevice(t *testing.T) {
//		srv := brokertest.Start(t)
//		client := connect(srv.MQTTURL()) // tcp://127.0.0.1:NNNNN
//		...
//	}
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/internal/store"
)

// Server is a running in-process Umbra.
type Server struct {
	*broker.Broker
	// Options are the options it was started with (DataDir included), for
	// starting another broker on the same data, as a restart does.
	Options broker.Options
	// owned is set when New created the data directory (Close removes it).
	owned bool
}

// LoopbackOptions returns options for a broker on random loopback ports
// storing its data in dir.
func LoopbackOptions(dir string) broker.Options {
	return broker.Options{
		DataDir:  dir,
		MQTTAddr: "127.0.0.1:0",
		WSAddr:   "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0",
	}
}

// Start starts a broker for tb with a t.TempDir() data directory and shuts
// it down when the test ends. modify, when given, adjusts the options first.
func Start(tb testing.TB, modify ...func(*broker.Options)) *Server {
	tb.Helper()
	opts := LoopbackOptions(tb.TempDir())
	for _, m := range modify {
		m(&opts)
	}
	return StartWith(tb, opts)
}

// StartWith starts a broker with exactly opts and shuts it down when the
// test ends.
func StartWith(tb testing.TB, opts broker.Options) *Server {
	tb.Helper()
	s, err := start(opts)
	if err != nil {
		tb.Fatalf("brokertest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("brokertest: shutdown: %v", err)
		}
		// Cleanups run last-registered first, so a broker restarted on the
		// same directory has closed the file by now.
		if err := CheckStore(opts.DataDir); err != nil {
			tb.Errorf("brokertest: %v", err)
		}
	})
	return s
}

// CheckStore runs the database consistency check (bbolt's tx.Check of every
// page, then Umbra's own: buckets, schema, session records) on the store in
// dataDir, which no broker may hold open. Every brokertest server runs it
// after shutdown, so a test that leaves a damaged file fails.
func CheckStore(dataDir string) error {
	path := filepath.Join(dataDir, store.FileName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil // the test removed its data: nothing to check
	}
	rep, err := store.Check(path)
	if err != nil {
		return fmt.Errorf("store check of %s: %w", path, err)
	}
	if !rep.OK() {
		return fmt.Errorf("store check of %s: %d problems: %s", path, len(rep.Problems), strings.Join(rep.Problems, "; "))
	}
	return nil
}

// New starts a broker outside a test (for examples, tools and TestMain),
// in a new temporary directory that Close removes.
func New() (*Server, error) {
	dir, err := os.MkdirTemp("", "umbra-brokertest-")
	if err != nil {
		return nil, err
	}
	s, err := start(LoopbackOptions(dir))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s.owned = true
	return s, nil
}

func start(opts broker.Options) (*Server, error) {
	b, err := broker.New(opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		return nil, err
	}
	return &Server{Broker: b, Options: opts}, nil
}

// Close shuts the broker down (waiting up to 10 s) and, for a server made
// by New, removes its data directory.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.Shutdown(ctx)
	if s.owned {
		_ = os.RemoveAll(s.Options.DataDir)
	}
	return err
}

// Restart shuts s down and starts a new broker on the same data directory
// (on new random ports). The new one is shut down when the test ends.
func (s *Server) Restart(tb testing.TB) *Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		tb.Fatalf("brokertest: shutdown before restart: %v", err)
	}
	return StartWith(tb, s.Options)
}

// MQTTURL is the MQTT-over-TCP URL, as paho wants it (ssl:// with TLS).
func (s *Server) MQTTURL() string { return s.scheme("tcp", "ssl") + "://" + s.MQTTAddr() }

// WSURL is the MQTT-over-WebSocket URL.
func (s *Server) WSURL() string { return s.scheme("ws", "wss") + "://" + s.WSAddr() + "/mqtt" }

// HTTPURL is the base URL of the HTTP API.
func (s *Server) HTTPURL() string { return s.scheme("http", "https") + "://" + s.HTTPAddr() }

func (s *Server) scheme(plain, secure string) string {
	if s.TLS() {
		return secure
	}
	return plain
}

func (s *Server) String() string {
	return fmt.Sprintf("umbra(mqtt=%s ws=%s http=%s data=%s)", s.MQTTAddr(), s.WSAddr(), s.HTTPAddr(), s.Options.DataDir)
}
