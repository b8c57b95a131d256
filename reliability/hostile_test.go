package reliability

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/shadow"
)

// hostileConnectTimeout is the broker's connect timeout in the catalogue:
// small, so that slow-loris and silent sockets are closed quickly, yet
// roomy enough for a real client on a loaded CI machine.
const hostileConnectTimeout = time.Second

// Shadows of the catalogue. hostile and hostile/cfg exist and must not
// change; hostile-absent and hostile/ghost never exist; hostile-scratch
// receives the hostile inputs that are valid (and are accepted).
const (
	hT       = "$aws/things/hostile/shadow"
	hCfg     = "$aws/things/hostile/shadow/name/cfg"
	hAbsent  = "$aws/things/hostile-absent/shadow"
	hScratch = "$aws/things/hostile-scratch/shadow"
	hBarrier = "$aws/things/hostile-barrier/shadow"
)

// mqttWant is the exact outcome of one MQTT request.
type mqttWant struct {
	reply   string // topic of the one reply; "" for none
	code    int    // rejected code; 0 for an accepted reply
	message string // rejected message, exactly
	token   string // the clientToken the reply must echo; "" when it must carry none
	// forwarded: the request itself reaches subscribers of its topic (AWS
	// forwards accepted requests; a topic that is not a shadow request is a
	// plain MQTT message).
	forwarded bool
}

func rejected(reply string, code int, message, token string) mqttWant {
	return mqttWant{reply: reply, code: code, message: message, token: token}
}

func ignored() mqttWant { return mqttWant{forwarded: true} }

type mqttCase struct {
	name    string
	topic   string
	payload string
	want    mqttWant
}

const (
	msgUTF8    = "Unsupported documented encoding; supported encoding is UTF-8"
	msgJSON    = "Invalid JSON"
	msgTooDeep = "JSON contains too many levels of nesting; maximum is 6"
	msgTooBig  = "The payload exceeds the maximum size allowed"
	msgVersion = "Invalid version"
	msgToken   = "Invalid clientToken"
	msgState   = "State node must be an object"
	msgMissing = "Missing required node: state"
)

func deepArrays(n int) string { return strings.Repeat("[", n) + "1" + strings.Repeat("]", n) }

func mqttCatalogue() []mqttCase {
	upd, updRej := hT+"/update", hT+"/update/rejected"
	rej := func(code int, msg, tok string) mqttWant { return rejected(updRej, code, msg, tok) }
	long65 := strings.Repeat("t", 65)
	return []mqttCase{
		// Encoding (spec §3.6 step 1: 415 before anything is parsed, so no token).
		{"invalid UTF-8 in a string", upd, "{\"state\":{\"reported\":{\"s\":\"\xff\"}},\"clientToken\":\"tk\"}", rej(415, msgUTF8, "")},
		{"invalid UTF-8 in a key", upd, "{\"state\":{\"reported\":{\"\xfe\":1}},\"clientToken\":\"tk\"}", rej(415, msgUTF8, "")},
		{"overlong UTF-8 encoding", upd, "{\"state\":{\"reported\":{\"s\":\"\xc0\xaf\"}},\"clientToken\":\"tk\"}", rej(415, msgUTF8, "")},
		{"UTF-8 encoded surrogate", upd, "{\"state\":{\"reported\":{\"s\":\"\xed\xa0\x80\"}},\"clientToken\":\"tk\"}", rej(415, msgUTF8, "")},
		{"truncated UTF-8 sequence at the end", upd, "{\"state\":{}}\xe2\x82", rej(415, msgUTF8, "")},
		// Syntax (step 2).
		{"truncated JSON", upd, `{"state":{"reported":`, rej(400, msgJSON, "")},
		{"empty update payload", upd, "", rej(400, msgJSON, "")},
		{"top-level array", upd, `[{"state":{}}]`, rej(400, msgJSON, "")},
		{"top-level string", upd, `"state"`, rej(400, msgJSON, "")},
		{"top-level null", upd, `null`, rej(400, msgJSON, "")},
		{"trailing garbage", upd, `{"state":{},"clientToken":"tk"}}`, rej(400, msgJSON, "")},
		{"NaN literal", upd, `{"state":{"reported":{"n":NaN}},"clientToken":"tk"}`, rej(400, msgJSON, "")},
		{"single-quoted strings", upd, `{'state':{'reported':{'a':1}}}`, rej(400, msgJSON, "")},
		{"raw control character in a string", upd, "{\"state\":{\"reported\":{\"s\":\"a\x01b\"}},\"clientToken\":\"tk\"}", rej(400, msgJSON, "")},
		{"raw NUL byte", upd, "{\"state\":{\"reported\":{\"s\":\"\x00\"}},\"clientToken\":\"tk\"}", rej(400, msgJSON, "")},
		{"byte order mark before the object", upd, "\xef\xbb\xbf{\"state\":{}}", rej(400, msgJSON, "")},
		{"100k unclosed brackets", upd, strings.Repeat("[", 100_000), rej(400, msgJSON, "")},
		{"duplicate top-level key", upd, `{"state":{"reported":{"a":1}},"state":{"reported":{"a":2}},"clientToken":"tk"}`, rej(400, msgJSON, "")},
		{"duplicate nested key", upd, `{"state":{"reported":{"a":1,"a":2}},"clientToken":"tk"}`, rej(400, msgJSON, "")},
		{"duplicate key after unescaping", upd, `{"state":{"reported":{"a":1,"\u0061":2}},"clientToken":"tk"}`, rej(400, msgJSON, "")},
		// Structure (steps 3-6); the token parsed, so it is echoed.
		{"missing state", upd, `{"clientToken":"tk","version":3}`, rej(400, msgMissing, "tk")},
		{"state is a string", upd, `{"state":"on","clientToken":"tk"}`, rej(400, msgState, "tk")},
		{"state is an array", upd, `{"state":[{"reported":{}}],"clientToken":"tk"}`, rej(400, msgState, "tk")},
		{"state is a number", upd, `{"state":1e999,"clientToken":"tk"}`, rej(400, msgState, "tk")},
		{"state is true", upd, `{"state":true,"clientToken":"tk"}`, rej(400, msgState, "tk")},
		{"state.delta", upd, `{"state":{"delta":{"a":1}},"clientToken":"tk"}`, rej(400, "State contains an invalid node: 'delta'", "tk")},
		{"state.metadata", upd, `{"state":{"metadata":{}},"clientToken":"tk"}`, rej(400, "State contains an invalid node: 'metadata'", "tk")},
		{"desired is a string", upd, `{"state":{"desired":"on"},"clientToken":"tk"}`, rej(400, "Desired node must be an object", "tk")},
		{"reported is an array", upd, `{"state":{"reported":[1,2]},"clientToken":"tk"}`, rej(400, "Reported node must be an object", "tk")},
		{"shorthand desired is a number", upd, `{"desired":5,"clientToken":"tk"}`, rej(400, "Desired node must be an object", "tk")},
		// clientToken (step 7): an invalid token is never echoed.
		{"numeric clientToken", upd, `{"state":{},"clientToken":5}`, rej(400, msgToken, "")},
		{"object clientToken", upd, `{"state":{},"clientToken":{"a":"b"}}`, rej(400, msgToken, "")},
		{"65-byte clientToken", upd, `{"state":{},"clientToken":"` + long65 + `"}`, rej(400, msgToken, "")},
		{"22 three-byte runes (66 bytes) as clientToken", upd, `{"state":{},"clientToken":"` + strings.Repeat("€", 22) + `"}`, rej(400, msgToken, "")},
		// version (step 8).
		{"version beyond int64", upd, `{"state":{},"version":99999999999999999999,"clientToken":"tk"}`, rej(400, msgVersion, "tk")},
		{"negative version", upd, `{"state":{},"version":-3,"clientToken":"tk"}`, rej(400, msgVersion, "tk")},
		{"fractional version", upd, `{"state":{},"version":3.0,"clientToken":"tk"}`, rej(400, msgVersion, "tk")},
		{"exponent version", upd, `{"state":{},"version":3e0,"clientToken":"tk"}`, rej(400, msgVersion, "tk")},
		{"string version", upd, `{"state":{},"version":"3","clientToken":"tk"}`, rej(400, msgVersion, "tk")},
		{"boolean version", upd, `{"state":{},"version":true,"clientToken":"tk"}`, rej(400, msgVersion, "tk")},
		{"object version", upd, `{"state":{},"version":{"v":3},"clientToken":"tk"}`, rej(400, msgVersion, "tk")},
		// Nesting and nulls in arrays (step 9).
		{"10k-deep arrays in reported", upd, `{"state":{"reported":{"a":` + deepArrays(10_000) + `}},"clientToken":"tk"}`, rej(400, msgTooDeep, "tk")},
		{"7 levels in desired, one too many", upd, `{"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}},"clientToken":"tk"}`, rej(400, msgTooDeep, "tk")},
		{"array with a null", upd, `{"state":{"reported":{"a":[1,null]}},"clientToken":"tk"}`, rej(400, msgJSON, "tk")},
		{"null in an array in an object in an array", upd, `{"state":{"desired":{"a":[{"b":[2,null]}]}},"clientToken":"tk"}`, rej(400, msgJSON, "tk")},
		{"array of nulls", upd, `{"state":{"reported":{"a":[null,null]}},"clientToken":"tk"}`, rej(400, msgJSON, "tk")},
		// Version check and size (steps 11-12).
		{"stale version", upd, `{"state":{"reported":{"a":9}},"version":1,"clientToken":"tk"}`, rej(409, "Version conflict", "tk")},
		{"future version", upd, `{"state":{"reported":{"a":9}},"version":9,"clientToken":"tk"}`, rej(409, "Version conflict", "tk")},
		{"document over 8 KiB after the merge", upd, `{"state":{"reported":{"big":"` + strings.Repeat("x", 9000) + `"}},"clientToken":"tk"}`, rej(413, msgTooBig, "tk")},
		{"100 KiB payload under the packet limit", upd, `{"state":{"desired":{"big":"` + strings.Repeat("y", 100<<10) + `"}},"clientToken":"tk"}`, rej(413, msgTooBig, "tk")},
		{"400-digit number over the document limit", upd, `{"state":{"reported":{"n":` + strings.Repeat("9", 9000) + `}},"clientToken":"tk"}`, rej(413, msgTooBig, "tk")},
		// Named and absent shadows.
		{"named shadow, invalid JSON", hCfg + "/update", `{"state":`, rejected(hCfg+"/update/rejected", 400, msgJSON, "")},
		{"named shadow, stale version", hCfg + "/update", `{"state":{},"version":0,"clientToken":"tk"}`, rejected(hCfg+"/update/rejected", 409, "Version conflict", "tk")},
		{"version other than 1 creating a shadow", hAbsent + "/update", `{"state":{"reported":{"a":1}},"version":5,"clientToken":"tk"}`, rejected(hAbsent+"/update/rejected", 400, msgVersion, "tk")},
		{"get of an absent shadow", hAbsent + "/get", `{"clientToken":"tk"}`, rejected(hAbsent+"/get/rejected", 404, "No shadow exists with name: 'hostile-absent'", "tk")},
		{"delete of an absent named shadow", "$aws/things/hostile/shadow/name/ghost/delete", `{"clientToken":"tk"}`,
			rejected("$aws/things/hostile/shadow/name/ghost/delete/rejected", 404, "No shadow exists with name: 'ghost'", "tk")},
		{"get with a numeric clientToken", hT + "/get", `{"clientToken":[1]}`, rejected(hT+"/get/rejected", 400, msgToken, "")},
		{"delete with a 65-byte clientToken", hT + "/delete", `{"clientToken":"` + long65 + `"}`, rejected(hT+"/delete/rejected", 400, msgToken, "")},
		{"get with a payload that is not JSON", hT + "/get", `{{{`, mqttWant{reply: hT + "/get/accepted", forwarded: true}},
		{"get with an invalid UTF-8 payload", hT + "/get", "\xff\xfe", mqttWant{reply: hT + "/get/accepted", forwarded: true}},
		// Topics that are not shadow requests: no reply, delivered as plain
		// messages, no shadow touched.
		{"unknown operation", hT + "/patch", `{"state":{"reported":{"a":9}}}`, ignored()},
		{"client publishing on a reply topic", hT + "/update/accepted", `{"state":{"reported":{"a":9}},"version":4}`, ignored()},
		{"extra level after the operation", hT + "/update/now", `{"state":{"reported":{"a":9}}}`, ignored()},
		{"trailing slash", hT + "/get/", `{}`, ignored()},
		{"empty thing name", "$aws/things//shadow/update", `{"state":{"reported":{"a":9}}}`, ignored()},
		{"129-byte thing name", "$aws/things/" + strings.Repeat("a", 129) + "/shadow/update", `{"state":{"reported":{"a":9}}}`, ignored()},
		{"65-byte shadow name", hT + "/name/" + long65 + "/update", `{"state":{"reported":{"a":9}}}`, ignored()},
		{"empty shadow name", hT + "/name//update", `{"state":{"reported":{"a":9}}}`, ignored()},
		{"thing name with a dot", "$aws/things/hostile.x/shadow/update", `{"state":{"reported":{"a":9}}}`, ignored()},
		{"thing name with a space", "$aws/things/hostile x/shadow/update", `{"state":{"reported":{"a":9}}}`, ignored()},
		{"thing name with a non-ASCII letter", "$aws/things/hostilé/shadow/update", `{"state":{"reported":{"a":9}}}`, ignored()},
		{"upper-case SHADOW level", "$aws/things/hostile/SHADOW/update", `{"state":{"reported":{"a":9}}}`, ignored()},
		// Valid but extreme: accepted, on the scratch shadow only.
		{"huge numbers stored verbatim", hScratch + "/update",
			`{"state":{"reported":{"big":` + strings.Repeat("9", 400) + `,"tiny":1e-400,"huge":1e400}},"clientToken":"tk"}`,
			mqttWant{reply: hScratch + "/update/accepted", token: "tk", forwarded: true}},
		{"50k-deep arrays in an ignored top-level field", hScratch + "/update",
			`{"state":{"reported":{"deep":"ignored"}},"junk":` + deepArrays(50_000) + `,"clientToken":"tk"}`,
			mqttWant{reply: hScratch + "/update/accepted", token: "tk", forwarded: true}},
		{"escaped NUL in keys and values", hScratch + "/update", `{"state":{"reported":{"nul\u0000key":"\u0000"}},"clientToken":"tk"}`,
			mqttWant{reply: hScratch + "/update/accepted", token: "tk", forwarded: true}},
	}
}

// rawWant is the outcome of one raw-connection case: the packets the broker
// sends before closing (hex of first byte and body), or that it stays open.
type rawWant struct {
	packets []string // e.g. "20 0082": CONNACK with return code 0x82
	open    bool     // the connection stays usable (PINGREQ → PINGRESP)
}

type rawCase struct {
	name    string
	connect bool   // complete CONNECT/CONNACK first
	send    []byte // then send this
	want    rawWant
}

var closedSilently = rawWant{}

func rawCatalogue() []rawCase {
	withFlag := connectPacket("reserved-flag", 30, true)
	withFlag[9] |= 0x01 // the reserved bit of the connect flags
	return []rawCase{
		// Malformed and out-of-order packets: the connection is closed.
		{"remaining length of five bytes before CONNECT", false, []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}, closedSilently},
		{"remaining length of five bytes after CONNECT", true, []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}, closedSilently},
		{"reserved packet type 0", true, []byte{0x00, 0x00}, closedSilently},
		{"reserved packet type 15", true, []byte{0xf0, 0x00}, closedSilently},
		{"reserved packet type as the first packet", false, []byte{0x00, 0x00}, closedSilently},
		{"PUBLISH before CONNECT", false, publishPacket(hT+"/update", []byte(`{"state":{"reported":{"a":9}}}`), 0, 0), closedSilently},
		{"SUBSCRIBE before CONNECT", false, subscribePacket(1, "#", 0), closedSilently},
		{"second CONNECT", true, connectPacket("again", 30, true), closedSilently},
		{"PUBLISH with + in the topic", true, publishPacket("$aws/things/+/shadow/update", []byte(`{"state":{}}`), 1, 7), closedSilently},
		{"PUBLISH with # in the topic", true, publishPacket("$aws/things/#", []byte(`{"state":{}}`), 0, 0), closedSilently},
		{"PUBLISH with NUL in the topic", true, publishPacket("$aws/things/hos\x00tile/shadow/update", []byte(`{"state":{}}`), 1, 7), closedSilently},
		{"PUBLISH with invalid UTF-8 in the topic", true, publishPacket("$aws/things/\xff/shadow/update", []byte(`{"state":{}}`), 1, 7), closedSilently},
		{"PUBLISH with an empty topic", true, publishPacket("", []byte("x"), 0, 0), closedSilently},
		{"PUBLISH at QoS 3", true, packet(0x36, append(mqttString("a/b"), 0, 1, 'x')), closedSilently},
		{"QoS 1 PUBLISH with packet id 0", true, publishPacket("a/b", []byte("x"), 1, 0), closedSilently},
		{"topic length beyond the packet", true, packet(pktPublish, []byte{0x00, 0x40, 'a'}), closedSilently},
		{"PUBLISH over the 128 KiB maximum packet size", true, publishPacket(hT+"/update", append(append([]byte(`{"state":{"reported":{"s":"`), bytes.Repeat([]byte("z"), 130<<10)...), `"}}}`...), 1, 9), closedSilently},
		{"SUBSCRIBE with wrong fixed-header flags", true, packet(0x80, append(append([]byte{0, 3}, mqttString("a")...), 0)), closedSilently},
		{"SUBSCRIBE at QoS 3", true, subscribePacket(3, "a/b", 3), closedSilently},
		// CONNECT refused. Mochi answers MQTT 3.1.1 clients with MQTT 5
		// reason codes here (0x82 protocol error, 0x80 unspecified error)
		// where 3.1.1 has 0x01 and 0x02; recorded as they are.
		{"protocol name MQTX", false, connectPacketProto("MQTX", 4, "p", 30, true), rawWant{packets: []string{"20 0082"}}},
		{"protocol level 9", false, connectPacketProto("MQTT", 9, "p", 30, true), rawWant{packets: []string{"20 0082"}}},
		{"reserved CONNECT flag set", false, withFlag, rawWant{packets: []string{"20 0082"}}},
		{"empty client id with a persistent session", false, connectPacket("", 30, false), rawWant{packets: []string{"20 0080"}}},
		{"NUL in the client id", false, connectPacket("dev\x00ice", 30, true), closedSilently},
		// Refused without disconnecting.
		{"SUBSCRIBE to an invalid filter", true, subscribePacket(3, "a/#/b", 0), rawWant{packets: []string{"90 000380"}, open: true}},
	}
}

// TestHostileInputCatalogue sends every kind of bad input the catalogue
// knows over MQTT and HTTP, checks the exact outcome of each, and then that
// the broker still serves and that no stored shadow changed.
func TestHostileInputCatalogue(t *testing.T) {
	srv := brokertest.Start(t, noShadowLimits, func(o *broker.Options) {
		o.ConnectTimeout = hostileConnectTimeout
		o.WSAddr = broker.Off
	})
	base := srv.HTTPURL()
	mustUpdate := func(ref shadow.Ref, body string) {
		t.Helper()
		if code, b := mustHTTP(t, "POST", shadowURL(base, ref, ""), []byte(body)); code != 200 {
			t.Fatalf("seed %s: %d %s", ref, code, b)
		}
	}
	hostile, cfg := shadow.Ref{Thing: "hostile"}, shadow.Ref{Thing: "hostile", Name: "cfg"}
	mustUpdate(hostile, `{"state":{"reported":{"a":1,"fw":"1.0.0"}}}`)
	mustUpdate(hostile, `{"state":{"desired":{"a":2,"mode":"eco"}}}`)
	mustUpdate(hostile, `{"state":{"reported":{"list":[1,{"x":2}]}}}`)
	mustUpdate(cfg, `{"state":{"desired":{"rate":5}}}`)
	mustUpdate(shadow.Ref{Thing: "hostile-barrier"}, `{"state":{"reported":{"up":true}}}`)
	watched := []shadow.Ref{hostile, cfg, {Thing: "hostile-barrier"}, {Thing: "hostile-absent"}, {Thing: "hostile", Name: "ghost"}}
	before := snapshot(t, base, watched)
	connectedBefore := metricValue(t, base, "umbra_mqtt_clients_connected")

	kinds := 0
	t.Run("mqtt", func(t *testing.T) { kinds += runMQTTCatalogue(t, srv) })
	t.Run("raw", func(t *testing.T) { kinds += runRawCatalogue(t, srv) })
	t.Run("http", func(t *testing.T) { kinds += runHTTPCatalogue(t, base) })
	t.Logf("hostile catalogue: %d kinds of bad input", kinds)
	if kinds < 40 {
		t.Errorf("catalogue has %d kinds, want at least 40", kinds)
	}

	// The broker serves normally: a fresh client does a full round trip.
	c := mt.Connect(t, srv.MQTTURL(), "after-the-catalogue")
	acc := c.Subscribe("$aws/things/hostile-after/shadow/+/accepted", 1)
	c.Publish("$aws/things/hostile-after/shadow/update", 1, false, `{"state":{"reported":{"ok":true}},"clientToken":"after"}`)
	if m := mt.NextOn(t, acc, "$aws/things/hostile-after/shadow/update/accepted"); gjson.GetBytes(m.Payload, "version").Int() != 1 {
		t.Errorf("update after the catalogue: %s", m.Payload)
	}
	c.Publish("$aws/things/hostile-after/shadow/get", 1, false, `{"clientToken":"after-get"}`)
	if m := mt.NextOn(t, acc, "$aws/things/hostile-after/shadow/get/accepted"); !gjson.GetBytes(m.Payload, "state.reported.ok").Bool() {
		t.Errorf("get after the catalogue: %s", m.Payload)
	}

	// The valid extremes were stored as sent: numbers are never rounded.
	_, scratch := mustHTTP(t, "GET", shadowURL(base, shadow.Ref{Thing: "hostile-scratch"}, ""), nil)
	if gjson.GetBytes(scratch, "state.reported.big").Raw != strings.Repeat("9", 400) ||
		gjson.GetBytes(scratch, "state.reported.tiny").Raw != "1e-400" || gjson.GetBytes(scratch, "state.reported.huge").Raw != "1e400" ||
		gjson.GetBytes(scratch, "state.reported.deep").String() != "ignored" || gjson.GetBytes(scratch, "version").Int() != 3 {
		t.Errorf("scratch shadow after the valid extremes: %.600s", scratch)
	}

	// No stored shadow changed (documents and history).
	after := snapshot(t, base, watched)
	for i, ref := range watched {
		if before[i] != after[i] {
			t.Errorf("%s changed:\nbefore %s\nafter  %s", ref, before[i], after[i])
		}
	}
	// Every connection the catalogue opened is gone (half-open ones too):
	// only the fresh client is connected now.
	waitMetric(t, base, "umbra_mqtt_clients_connected", connectedBefore+1)
}

// snapshot reads each shadow (without the reply's own timestamp) and its
// history, to compare before and after.
func snapshot(t *testing.T, base string, refs []shadow.Ref) []string {
	t.Helper()
	var out []string
	for _, ref := range refs {
		code, doc := mustHTTP(t, "GET", shadowURL(base, ref, ""), nil)
		_, hist := mustHTTP(t, "GET", shadowURL(base, ref, "/history", "limit", "1000"), nil)
		out = append(out, fmt.Sprintf("%d %s history %s", code, withoutReplyTimestamp(doc), hist))
	}
	return out
}

func runMQTTCatalogue(t *testing.T, srv *brokertest.Server) int {
	type msg struct {
		topic   string
		payload []byte
	}
	msgs := make(chan msg, 4096)
	dev := mt.Connect(t, srv.MQTTURL(), "hostile-device", func(o *paho.ClientOptions) { o.SetOrderMatters(true) })
	tok := dev.Client.Subscribe("$aws/things/#", 1, func(_ paho.Client, m paho.Message) {
		msgs <- msg{m.Topic(), m.Payload()}
	})
	if !tok.WaitTimeout(mt.Wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	cases := mqttCatalogue()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dev.Publish(c.topic, 1, false, c.payload)
			// Barrier: this client's requests are handled in order and their
			// replies queued in order, so once the barrier's reply arrives
			// every message the case caused has arrived.
			barrier := fmt.Sprintf("barrier-%d", i)
			dev.Publish(hBarrier+"/get", 1, false, `{"clientToken":"`+barrier+`"}`)
			var got []msg
		collect:
			for {
				select {
				case m := <-msgs:
					if strings.HasPrefix(m.topic, hBarrier+"/") {
						if gjson.GetBytes(m.payload, "clientToken").String() == barrier {
							break collect
						}
						continue
					}
					got = append(got, m)
				case <-time.After(mt.Wait):
					t.Fatalf("barrier reply did not come within %v", mt.Wait)
				}
			}
			var replies []msg
			forwarded := false
			for _, m := range got {
				if m.topic == c.topic && bytes.Equal(m.payload, []byte(c.payload)) {
					forwarded = true
					continue
				}
				replies = append(replies, m)
			}
			if forwarded != c.want.forwarded {
				t.Errorf("request forwarded to subscribers: %v, want %v", forwarded, c.want.forwarded)
			}
			if c.want.reply == "" {
				for _, m := range replies {
					t.Errorf("unexpected message on %s: %.200s", m.topic, m.payload)
				}
				return
			}
			// An accepted update also publishes documents (and maybe delta).
			var reply *msg
			for i, m := range replies {
				switch {
				case m.topic == c.want.reply && reply == nil:
					reply = &replies[i]
				case c.want.code == 0 && (strings.HasSuffix(m.topic, "/update/documents") || strings.HasSuffix(m.topic, "/update/delta")):
				default:
					t.Errorf("unexpected message on %s: %.200s", m.topic, m.payload)
				}
			}
			if reply == nil {
				t.Fatalf("no reply on %s; got %d other messages", c.want.reply, len(replies))
			}
			p := reply.payload
			if c.want.code != 0 {
				if code, message := gjson.GetBytes(p, "code").Int(), gjson.GetBytes(p, "message").String(); int(code) != c.want.code || message != c.want.message {
					t.Errorf("rejected %d %q, want %d %q (%s)", code, message, c.want.code, c.want.message, p)
				}
				if !gjson.GetBytes(p, "timestamp").Exists() {
					t.Errorf("rejection without timestamp: %s", p)
				}
			} else if !gjson.GetBytes(p, "version").Exists() {
				t.Errorf("accepted reply without version: %s", p)
			}
			tokRes := gjson.GetBytes(p, "clientToken")
			if c.want.token == "" && tokRes.Exists() || c.want.token != "" && tokRes.String() != c.want.token {
				t.Errorf("clientToken %s, want %q (%s)", tokRes.Raw, c.want.token, p)
			}
		})
	}
	return len(cases)
}

func runRawCatalogue(t *testing.T, srv *brokertest.Server) int {
	addr := srv.MQTTAddr()
	cases := rawCatalogue()
	// The cases are independent connections: run them side by side.
	t.Run("packets", func(t *testing.T) {
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				rc, err := dialRaw(addr)
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				if c.connect {
					if err := rc.connect(fmt.Sprintf("raw-%d", i), 30, true); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := rc.Write(c.send); err != nil && !closedByPeer(err) {
					t.Fatalf("write: %v", err)
				}
				var got []string
				if c.want.open {
					for range c.want.packets {
						p, err := rc.next(mt.Wait)
						if err != nil {
							t.Fatalf("after %v: %v", got, err)
						}
						got = append(got, fmt.Sprintf("%02x %x", p.first, p.body))
					}
					if _, err := rc.Write([]byte{pktPingreq, 0}); err != nil {
						t.Fatalf("connection unusable after %v: %v", got, err)
					}
					if p, err := rc.next(mt.Wait); err != nil || p.first != 0xd0 {
						t.Fatalf("PINGREQ after %v: %v %v", got, p, err)
					}
				} else {
					pkts, err := rc.waitClosed(mt.Wait)
					if err != nil {
						t.Fatalf("broker did not close the connection: %v (sent %v)", err, pkts)
					}
					for _, p := range pkts {
						got = append(got, fmt.Sprintf("%02x %x", p.first, p.body))
					}
				}
				if strings.Join(got, ",") != strings.Join(c.want.packets, ",") {
					t.Errorf("broker sent %v, want %v", got, c.want.packets)
				}
			})
		}
		t.Run("slow-loris CONNECT, one byte every 150 ms", func(t *testing.T) {
			t.Parallel()
			rc, err := dialRaw(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			pkt := connectPacket("slow-loris", 30, true)
			sent := make(chan int, 1)
			go func() {
				tick := time.NewTicker(150 * time.Millisecond) // the attack's pace
				defer tick.Stop()
				n := 0
				for ; n < len(pkt); n++ {
					if _, err := rc.Write(pkt[n : n+1]); err != nil {
						break
					}
					<-tick.C
				}
				sent <- n
			}()
			pkts, err := rc.waitClosed(mt.Wait)
			if err != nil || len(pkts) > 0 {
				t.Fatalf("slow CONNECT: closed=%v, broker sent %v", err == nil, pkts)
			}
			_ = rc.Close()
			if n := <-sent; n == len(pkt) {
				t.Errorf("the whole CONNECT (%d bytes) went through before the close", n)
			}
		})
		t.Run("silent socket", func(t *testing.T) {
			t.Parallel()
			rc, err := dialRaw(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			start := time.Now()
			if pkts, err := rc.waitClosed(mt.Wait); err != nil || len(pkts) > 0 {
				t.Fatalf("silent socket: %v, broker sent %v", err, pkts)
			}
			t.Logf("silent socket closed after %v (connect timeout %v)", time.Since(start).Round(10*time.Millisecond), hostileConnectTimeout)
		})
		t.Run("CONNECT shorter than its remaining length", func(t *testing.T) {
			t.Parallel()
			rc, err := dialRaw(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			pkt := connectPacket("short", 30, true)
			pkt[1] += 50 // declares 50 bytes more than it sends
			if _, err := rc.Write(pkt); err != nil {
				t.Fatal(err)
			}
			if pkts, err := rc.waitClosed(mt.Wait); err != nil || len(pkts) > 0 {
				t.Fatalf("short CONNECT: %v, broker sent %v", err, pkts)
			}
		})
		t.Run("half-open after CONNECT (keepalive 1 s, then silence)", func(t *testing.T) {
			t.Parallel()
			rc, err := dialRaw(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if err := rc.connect("half-open", 1, true); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if pkts, err := rc.waitClosed(mt.Wait); err != nil || len(pkts) > 0 {
				t.Fatalf("silent client: %v, broker sent %v", err, pkts)
			}
			t.Logf("client silent past its keepalive closed after %v", time.Since(start).Round(10*time.Millisecond))
		})
		t.Run("half-open in the middle of a PUBLISH (keepalive 1 s)", func(t *testing.T) {
			t.Parallel()
			rc, err := dialRaw(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if err := rc.connect("half-publish", 1, true); err != nil {
				t.Fatal(err)
			}
			p := publishPacket(hT+"/update", []byte(`{"state":{"reported":{"a":9}}}`), 1, 3)
			if _, err := rc.Write(p[:len(p)-5]); err != nil {
				t.Fatal(err)
			}
			if pkts, err := rc.waitClosed(mt.Wait); err != nil || len(pkts) > 0 {
				t.Fatalf("stalled PUBLISH: %v, broker sent %v", err, pkts)
			}
		})
		t.Run("half-closed (FIN) after CONNECT", func(t *testing.T) {
			t.Parallel()
			rc, err := dialRaw(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if err := rc.connect("half-closed", 30, true); err != nil {
				t.Fatal(err)
			}
			if err := rc.Conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if pkts, err := rc.waitClosed(mt.Wait); err != nil || len(pkts) > 0 {
				t.Fatalf("half-closed: %v, broker sent %v", err, pkts)
			}
		})
	})
	return len(cases) + 6
}

type httpCase struct {
	name, method, path string
	body               []byte
	header             map[string]string
	status             int
	message            string // exact message of the error document; "" for a non-JSON body
	rawBody            string // exact body when it is not the error document
}

func httpCatalogue() []httpCase {
	upd := "/things/hostile/shadow"
	long129 := strings.Repeat("a", 129)
	return []httpCase{
		{name: "invalid JSON", method: "POST", path: upd, body: []byte(`{"state":`), status: 400, message: msgJSON},
		{name: "empty body", method: "POST", path: upd, body: []byte{}, status: 400, message: msgJSON},
		{name: "invalid UTF-8", method: "POST", path: upd, body: []byte("{\"state\":{\"reported\":{\"s\":\"\xff\"}}}"), status: 415, message: msgUTF8},
		{name: "body over 128 KiB", method: "POST", path: upd, body: []byte(`{"state":{"reported":{"s":"` + strings.Repeat("x", 200<<10) + `"}}}`), status: 413, message: msgTooBig},
		{name: "chunked body over 128 KiB", method: "POST", path: upd, body: []byte(`{"state":{"reported":{"s":"` + strings.Repeat("x", 200<<10) + `"}}}`),
			header: map[string]string{"Transfer-Encoding": "chunked"}, status: 413, message: msgTooBig},
		{name: "document over 8 KiB after the merge", method: "POST", path: upd, body: []byte(`{"state":{"reported":{"s":"` + strings.Repeat("x", 9000) + `"}}}`), status: 413, message: msgTooBig},
		{name: "10k-deep nesting", method: "POST", path: upd, body: []byte(`{"state":{"desired":{"a":` + deepArrays(10_000) + `}}}`), status: 400, message: msgTooDeep},
		{name: "duplicate keys", method: "POST", path: upd, body: []byte(`{"state":{"reported":{"a":1,"a":1}}}`), status: 400, message: msgJSON},
		{name: "string version", method: "POST", path: upd, body: []byte(`{"state":{},"version":"3"}`), status: 400, message: msgVersion},
		{name: "stale version", method: "POST", path: upd, body: []byte(`{"state":{"reported":{"a":5}},"version":2}`), status: 409, message: "Version conflict"},
		{name: "array with null", method: "POST", path: upd, body: []byte(`{"state":{"reported":{"a":[null]}}}`), status: 400, message: msgJSON},
		{name: "state is an array", method: "POST", path: upd, body: []byte(`{"state":[]}`), status: 400, message: msgState},
		{name: "129-byte thing name", method: "GET", path: "/things/" + long129 + "/shadow", status: 400,
			message: fmt.Sprintf("Invalid thing name: %q (1-128 characters of a-z A-Z 0-9 : _ -)", long129)},
		{name: "NUL in the thing name", method: "POST", path: "/things/host%00ile/shadow", body: []byte(`{"state":{}}`), status: 400,
			message: `Invalid thing name: "host\x00ile" (1-128 characters of a-z A-Z 0-9 : _ -)`},
		{name: "path traversal in the thing name", method: "DELETE", path: "/things/..%2F..%2Fhostile/shadow", status: 400,
			message: `Invalid thing name: "../../hostile" (1-128 characters of a-z A-Z 0-9 : _ -)`},
		{name: "65-byte shadow name", method: "POST", path: upd + "?name=" + strings.Repeat("n", 65), body: []byte(`{"state":{}}`), status: 400,
			message: fmt.Sprintf("Invalid shadow name: %q (1-64 characters of a-z A-Z 0-9 : _ -)", strings.Repeat("n", 65))},
		{name: "wildcard as shadow name", method: "DELETE", path: upd + "?name=%23", status: 400, message: `Invalid shadow name: "#" (1-64 characters of a-z A-Z 0-9 : _ -)`},
		{name: "get of an absent shadow", method: "GET", path: "/things/hostile-absent/shadow", status: 404, message: "No shadow exists with name: 'hostile-absent'"},
		{name: "delete of an absent named shadow", method: "DELETE", path: upd + "?name=ghost", status: 404, message: "No shadow exists with name: 'ghost'"},
		{name: "version other than 1 creating a shadow", method: "POST", path: "/things/hostile-absent/shadow", body: []byte(`{"state":{},"version":2}`), status: 400, message: msgVersion},
		{name: "unsupported method", method: "PUT", path: upd, body: []byte(`{"state":{}}`), status: 405, message: "Method Not Allowed: PUT is not allowed on /things/hostile/shadow (allowed: DELETE, GET, HEAD, POST)"},
		{name: "history cursor that is not a version", method: "GET", path: upd + "/history?before=-1", status: 400, message: `Invalid before: "-1" (want a version number)`},
		{name: "history limit over 1000", method: "GET", path: upd + "/history?limit=1001", status: 400, message: `Invalid limit: "1001" (want a number from 1 to 1000)`},
	}
}

func runHTTPCatalogue(t *testing.T, base string) int {
	cases := httpCatalogue()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body *bytes.Reader
			if c.body != nil {
				body = bytes.NewReader(c.body)
			}
			req, err := httpNewRequest(c.method, base+c.path, body)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range c.header {
				if k == "Transfer-Encoding" {
					req.TransferEncoding = []string{v}
					req.ContentLength = -1
					continue
				}
				req.Header.Set(k, v)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			got := buf.Bytes()
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%.300s)", resp.StatusCode, c.status, got)
			}
			if c.message == "" {
				if string(got) != c.rawBody {
					t.Errorf("body %q, want %q", got, c.rawBody)
				}
				return
			}
			if code, msg := gjson.GetBytes(got, "code").Int(), gjson.GetBytes(got, "message").String(); int(code) != c.status || msg != c.message {
				t.Errorf("error document %d %q, want %d %q", code, msg, c.status, c.message)
			}
			if et := resp.Header.Get("X-Amzn-ErrorType"); et == "" {
				t.Errorf("no X-Amzn-ErrorType header")
			}
		})
	}
	return len(cases)
}
