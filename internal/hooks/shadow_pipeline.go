package hooks

import (
	"sync"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/shadow"
)

// pipelines works on several QoS 1 shadow requests of one connection at
// once. Handled one at a time, a connection gets at most one update per
// group commit (an fsync), so an application setting desired state on a
// thousand things over one connection waited for a thousand commits in a
// row; pipelined, its requests share commits.
//
// What stays as it was:
//   - each PUBACK is sent after its request was answered, so after the
//     change is durable (every acknowledged write is committed first);
//   - a connection's PUBACKs go out in the order its requests arrived,
//     and an accepted request reaches its topic's subscribers then;
//   - requests of one connection for one shadow run one after another, in
//     the order they arrived (versions follow the publishing order), QoS 0
//     and 2 requests (answered on the read loop) included;
//   - a connection has at most depth requests under way: the next one
//     waits, and the connection's packets with it (backpressure);
//   - a connection with nothing more to read and nothing under way (a
//     device with one request at a time) is answered on its read loop,
//     as before: starting a goroutine per request cost such a device's
//     closed loop some throughput.
type pipelines struct {
	server *mqtt.Server
	depth  int
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[*mqtt.Client]*pipeline
}

// pipeline is one connection's requests under way.
type pipeline struct {
	slots chan struct{} // one per request under way

	mu    sync.Mutex
	queue []*pipelined                 // arrival order; acknowledged from the head
	last  map[shadow.Ref]chan struct{} // closed when the shadow's latest request is answered
}

type pipelined struct {
	pk       packets.Packet
	done     bool
	accepted bool
}

func newPipelines(server *mqtt.Server, depth int) *pipelines {
	return &pipelines{server: server, depth: max(depth, 1), conns: map[*mqtt.Client]*pipeline{}}
}

func (ps *pipelines) get(cl *mqtt.Client) *pipeline {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p := ps.conns[cl]
	if p == nil {
		p = &pipeline{slots: make(chan struct{}, ps.depth), last: map[shadow.Ref]chan struct{}{}}
		ps.conns[cl] = p
	}
	return p
}

// busy reports whether cl has requests under way.
func (ps *pipelines) busy(cl *mqtt.Client) bool {
	ps.mu.Lock()
	p := ps.conns[cl]
	ps.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) > 0
}

// waitFor returns once cl's requests for ref under way have been answered.
func (ps *pipelines) waitFor(cl *mqtt.Client, ref shadow.Ref) {
	ps.mu.Lock()
	p := ps.conns[cl]
	ps.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	done := p.last[ref]
	p.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (ps *pipelines) forget(cl *mqtt.Client) {
	ps.mu.Lock()
	delete(ps.conns, cl)
	ps.mu.Unlock()
}

// start runs req for the publish pk of cl in the background and has the
// publish acknowledged in its turn. It blocks while cl has depth requests
// under way. It is called from cl's read loop, so calls for one
// connection come one at a time, in arrival order.
func (ps *pipelines) start(cl *mqtt.Client, pk packets.Packet, req shadow.Request, handle func(shadow.Request) bool) {
	p := ps.get(cl)
	p.slots <- struct{}{}
	item := &pipelined{pk: pk}
	done := make(chan struct{})
	p.mu.Lock()
	p.queue = append(p.queue, item)
	prev := p.last[req.Ref]
	p.last[req.Ref] = done
	p.mu.Unlock()

	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		if prev != nil {
			<-prev // the same shadow's earlier request from this connection
		}
		accepted := handle(req)
		close(done)

		p.mu.Lock()
		defer p.mu.Unlock()
		if p.last[req.Ref] == done {
			delete(p.last, req.Ref)
		}
		item.done, item.accepted = true, accepted
		// Acknowledge the answered head of the queue, in order; under the
		// lock, so that two finishing requests cannot interleave theirs.
		for len(p.queue) > 0 && p.queue[0].done {
			head := p.queue[0]
			p.queue[0] = nil
			p.queue = p.queue[1:]
			// A rejected request is acknowledged too (its answer went to
			// /rejected), so a device does not send it again, but it is
			// not forwarded to the topic's subscribers.
			_ = ps.server.AckPublish(cl, head.pk, !head.accepted)
			<-p.slots
		}
	}()
}
