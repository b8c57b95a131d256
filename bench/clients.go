package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// connectPaho connects one paho client (MQTT 3.1.1, clean session).
func (r *runner) connectPaho(id string, i int, handler paho.MessageHandler) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(r.mqttURL).SetClientID(id).
		SetProtocolVersion(4).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(60 * time.Second).
		SetConnectTimeout(r.opts.Timeout).SetWriteTimeout(r.opts.Timeout).
		SetOrderMatters(true).
		SetDefaultPublishHandler(handler)
	if r.opts.Username != "" {
		o.SetUsername(r.opts.Username).SetPassword(r.opts.Password)
	}
	if d := r.dialer(i); d != nil {
		o.SetDialer(d)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(r.opts.Timeout) {
		return nil, fmt.Errorf("connect %s: timed out", id)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", id, err)
	}
	return c, nil
}

func subscribe(c paho.Client, timeout time.Duration, filters ...string) error {
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = 1
	}
	tok := c.SubscribeMultiple(m, nil)
	if !tok.WaitTimeout(timeout) {
		return errors.New("subscribe: timed out")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code >= 0x80 {
				return fmt.Errorf("subscribe %s refused (0x%02x)", f, code)
			}
		}
	}
	return nil
}

// dialer is the dialer for client i: its source address in turn, when
// source addresses are set.
func (r *runner) dialer(i int) *net.Dialer {
	if len(r.dialers) == 0 {
		return nil
	}
	return r.dialers[i%len(r.dialers)]
}

// rawConn is a minimal MQTT 3.1.1 client for idle connections: CONNECT,
// optionally one SUBSCRIBE, then nothing (keepalive 0), so that a process
// can hold 100k of them with a socket and a few hundred bytes each.
type rawConn struct{ net.Conn }

func (r *runner) dialRaw(id string, i int, subscribeTo string) (*rawConn, error) {
	u, err := url.Parse(r.mqttURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "tcp" && u.Scheme != "mqtt" {
		return nil, fmt.Errorf("connections scenario needs a tcp:// broker, not %s", u.Scheme)
	}
	d := r.dialer(i)
	if d == nil {
		d = &net.Dialer{Timeout: r.opts.Timeout}
	}
	nc, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	c := &rawConn{nc}
	_ = nc.SetDeadline(time.Now().Add(r.opts.Timeout))
	if _, err := nc.Write(connectPacket(id, r.opts.Username, r.opts.Password)); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 16)
	hdr, body, err := readPacket(br)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("CONNACK: %w", err)
	}
	if hdr>>4 != 2 || len(body) != 2 || body[1] != 0 {
		nc.Close()
		return nil, fmt.Errorf("CONNACK refused: % x", body)
	}
	if subscribeTo != "" {
		if _, err := nc.Write(subscribePacket(1, subscribeTo)); err != nil {
			nc.Close()
			return nil, err
		}
		hdr, body, err := readPacket(br)
		if err != nil || hdr>>4 != 9 || len(body) < 3 || body[2] >= 0x80 {
			nc.Close()
			return nil, fmt.Errorf("SUBACK: % x %v", body, err)
		}
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

func appendLength(b []byte, n int) []byte {
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

// connectPacket is an MQTT 3.1.1 CONNECT: clean session, keepalive 0.
func connectPacket(id, user, pass string) []byte {
	flags := byte(0x02)
	if user != "" {
		flags |= 0x80
		if pass != "" {
			flags |= 0x40
		}
	}
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, flags, 0, 0}
	body = appendString(body, id)
	if user != "" {
		body = appendString(body, user)
		if pass != "" {
			body = appendString(body, pass)
		}
	}
	return append(appendLength([]byte{0x10}, len(body)), body...)
}

func subscribePacket(packetID uint16, filter string) []byte {
	body := []byte{byte(packetID >> 8), byte(packetID)}
	body = appendString(body, filter)
	body = append(body, 1) // QoS 1
	return append(appendLength([]byte{0x82}, len(body)), body...)
}

// readPacket reads one MQTT packet: its first byte and its body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	hdr, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return hdr, body, err
}
