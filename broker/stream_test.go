package broker_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
)

// The live event stream: shadow and connectivity changes as server-sent
// events, filtered by thing and type; shutdown ends open streams.
func TestEventStream(t *testing.T) {
	srv := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), mt.Wait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.HTTPURL()+"/api/events?thing=watched&types=shadow,connectivity", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	lines := bufio.NewScanner(resp.Body)
	next := func() (string, string) {
		var typ string
		for lines.Scan() {
			l := lines.Text()
			switch {
			case strings.HasPrefix(l, "event: "):
				typ = strings.TrimPrefix(l, "event: ")
			case strings.HasPrefix(l, "data: "):
				return typ, strings.TrimPrefix(l, "data: ")
			}
		}
		t.Fatalf("stream ended: %v", lines.Err())
		return "", ""
	}
	httpDo(t, "POST", srv.HTTPURL()+"/things/other/shadow", `{"state":{"reported":{"x":1}}}`, 200) // filtered out
	c := mt.Connect(t, srv.MQTTURL(), "watched")
	if typ, data := next(); typ != "connectivity" || gjson.Get(data, "thing").String() != "watched" || !gjson.Get(data, "data.connected").Bool() {
		t.Fatalf("first event %s %s", typ, data)
	}
	acc := c.Subscribe("$aws/things/watched/shadow/update/accepted", 1)
	c.Publish("$aws/things/watched/shadow/update", 1, false, `{"state":{"desired":{"led_is_on":true}}}`)
	mt.Next(t, acc)
	typ, data := next()
	if typ != "shadow" || gjson.Get(data, "data.version").Int() != 1 || gjson.Get(data, "data.state.delta.led_is_on").Bool() != true {
		t.Fatalf("shadow event %s %s", typ, data)
	}
	httpGet(t, srv.HTTPURL()+"/api/events?types=bogus", 400)
	httpGet(t, srv.HTTPURL()+"/api/events?query=attributes.x:", 400)
	// Shutdown ends the stream promptly rather than waiting out its deadline.
	sctx, scancel := context.WithTimeout(context.Background(), mt.Wait)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown with an open stream: %v", err)
	}
}
