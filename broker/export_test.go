package broker

import "net"

// Test seams; set before Start.

// SetCommitFault makes every store transaction run f first; an error fails
// the transaction as a full disk would.
func SetCommitFault(b *Broker, f func() error) { b.commitFault = f }

// WrapListeners lets a test wrap each bound listener (by name: mqtt,
// websocket, http) below the broker's own accept handling.
func WrapListeners(b *Broker, f func(name string, ln net.Listener) net.Listener) { b.wrapListener = f }

// CutCluster closes the node's NATS connection under it, as a crash or a
// network partition looks to the rest of the cluster: its lease is no
// longer renewed.
func CutCluster(b *Broker) { b.cluster.NC.Close() }

// SetForwardChunk makes forwarded API replies come in chunks of n bytes
// (cluster mode), so that tests exercise their reassembly; the returned
// func restores the default.
func SetForwardChunk(n int) func() {
	forwardChunk.Store(int64(n))
	return func() { forwardChunk.Store(0) }
}
