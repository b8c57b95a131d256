package broker_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// rawClient speaks MQTT packet by packet, so a test can see exactly what
// the broker puts on the wire (a DISCONNECT, a DUP flag, a PUBREL instead
// of a PUBLISH) and choose which acknowledgements to withhold.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	v    byte // protocol version: 4 (3.1.1) or 5
}

// rawConnect dials addr (host:port; tlsConf may be nil) and sends CONNECT
// for id; modify may adjust the packet. It returns the client and the
// CONNACK.
func rawConnect(t testing.TB, addr string, tlsConf *tls.Config, v byte, id string, clean bool, modify ...func(*packets.Packet)) (*rawClient, packets.Packet) {
	t.Helper()
	c := rawDial(t, addr, tlsConf, v)
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: v,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: id,
			Clean:            clean,
			Keepalive:        60,
		},
	}
	if v == 5 && !clean {
		pk.Properties.SessionExpiryInterval = 3600
		pk.Properties.SessionExpiryIntervalFlag = true
	}
	for _, m := range modify {
		m(&pk)
	}
	c.send(pk)
	ack := c.next()
	if ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("%s: expected CONNACK, got %s", id, packets.PacketNames[ack.FixedHeader.Type])
	}
	return c, ack
}

func rawDial(t testing.TB, addr string, tlsConf *tls.Config, v byte) *rawClient {
	t.Helper()
	var conn net.Conn
	var err error
	if tlsConf != nil {
		conn, err = tls.Dial("tcp", addr, tlsConf)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), v: v}
}

func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.v
	if pk.Mods.MaxSize == 0 {
		pk.Mods.MaxSize = 1 << 28
	}
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	default:
		c.t.Fatalf("rawClient cannot send %s", packets.PacketNames[pk.FixedHeader.Type])
	}
	if err != nil {
		c.t.Fatalf("encode %s: %v", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatalf("write %s: %v", packets.PacketNames[pk.FixedHeader.Type], err)
	}
}

// read reads the next packet, waiting at most d.
func (c *rawClient) read(d time.Duration) (packets.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	hb, err := c.r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	var pk packets.Packet
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	pk.ProtocolVersion = c.v
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

// next returns the next packet or fails the test.
func (c *rawClient) next() packets.Packet {
	c.t.Helper()
	pk, err := c.read(mt.Wait)
	if err != nil {
		c.t.Fatalf("reading a packet: %v", err)
	}
	return pk
}

// expectClosed reads until the broker closes the connection and returns
// every packet it sent first.
func (c *rawClient) expectClosed() []packets.Packet {
	c.t.Helper()
	var got []packets.Packet
	for {
		pk, err := c.read(mt.Wait)
		if err == nil {
			got = append(got, pk)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("the broker did not close the connection within %v (got %d packets)", mt.Wait, len(got))
		}
		return got
	}
}

func (c *rawClient) subscribe(id uint16, filter string, qos byte) packets.Packet {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: id,
		Filters: packets.Subscriptions{{Filter: filter, Qos: qos}}})
	for {
		pk := c.next()
		if pk.FixedHeader.Type == packets.Suback {
			return pk
		}
	}
}

func (c *rawClient) publish(id uint16, topic string, qos byte, payload string) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: id,
		TopicName: topic, Payload: []byte(payload)})
}

func (c *rawClient) ack(typ byte, id uint16) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: id})
}

func (c *rawClient) close() { c.conn.Close() }

// hostPort is the host:port of an MQTT URL.
func hostPort(url string) string {
	for i := 0; i+2 < len(url); i++ {
		if url[i:i+3] == "://" {
			return url[i+3:]
		}
	}
	return url
}

func dialTCP(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, mt.Wait) }
