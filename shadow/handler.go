package shadow

import "context"

// Handler runs shadow requests: Service is the one implementation, and the
// MQTT routing hook, the HTTP API and the rollout engine take it as this.
type Handler interface {
	Handle(ctx context.Context, req Request) Response
}

var _ Handler = (*Service)(nil)
