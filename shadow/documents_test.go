package shadow_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/shadow"
)

// subscribedPublisher records publishes and reports subscribers for the
// topics in subs only (shadow.SubscriberChecker).
type subscribedPublisher struct {
	mu       sync.Mutex
	subs     map[string]bool
	payloads map[string][]byte
	asked    []string
}

func (p *subscribedPublisher) Publish(topic string, payload []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.payloads[topic] = payload
	return nil
}

func (p *subscribedPublisher) HasSubscribers(topic string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = append(p.asked, topic)
	return p.subs[topic]
}

// /update/documents is built and published only when someone subscribes to
// it; the other replies are published as before.
func TestDocumentsOnlyWhenSubscribed(t *testing.T) {
	const docs = "$aws/things/d/shadow/update/documents"
	pub := &subscribedPublisher{subs: map[string]bool{}, payloads: map[string][]byte{}}
	svc := shadow.NewService(shadow.Config{Store: &memStore{}, Publisher: pub})
	update := func(payload string) {
		t.Helper()
		resp := svc.Handle(context.Background(), shadow.Request{Ref: shadow.Ref{Thing: "d"}, Op: shadow.OpUpdate,
			Origin: shadow.OriginMQTT, Payload: []byte(payload)})
		if resp.Err != nil {
			t.Fatalf("update %s: %v", payload, resp.Err)
		}
	}
	update(`{"state":{"reported":{"a":1}}}`)
	if _, ok := pub.payloads[docs]; ok {
		t.Fatalf("documents published with no subscriber")
	}
	if _, ok := pub.payloads["$aws/things/d/shadow/update/accepted"]; !ok {
		t.Fatalf("accepted not published: %v", pub.payloads)
	}
	if len(pub.asked) == 0 || !strings.HasSuffix(pub.asked[len(pub.asked)-1], "/documents") {
		t.Fatalf("subscribers were not checked: %v", pub.asked)
	}
	pub.subs[docs] = true
	update(`{"state":{"reported":{"a":2}}}`)
	got := pub.payloads[docs]
	if gjson.GetBytes(got, "previous.state.reported.a").Int() != 1 || gjson.GetBytes(got, "current.state.reported.a").Int() != 2 ||
		gjson.GetBytes(got, "current.version").Int() != 2 {
		t.Fatalf("documents once subscribed: %s", got)
	}
}

// A publisher that cannot tell (no HasSubscribers) gets every reply.
func TestDocumentsWithoutSubscriberCheck(t *testing.T) {
	pub := &published{}
	svc := shadow.NewService(shadow.Config{Store: &memStore{}, Publisher: pub})
	svc.Handle(context.Background(), shadow.Request{Ref: shadow.Ref{Thing: "d"}, Op: shadow.OpUpdate,
		Origin: shadow.OriginMQTT, Payload: []byte(`{"state":{"reported":{"a":1}}}`)})
	if !strings.Contains(strings.Join(pub.topics, " "), "/update/documents") {
		t.Fatalf("published %v", pub.topics)
	}
}

// The delta of a document without desired state is found without parsing
// the document (it runs for every update and every shadow at start-up).
func TestDocDeltaWithoutDesiredAllocatesNothing(t *testing.T) {
	doc := []byte(`{"state":{"reported":{"a":1,"b":{"c":[1,2,3]}}},"metadata":{"reported":{"a":{"timestamp":1},"b":{"c":[{"timestamp":1},{"timestamp":1},{"timestamp":1}]}}},"version":3,"timestamp":1}`)
	if d := shadow.DocDelta(doc); d != nil {
		t.Fatalf("delta %s", d)
	}
	if n := testing.AllocsPerRun(100, func() { shadow.DocDelta(doc) }); n != 0 {
		t.Fatalf("DocDelta of a document without desired: %.0f allocations", n)
	}
	withDesired := []byte(`{"state":{"desired":{"a":2},"reported":{"a":1}},"metadata":{"desired":{"a":{"timestamp":1}},"reported":{"a":{"timestamp":1}}},"version":3,"timestamp":1}`)
	if d := shadow.DocDelta(withDesired); string(d) != `{"a":2}` {
		t.Fatalf("delta with desired: %s", d)
	}
	empty := []byte(`{"state":{"desired":{},"reported":{"a":1}},"metadata":{},"version":3,"timestamp":1}`)
	if d := shadow.DocDelta(empty); d != nil {
		t.Fatalf("delta of empty desired: %s", d)
	}
}
