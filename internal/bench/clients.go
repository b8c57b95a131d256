package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// connectPaho connects one paho client (MQTT 3.1.1, clean session).
func (r *runner) connectPaho(id string, i int, handler paho.MessageHandler) (paho.Client, error) {
	url := r.mqttURL
	if len(r.mqttURLs) > 0 {
		url = r.mqttURLs[i%len(r.mqttURLs)] // spread over the nodes
	}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).
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
	if r.tls != nil {
		o.SetTLSConfig(r.tls)
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
	d := r.dialer(i)
	if d == nil {
		d = &net.Dialer{Timeout: r.opts.Timeout}
	}
	nc, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	if r.tls != nil {
		// TLS as a device does it; the broker's side of it is part of
		// what the scenario measures per connection.
		tc := tls.Client(nc, r.tls)
		_ = tc.SetDeadline(time.Now().Add(r.opts.Timeout))
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS: %w", err)
		}
		nc = tc
	}
	c := &rawConn{nc}
	_ = nc.SetDeadline(time.Now().Add(r.opts.Timeout))
	// Paho's packet codec, without a paho client: a client costs tens of
	// kilobytes, a bare socket a few hundred bytes.
	connect := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	connect.ProtocolName, connect.ProtocolVersion, connect.CleanSession = "MQTT", 4, true
	connect.ClientIdentifier = id
	if r.opts.Username != "" {
		connect.UsernameFlag, connect.Username = true, r.opts.Username
		if r.opts.Password != "" {
			connect.PasswordFlag, connect.Password = true, []byte(r.opts.Password)
		}
	}
	if err := connect.Write(nc); err != nil {
		nc.Close()
		return nil, err
	}
	ack, err := packets.ReadPacket(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("CONNACK: %w", err)
	}
	if ca, ok := ack.(*packets.ConnackPacket); !ok || ca.ReturnCode != 0 {
		nc.Close()
		return nil, fmt.Errorf("CONNACK refused: %v", ack)
	}
	if subscribeTo != "" {
		sub := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
		sub.MessageID, sub.Topics, sub.Qoss = 1, []string{subscribeTo}, []byte{1}
		if err := sub.Write(nc); err != nil {
			nc.Close()
			return nil, err
		}
		ack, err := packets.ReadPacket(nc)
		sa, ok := ack.(*packets.SubackPacket)
		if err != nil || !ok || len(sa.ReturnCodes) != 1 || sa.ReturnCodes[0] >= 0x80 {
			nc.Close()
			return nil, fmt.Errorf("SUBACK: %v %v", ack, err)
		}
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}
