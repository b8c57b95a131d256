package hooks

import (
	"context"
	"net"
	"strings"
	"testing"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/shadow"
)

// recordingShadows is a shadow.Handler that records every request and
// answers with reject when set.
type recordingShadows struct {
	reqs   []shadow.Request
	reject *shadow.Error
}

func (r *recordingShadows) Handle(_ context.Context, req shadow.Request) shadow.Response {
	r.reqs = append(r.reqs, req)
	return shadow.Response{Err: r.reject}
}

func publishPacket(topic, payload string, retain bool) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: retain},
		TopicName: topic, Payload: []byte(payload)}
}

func netClient(t *testing.T, srv *mqtt.Server, id string) *mqtt.Client {
	t.Helper()
	c1, c2 := net.Pipe()
	t.Cleanup(func() { c1.Close(); c2.Close() })
	return srv.NewClient(c1, "tcp", id, false)
}

// Every request topic, classic and named, reaches the shadow service as the
// request it names, from the publishing client, never retained.
func TestShadowsRoutesEveryRequestTopic(t *testing.T) {
	srv := mqtt.New(nil)
	cl := netClient(t, srv, "dev-1")
	for _, named := range []string{"", "cfg"} {
		for _, op := range []shadow.Op{shadow.OpGet, shadow.OpUpdate, shadow.OpDelete} {
			svc := &recordingShadows{}
			h := NewShadowRouter(context.Background(), svc, func(c *mqtt.Client) string { return "mqtt:" + c.ID })
			topic := "$aws/things/dev-1/shadow/" + string(op)
			if named != "" {
				topic = "$aws/things/dev-1/shadow/name/" + named + "/" + string(op)
			}
			out, err := h.OnPublish(cl, publishPacket(topic, `{"state":{}}`, true))
			if err != nil {
				t.Fatalf("%s: error %v for an accepted request", topic, err)
			}
			if out.FixedHeader.Retain {
				t.Errorf("%s: a request stays retained", topic)
			}
			if len(svc.reqs) != 1 {
				t.Fatalf("%s: %d requests reached the service, want 1", topic, len(svc.reqs))
			}
			got := svc.reqs[0]
			want := shadow.Ref{Thing: "dev-1", Name: named}
			if got.Ref != want || got.Op != op || string(got.Payload) != `{"state":{}}` || got.Origin != shadow.OriginMQTT || got.Principal != "mqtt:dev-1" {
				t.Errorf("%s: request %+v, want ref %+v op %s from mqtt:dev-1", topic, got, want, op)
			}
		}
	}
}

// Reply topics, other $aws topics, malformed shadow topics and ordinary
// topics pass through untouched: the service never sees them.
func TestShadowsLeavesOtherTopicsAlone(t *testing.T) {
	srv := mqtt.New(nil)
	cl := netClient(t, srv, "dev-1")
	svc := &recordingShadows{}
	h := NewShadowRouter(context.Background(), svc, func(*mqtt.Client) string { return "x" })
	var topics []string
	for _, base := range []string{"$aws/things/dev-1/shadow/", "$aws/things/dev-1/shadow/name/cfg/"} {
		for _, s := range []string{"get/accepted", "get/rejected", "update/accepted", "update/rejected", "update/delta",
			"update/documents", "delete/accepted", "delete/rejected"} {
			topics = append(topics, base+s)
		}
	}
	topics = append(topics,
		"$aws/things//shadow/update",                                       // empty thing
		"$aws/things/bad name/shadow/update",                               // invalid thing name
		"$aws/things/"+strings.Repeat("t", 129)+"/shadow/update",           // thing name too long
		"$aws/things/dev-1/shadow/name//update",                            // empty shadow name
		"$aws/things/dev-1/shadow/name/"+strings.Repeat("n", 65)+"/update", // shadow name too long
		"$aws/things/dev-1/shadow/name/cfg",                                // no operation
		"$aws/things/dev-1/shadow/patch",                                   // unknown operation
		"$aws/things/dev-1/shadow/get/",                                    // empty extra level
		"$aws/things/dev-1/shadow/get/delta",                               // delta only on update
		"$aws/things/dev-1/shadow/update/accepted/more",                    // unknown suffix
		"$aws/things/dev-1/jobs/get",                                       // another AWS service
		"$aws/events/presence/connected/dev-1",
		"things/dev-1/shadow/update", // not under $aws
	)
	for _, topic := range topics {
		in := publishPacket(topic, "{}", true)
		out, err := h.OnPublish(cl, in)
		if err != nil || !out.FixedHeader.Retain || out.TopicName != topic {
			t.Errorf("%s: changed (err %v, retain %v, topic %q)", topic, err, out.FixedHeader.Retain, out.TopicName)
		}
	}
	if len(svc.reqs) != 0 {
		t.Fatalf("the service saw %d publishes that are no shadow requests, the first on %s", len(svc.reqs), svc.reqs[0].Ref)
	}
}

// A rejected request is acknowledged but not forwarded (CodeSuccessIgnore),
// and the service's own replies (inline client) are not routed again.
func TestShadowsRejectedAndInline(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true})
	svc := &recordingShadows{reject: &shadow.Error{Code: 400, Message: "Invalid JSON"}}
	h := NewShadowRouter(context.Background(), svc, func(*mqtt.Client) string { return "x" })
	cl := netClient(t, srv, "dev-1")
	if _, err := h.OnPublish(cl, publishPacket("$aws/things/dev-1/shadow/update", "{", false)); err != packets.CodeSuccessIgnore {
		t.Fatalf("rejected request: error %v, want CodeSuccessIgnore (acknowledged, not forwarded)", err)
	}
	inline := srv.NewClient(nil, "local", "inline", true)
	if _, err := h.OnPublish(inline, publishPacket("$aws/things/dev-1/shadow/update", "{}", false)); err != nil {
		t.Fatalf("inline publish: %v", err)
	}
	if len(svc.reqs) != 1 {
		t.Fatalf("%d requests reached the service, want 1 (the inline publish is a reply)", len(svc.reqs))
	}
}
