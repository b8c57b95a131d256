package broker_test

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Raw MQTT 3.1.1 over TLS, for attacks that need exact control over when
// each packet is written.

type rawMQTT struct {
	net.Conn
	r *bufio.Reader
}

func rawString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

func rawPacket(first byte, body []byte) []byte {
	n := len(body)
	out := []byte{first}
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		out = append(out, d)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

// rawConnectPacket is a 3.1.1 CONNECT; username and password are sent
// when not empty.
func rawConnectPacket(id, username, password string, clean bool) []byte {
	var flags byte
	if clean {
		flags |= 0x02
	}
	if username != "" {
		flags |= 0x80
	}
	if password != "" {
		flags |= 0x40
	}
	body := append(rawString("MQTT"), 4, flags, 0, 60)
	body = append(body, rawString(id)...)
	if username != "" {
		body = append(body, rawString(username)...)
	}
	if password != "" {
		body = append(body, rawString(password)...)
	}
	return rawPacket(0x10, body)
}

func rawSubscribePacket(packetID uint16, filter string, qos byte) []byte {
	body := binary.BigEndian.AppendUint16(nil, packetID)
	body = append(append(body, rawString(filter)...), qos)
	return rawPacket(0x82, body)
}

var rawDisconnectPacket = []byte{0xe0, 0}

// dialRawTLS dials and completes the TLS handshake (nothing MQTT yet).
func dialRawTLS(addr string, conf *tls.Config) (*rawMQTT, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return nil, err
	}
	return &rawMQTT{Conn: c, r: bufio.NewReader(c)}, nil
}

// read returns the next packet's first byte and body.
func (c *rawMQTT) read() (byte, []byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	first, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
		mult *= 128
	}
	body := make([]byte, n)
	_, err = io.ReadFull(c.r, body)
	return first, body, err
}

// connack sends CONNECT and returns the CONNACK return code.
func (c *rawMQTT) connack(connect []byte) (byte, error) {
	if _, err := c.Write(connect); err != nil {
		return 0, err
	}
	return c.readConnack()
}

func (c *rawMQTT) readConnack() (byte, error) {
	first, body, err := c.read()
	if err != nil {
		return 0, err
	}
	if first&0xf0 != 0x20 || len(body) < 2 {
		return 0, fmt.Errorf("want CONNACK, got packet 0x%02x", first)
	}
	return body[1], nil
}

// suback subscribes to one filter and returns the SUBACK code.
func (c *rawMQTT) suback(filter string) (byte, error) {
	if _, err := c.Write(rawSubscribePacket(7, filter, 1)); err != nil {
		return 0, err
	}
	for {
		first, body, err := c.read()
		if err != nil {
			return 0, err
		}
		if first&0xf0 == 0x90 && len(body) >= 3 {
			return body[2], nil
		}
	}
}
