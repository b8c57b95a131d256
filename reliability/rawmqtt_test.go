package reliability

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Raw MQTT 3.1.1 packets, for clients that misbehave on purpose and for
// cheap clients by the thousand.

const (
	pktConnect     = 0x10
	pktConnack     = 0x20
	pktPublish     = 0x30
	pktPuback      = 0x40
	pktSubscribe   = 0x82 // type 8 with the required flags 0010
	pktSuback      = 0x90
	pktPingreq     = 0xc0
	pktDisconnect  = 0xe0
	pktTypeMask    = 0xf0
	protocolLevel4 = 4
)

// remainingLength encodes n as MQTT's variable-length integer.
func remainingLength(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

// packet assembles a fixed header and body.
func packet(first byte, body []byte) []byte {
	return append(append([]byte{first}, remainingLength(len(body))...), body...)
}

// connectPacket is a CONNECT for MQTT 3.1.1 with the given client id.
func connectPacket(id string, keepalive uint16, clean bool) []byte {
	return connectPacketProto("MQTT", protocolLevel4, id, keepalive, clean)
}

func connectPacketProto(proto string, level byte, id string, keepalive uint16, clean bool) []byte {
	var flags byte
	if clean {
		flags |= 0x02
	}
	body := mqttString(proto)
	body = append(body, level, flags)
	body = binary.BigEndian.AppendUint16(body, keepalive)
	body = append(body, mqttString(id)...)
	return packet(pktConnect, body)
}

// publishPacket is a PUBLISH; packetID is used only for qos > 0.
func publishPacket(topic string, payload []byte, qos byte, packetID uint16) []byte {
	body := mqttString(topic)
	if qos > 0 {
		body = binary.BigEndian.AppendUint16(body, packetID)
	}
	body = append(body, payload...)
	return packet(pktPublish|qos<<1, body)
}

func subscribePacket(packetID uint16, filter string, qos byte) []byte {
	body := binary.BigEndian.AppendUint16(nil, packetID)
	body = append(body, mqttString(filter)...)
	body = append(body, qos)
	return packet(pktSubscribe, body)
}

// rawPacket is one packet read from the broker.
type rawPacket struct {
	first byte
	body  []byte
}

func (p rawPacket) kind() byte { return p.first & pktTypeMask }

func (p rawPacket) String() string {
	return fmt.Sprintf("packet 0x%02x (%d bytes)", p.first, len(p.body))
}

// readPacket reads one packet.
func readPacket(r *bufio.Reader) (rawPacket, error) {
	first, err := r.ReadByte()
	if err != nil {
		return rawPacket{}, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return rawPacket{}, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return rawPacket{}, errors.New("malformed remaining length from broker")
		}
		mult *= 128
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return rawPacket{first, body}, err
}

// rawConn is a TCP connection speaking raw MQTT.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(addr string) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: c, r: bufio.NewReader(c)}, nil
}

// next reads the next packet, waiting at most d.
func (c *rawConn) next(d time.Duration) (rawPacket, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	return readPacket(c.r)
}

// connect sends CONNECT and expects a successful CONNACK.
func (c *rawConn) connect(id string, keepalive uint16, clean bool) error {
	if _, err := c.Write(connectPacket(id, keepalive, clean)); err != nil {
		return err
	}
	p, err := c.next(10 * time.Second)
	if err != nil {
		return fmt.Errorf("CONNACK: %w", err)
	}
	if p.kind() != pktConnack || len(p.body) != 2 || p.body[1] != 0 {
		return fmt.Errorf("CONNACK: got %s %x", p, p.body)
	}
	return nil
}

// closedByPeer reports whether err means the broker closed the connection
// (as opposed to our own read deadline expiring).
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// waitClosed reads until the broker closes the connection, collecting what
// it sent first. It gives up after d (a safety bound).
func (c *rawConn) waitClosed(d time.Duration) ([]rawPacket, error) {
	deadline := time.Now().Add(d)
	var got []rawPacket
	for {
		_ = c.SetReadDeadline(deadline)
		p, err := readPacket(c.r)
		if err != nil {
			if closedByPeer(err) {
				return got, nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return got, fmt.Errorf("still open after %v", d)
			}
			return got, err
		}
		got = append(got, p)
	}
}

// connectPacketAuth is a CONNECT for MQTT 3.1.1 with a username and password.
func connectPacketAuth(id, user, pass string, keepalive uint16, clean bool) []byte {
	flags := byte(0xc0) // username and password
	if clean {
		flags |= 0x02
	}
	body := mqttString("MQTT")
	body = append(body, protocolLevel4, flags)
	body = binary.BigEndian.AppendUint16(body, keepalive)
	body = append(body, mqttString(id)...)
	body = append(body, mqttString(user)...)
	body = append(body, mqttString(pass)...)
	return packet(pktConnect, body)
}
