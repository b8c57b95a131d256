package hooks

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/umbra-iot/umbra/tempfork/mochi"
	mauth "github.com/umbra-iot/umbra/tempfork/mochi/hooks/auth"
	"github.com/umbra-iot/umbra/tempfork/mochi/listeners"
	"github.com/umbra-iot/umbra/tempfork/mochi/packets"

	"github.com/umbra-iot/umbra/internal/store"
	"github.com/umbra-iot/umbra/internal/storeadapt"
	"github.com/umbra-iot/umbra/registry"
)

// stepHook runs before (or after) the presence hook and lets a test hold a
// connection at OnSessionEstablished and see OnSessionEstablished and
// OnDisconnect complete, per username.
type stepHook struct {
	mqtt.HookBase
	id   string
	mu   sync.Mutex
	hold map[string]chan struct{} // username -> closed to let it go on
	seen map[string]chan struct{} // "established:user" / "disconnected:user" -> closed when reached
}

func newStepHook(id string) *stepHook {
	return &stepHook{id: id, hold: map[string]chan struct{}{}, seen: map[string]chan struct{}{}}
}

func (h *stepHook) ID() string { return h.id }
func (h *stepHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect || b == mqtt.OnConnectAuthenticate
}
func (h *stepHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (h *stepHook) ch(m map[string]chan struct{}, k string) chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := m[k]
	if c == nil {
		c = make(chan struct{})
		m[k] = c
	}
	return c
}

func (h *stepHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	user := string(cl.Properties.Username)
	close(h.ch(h.seen, "established:"+user))
	h.mu.Lock()
	hold := h.hold[user]
	h.mu.Unlock()
	if hold != nil {
		<-hold
	}
}

func (h *stepHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	close(h.ch(h.seen, "disconnected:"+string(cl.Properties.Username)))
}

func waitFor(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10 s", what)
	}
}

// connect sends an MQTT 3.1.1 CONNECT and reads the CONNACK.
func connect(t *testing.T, addr, clientID, user string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var body []byte
	body = append(body, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x80|0x02, 0, 60) // username flag, clean session
	body = append(body, byte(len(clientID)>>8), byte(len(clientID)))
	body = append(body, clientID...)
	body = append(body, byte(len(user)>>8), byte(len(user)))
	body = append(body, user...)
	if _, err := c.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := ioReadFull(bufio.NewReader(c), ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("connack %x: %v", ack, err)
	}
	return c
}

func ioReadFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// A takeover can reach Mochi's OnSessionEstablished of the new connection
// before that of the connection it took over (the old one had sent its
// CONNACK and was about to run its hooks). The old connection's connect and
// end must not then leave the thing disconnected (DUPLICATE_CLIENTID) while
// the new connection is up.
func TestTakeoverBeforeOldSessionEstablishedKeepsThingConnected(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	reg, err := registry.Open(registry.Config{Store: storeadapt.KV{DB: db}, Shadows: storeadapt.ShadowSource{DB: db}})
	if err != nil {
		t.Fatal(err)
	}
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	before, after := newStepHook("before"), newStepHook("after")
	release := make(chan struct{})
	before.hold["first"] = release
	access := NewAccess(nil, slog.New(slog.DiscardHandler))
	for _, h := range []mqtt.Hook{before, NewPresence(reg, access, func() bool { return false }), after, new(mauth.AllowHook)} {
		if err := srv.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	ln := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })

	connect(t, ln.Address(), "dev-1", "first")
	waitFor(t, before.ch(before.seen, "established:first"), "first session established")
	// The first connection is acknowledged but its hooks have not run;
	// the second takes it over and is established.
	connect(t, ln.Address(), "dev-1", "second")
	waitFor(t, after.ch(after.seen, "established:second"), "second session established")
	close(release)
	waitFor(t, after.ch(after.seen, "disconnected:first"), "first connection's end")

	c, ok := reg.Connectivity("dev-1")
	if !ok || !c.Connected || c.Version != 2 {
		t.Fatalf("the second connection (version 2) is up but connectivity says %+v", c)
	}
	// The history keeps the first connection and its end, in order.
	h, err := reg.ConnectivityHistory(context.Background(), "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || !h[0].Connected || h[0].Version != 2 || h[1].Connected || h[1].Version != 1 ||
		h[1].Reason != "DUPLICATE_CLIENTID" || !h[2].Connected || h[2].Version != 1 {
		t.Fatalf("history (newest first) %+v, want connect 2, end of 1 (DUPLICATE_CLIENTID), connect 1", h)
	}
	if cl, ok := srv.Clients.Get("dev-1"); !ok || string(cl.Properties.Username) != "second" || cl.Closed() {
		t.Fatalf("Mochi's current connection is not the second one")
	}
}
