package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// AttemptTimeout bounds one attempt of a Retry.
const AttemptTimeout = 2 * time.Second

// Retry runs fn until it succeeds, fails with an error that is not
// transient, or ctx ends, giving each attempt at most AttemptTimeout.
//
// Why: a JetStream API request that reaches a server while the stream (or
// the meta layer) has no leader yet, as when several nodes start with a
// fresh cluster and create the same buckets, is not answered at all; the
// client then waits for its whole deadline. Short attempts that are
// repeated turn that wait into a few hundred milliseconds.
func Retry(ctx context.Context, fn func(ctx context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, AttemptTimeout)
		err := fn(actx)
		cancel()
		if err == nil || !Transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Transient reports whether err may go away on its own: a request that
// was not answered in time, no responders (a server restarting), or
// JetStream reporting that it has no leader yet.
func Transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		isNoLeader(err)
}

// isNoLeader matches JetStream's "no suitable peers"/"cluster not
// available" API errors (code 503), which a fresh cluster answers while it
// elects its leaders.
func isNoLeader(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == 503
}
