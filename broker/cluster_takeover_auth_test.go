package broker_test

import (
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/internal/auth"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/natstest"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"
)

// With authentication on, one service cannot take over another service's
// session under a shared client id from another cluster node, as it cannot
// on one node (TestServiceCannotTakeOverAnotherServicesSession); the same
// service can; and once the session has ended (a clean session
// disconnects) the id is free for another principal again.
func TestClusterServiceCannotTakeOverAnotherServicesSession(t *testing.T) {
	const password = "cluster-service-password"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	rules := auth.Rules{Publish: []string{"apps/{clientid}/#"}, Subscribe: []string{"apps/{clientid}/#"}}
	nc := natstest.StartCluster(t, 3)
	nodes := startClusterNodes(t, nc, 3, func(_ int, o *broker.Options) {
		o.Auth = broker.AuthOptions{Enabled: true, Services: []auth.ServiceConfig{
			{Name: "limited", PasswordBcrypt: string(hash), Rules: rules},
			{Name: "dashboard", PasswordBcrypt: string(hash), Rules: rules},
		}}
	})

	holder := mt.Connect(t, nodes[0].MQTTURL(), "shared-1", withSecret("limited", password), persistent)
	mine := holder.Subscribe("apps/shared-1/#", 1)
	if c, err := mt.TryConnect(nodes[2].MQTTURL(), "shared-1", withSecret("dashboard", password), persistent); err == nil {
		c.Disconnect(0)
		t.Fatal("another service took over the session from another node")
	}
	holder.Publish("apps/shared-1/x", 1, false, "still here")
	if m := mt.Next(t, mine); string(m.Payload) != "still here" || !holder.IsConnectionOpen() {
		t.Fatalf("holder lost its connection: %q", m.Payload)
	}

	// The same service, from another node: its session moves there.
	again := mt.Connect(t, nodes[1].MQTTURL(), "shared-1", withSecret("limited", password), persistent)
	if !again.IsConnectionOpen() {
		t.Fatal("the same service could not take its session to another node")
	}
	again.Disconnect(50)

	// A persistent session that expires frees its id too (MQTT 5, Session
	// Expiry Interval 1 s).
	login := func(user string) func(*packets.Packet) {
		return func(p *packets.Packet) {
			p.Connect.UsernameFlag, p.Connect.Username = true, []byte(user)
			p.Connect.PasswordFlag, p.Connect.Password = true, []byte(password)
		}
	}
	short, ack := rawConnect(t, hostPort(nodes[0].MQTTURL()), nil, 5, "shared-3", false, sessionExpiry(1), login("limited"))
	if ack.ReasonCode != 0 {
		t.Fatalf("persistent session of limited: CONNACK %#x", ack.ReasonCode)
	}
	short.close()
	waitFor(t, "the expired session's id to be free on another node", func() bool {
		c, ack := rawConnect(t, hostPort(nodes[2].MQTTURL()), nil, 5, "shared-3", true, login("dashboard"))
		c.close()
		return ack.ReasonCode == 0
	})

	// A clean session ends with its connection: the id is free again.
	clean := mt.Connect(t, nodes[1].MQTTURL(), "shared-2", withSecret("limited", password))
	clean.Disconnect(50)
	waitFor(t, "the ended session's id to be free on another node", func() bool {
		c, err := mt.TryConnect(nodes[2].MQTTURL(), "shared-2", withSecret("dashboard", password))
		if err != nil {
			return false
		}
		c.Disconnect(0)
		return true
	})
}
