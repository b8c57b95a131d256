// Command embedder is a program in another module that embeds Umbra's broker,
// the way a CI suite does. TestModuleFromAProxy builds it against Umbra
// fetched from a module proxy and runs it.
//
// It checks Umbra's Mochi patch 4 (tempfork/mochi/UMBRA-PATCHES.md) through
// the public API only: a subscriber that stops reading must not hold up a
// publisher whose QoS 1 messages it subscribed to. Upstream Mochi hands out
// packet ids under the lock that a blocked socket write holds, so with a
// one-hour write timeout the publisher's PUBACKs stop once the stalled
// subscriber's socket buffers are full. Exit status 0 means patched
// behaviour.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/umbra-iot/umbra/broker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "embedder:", err)
		os.Exit(1)
	}
	fmt.Println("ok: publisher not held up by a stalled subscriber")
}

func run() error {
	dir, err := os.MkdirTemp("", "umbra-embedder-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b, err := broker.New(broker.Options{
		DataDir:      dir,
		MQTTAddr:     "127.0.0.1:0",
		WSAddr:       broker.Off,
		HTTPAddr:     broker.Off,
		WriteTimeout: time.Hour, // only patch 4 keeps the publisher going
		// Enough in-flight room that deliveries to the stalled subscriber
		// keep asking for packet ids once its socket buffers are full
		// (at the default, they are dropped before that point).
		MaxInflight:       60000,
		EphemeralSessions: true,
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer b.Shutdown(ctx)

	stalled, err := dial(b.MQTTAddr(), "stalled-subscriber")
	if err != nil {
		return err
	}
	defer stalled.Close()
	_ = stalled.Conn.(*net.TCPConn).SetReadBuffer(4096)
	topic := "embedder/busy"
	body := append(u16(1), str(topic)...)
	if err := stalled.send(0x82, append(body, 1)); err != nil {
		return err
	}
	if kind, _, err := stalled.next(); err != nil || kind != 0x90 {
		return fmt.Errorf("SUBACK: kind %#x, %v", kind, err)
	}
	// From here on the subscriber never reads again.

	pub, err := dial(b.MQTTAddr(), "publisher")
	if err != nil {
		return err
	}
	defer pub.Close()
	payload := make([]byte, 4096)
	const messages = 4000 // 16 MiB: far beyond the socket buffers
	for i := range messages {
		id := uint16(i%65535 + 1)
		if err := pub.send(0x32, append(append(str(topic), u16(id)...), payload...)); err != nil {
			return err
		}
		kind, ack, err := pub.next()
		if err != nil {
			return fmt.Errorf("publish %d of %d: no PUBACK (%v): the publisher is held up by the stalled subscriber, as with upstream Mochi", i+1, messages, err)
		}
		if kind != 0x40 || len(ack) < 2 || binary.BigEndian.Uint16(ack) != id {
			return fmt.Errorf("publish %d: got packet %#x %x, want PUBACK for id %d", i+1, kind, ack, id)
		}
	}
	return nil
}

type conn struct {
	net.Conn
	r *bufio.Reader
}

func dial(addr, clientID string) (*conn, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: nc, r: bufio.NewReader(nc)}
	// CONNECT, MQTT 3.1.1, clean session, keep alive 60 s.
	connect := append(append(str("MQTT"), 4, 0x02), u16(60)...)
	if err := c.send(0x10, append(connect, str(clientID)...)); err != nil {
		return nil, err
	}
	if kind, ack, err := c.next(); err != nil || kind != 0x20 || len(ack) != 2 || ack[1] != 0 {
		return nil, fmt.Errorf("CONNACK for %s: kind %#x %x, %v", clientID, kind, ack, err)
	}
	return c, nil
}

func (c *conn) send(header byte, body []byte) error {
	pkt := []byte{header}
	for n := len(body); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		pkt = append(pkt, b)
		if n == 0 {
			break
		}
	}
	_, err := c.Write(append(pkt, body...))
	return err
}

// next reads one packet, waiting at most 10 s.
func (c *conn) next() (byte, []byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	header, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		mult *= 128
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil, err
	}
	return header & 0xf0, body, nil
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func str(s string) []byte { return append(u16(uint16(len(s))), s...) }
