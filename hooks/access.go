package hooks

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Open is the access hook used when no authentication is configured: every
// well-formed client may connect, publish and subscribe. The broker only
// uses it on loopback listeners (see broker.Options).
//
// It still refuses client ids that cannot be stored or addressed safely: a
// NUL byte (forbidden by MQTT, and Umbra's key separator).
type Open struct{ mqtt.HookBase }

// ID implements mqtt.Hook.
func (h *Open) ID() string { return "umbra-open-access" }

// Provides implements mqtt.Hook.
func (h *Open) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnectAuthenticate implements mqtt.Hook.
func (h *Open) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return !strings.ContainsRune(cl.ID, 0)
}

// OnACLCheck implements mqtt.Hook.
func (h *Open) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool { return true }
