package client_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/client"
)

// The client against the real in-process server: typed lists, exact shadow
// JSON, the API's errors as *client.Error, no server as UnreachableError.
func TestClientAgainstServer(t *testing.T) {
	srv := brokertest.Start(t)
	ctx := context.Background()
	c, err := client.New(client.Config{Server: srv.HTTPURL()})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"c-1", "c-2"} {
		if _, err := c.Call(ctx, "POST", "/api/things", nil, map[string]any{"thingName": name, "attributes": map[string]string{"ring": "canary"}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	things, err := c.ListThings(ctx)
	if err != nil || len(things) != 2 || things[0].Name != "c-1" || things[1].Attributes["ring"] != "canary" {
		t.Fatalf("ListThings: %v %+v", err, things)
	}
	if _, err := c.Call(ctx, "POST", "/things/c-1/shadow", nil, []byte(`{"state":{"reported":{"big":100000000000000000001,"p":1.50}}}`), nil); err != nil {
		t.Fatal(err)
	}
	raw, err := c.Shadow(ctx, "c-1", "")
	if err != nil || !strings.Contains(string(raw), `"big":100000000000000000001`) || !strings.Contains(string(raw), `"p":1.50`) {
		t.Fatalf("Shadow: %v %s", err, raw)
	}
	_, err = c.Shadow(ctx, "nope", "")
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Message == "" {
		t.Fatalf("missing shadow: %v", err)
	}
	_, err = c.Call(ctx, "POST", "/api/things", nil, map[string]any{"thingName": ""}, nil)
	if !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("bad thing: %v", err)
	}
	if ids, err := c.RolloutIDs(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("RolloutIDs: %v %v", err, ids)
	}

	// A closed port: no answer.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dead, _ := client.New(client.Config{Server: addr})
	var ue client.UnreachableError
	if _, err := dead.ListThings(ctx); !errors.As(err, &ue) {
		t.Fatalf("closed port: %T %v", err, err)
	}
	if _, err := client.New(client.Config{Server: "ftp://x"}); err == nil {
		t.Fatal("ftp:// accepted")
	}
}
