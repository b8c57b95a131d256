package reliability

import (
	"encoding/binary"
	"testing"

	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

const (
	pktPubrec   = 0x50
	pktPubrel   = 0x62 // type 6 with the required flags 0010
	pktPubcomp  = 0x70
	pktPingresp = 0xd0
)

// TestQoS2ExactlyOnceAcrossKill9 (issue 14 item 6, done-when): a QoS 2
// message published to an offline persistent subscriber is delivered exactly
// once although `umbra serve` is killed with SIGKILL three times: after the
// publisher's PUBCOMP (the queued message must survive), after the
// subscriber's PUBREC/PUBREL exchange (the flow must resume with PUBREL,
// never the PUBLISH with DUP=1 [MQTT-4.3.3]) and after its PUBCOMP.
func TestQoS2ExactlyOnceAcrossKill9(t *testing.T) {
	bin := buildUmbra(t)
	dir := t.TempDir()
	p := startUmbra(t, bin, dir)
	const id, topic, payload = "q2-kill-dev", "q2kill/t", "exactly once"

	dial := func(client string, clean bool) (*rawConn, bool) {
		t.Helper()
		c, err := dialRaw(p.mqttAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(connectPacket(client, 60, clean)); err != nil {
			t.Fatal(err)
		}
		pk, err := c.next(mt.Wait)
		if err != nil || pk.kind() != pktConnack || len(pk.body) != 2 || pk.body[1] != 0 {
			t.Fatalf("%s CONNACK: %v %x %v", client, pk, pk.body, err)
		}
		return c, pk.body[0] == 1
	}
	expect := func(c *rawConn, what string, kind byte, pid uint16) rawPacket {
		t.Helper()
		pk, err := c.next(mt.Wait)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if pk.first != kind && !(kind == pktPublish && pk.kind() == pktPublish) {
			t.Fatalf("want %s, got %v %x", what, pk, pk.body)
		}
		if pid != 0 && (len(pk.body) < 2 || binary.BigEndian.Uint16(pk.body) != pid) {
			t.Fatalf("%s: packet id %x, want %d", what, pk.body, pid)
		}
		return pk
	}
	ack := func(c *rawConn, kind byte, pid uint16) {
		t.Helper()
		if _, err := c.Write(packet(kind, binary.BigEndian.AppendUint16(nil, pid))); err != nil {
			t.Fatal(err)
		}
	}
	// nothingElse pings: the broker answers in order, so anything queued
	// comes before the PINGRESP. A PUBREL for pid is tolerated when
	// tolerateRel (resending PUBREL is allowed; it carries no message).
	nothingElse := func(c *rawConn, tolerateRel bool, pid uint16) {
		t.Helper()
		if _, err := c.Write([]byte{pktPingreq, 0}); err != nil {
			t.Fatal(err)
		}
		for {
			pk, err := c.next(mt.Wait)
			if err != nil {
				t.Fatalf("waiting for PINGRESP: %v", err)
			}
			switch {
			case pk.first == pktPingresp:
				return
			case tolerateRel && pk.first == pktPubrel && binary.BigEndian.Uint16(pk.body) == pid:
				ack(c, pktPubcomp, pid)
			default:
				t.Fatalf("expected nothing more, got %v %x (a PUBLISH here is a second delivery)", pk, pk.body)
			}
		}
	}

	// The subscriber subscribes at QoS 2 and goes away.
	sub, _ := dial(id, false)
	if _, err := sub.Write(subscribePacket(1, topic, 2)); err != nil {
		t.Fatal(err)
	}
	if pk := expect(sub, "SUBACK", pktSuback, 1); pk.body[2] != 2 {
		t.Fatalf("SUBACK %x", pk.body)
	}
	if _, err := sub.Write([]byte{pktDisconnect, 0}); err != nil {
		t.Fatal(err)
	}
	_, _ = sub.waitClosed(mt.Wait)

	// The publisher completes its QoS 2 flow; then the broker is killed.
	pub, _ := dial("q2-kill-pub", true)
	if _, err := pub.Write(publishPacket(topic, []byte(payload), 2, 9)); err != nil {
		t.Fatal(err)
	}
	expect(pub, "PUBREC", pktPubrec, 9)
	ack(pub, pktPubrel, 9)
	expect(pub, "PUBCOMP", pktPubcomp, 9)
	p.kill9(t)

	// 1: the queued message survives and is delivered, first time DUP=0.
	p = startUmbra(t, bin, dir)
	sub, present := dial(id, false)
	if !present {
		t.Fatal("session not present after kill -9")
	}
	pk := expect(sub, "the queued PUBLISH", pktPublish, 0)
	if qos := pk.first >> 1 & 3; qos != 2 {
		t.Fatalf("delivered at QoS %d", qos)
	}
	if pk.first&0x08 != 0 {
		t.Error("first delivery of the queued message marked DUP")
	}
	tl := int(binary.BigEndian.Uint16(pk.body))
	pid := binary.BigEndian.Uint16(pk.body[2+tl:])
	if got := string(pk.body[2+tl+2:]); string(pk.body[2:2+tl]) != topic || got != payload {
		t.Fatalf("delivered %q on %q", got, pk.body[2:2+tl])
	}
	ack(sub, pktPubrec, pid)
	expect(sub, "PUBREL", pktPubrel, pid)
	p.kill9(t) // the client has released the message; no PUBCOMP yet

	// 2: the flow resumes with PUBREL; the message is not sent again.
	p = startUmbra(t, bin, dir)
	sub, _ = dial(id, false)
	expect(sub, "PUBREL (not the PUBLISH again)", pktPubrel, pid)
	ack(sub, pktPubcomp, pid)
	nothingElse(sub, false, 0)
	p.kill9(t)

	// 3: after the PUBCOMP nothing is delivered again. The end of the flow
	// is written behind, so a kill right after it may bring the PUBREL back
	// (harmless, and allowed); never the PUBLISH.
	p = startUmbra(t, bin, dir)
	sub, _ = dial(id, false)
	nothingElse(sub, true, pid)
	p.stop(t)
}
