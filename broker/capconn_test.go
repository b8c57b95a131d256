package broker

import (
	"bufio"
	"github.com/umbra-iot/umbra/internal/limits"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// heldListener hands net/http connections whose Close waits until the test
// lets it go: the moment between net/http having written a response and
// closing the connection, held open for as long as the test needs.
type heldListener struct {
	net.Listener
	closing chan struct{} // receives when a Close starts waiting
	let     chan struct{} // closed to let every Close go on
}

func (l *heldListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &heldConn{Conn: c, l: l}, nil
}

type heldConn struct {
	net.Conn
	l    *heldListener
	once sync.Once
}

func (c *heldConn) NetConn() net.Conn { return c.Conn }

func (c *heldConn) Close() error {
	c.once.Do(func() {
		select {
		case c.l.closing <- struct{}{}:
		default:
		}
		<-c.l.let
	})
	return c.Conn.Close()
}

// request sends one GET on a new connection (none when header is "-": a
// refused connection is answered at once) and reads the response; the
// connection is returned open.
func request(t *testing.T, addr, header string) (int, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if header != "-" {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: umbra\r\n"+header+"\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, c
}

// A client whose request was its connection's last (Connection: close) and
// that has read the whole response holds no connection any more from its
// point of view: its next connection is admitted, even if net/http has not
// closed the old one yet. A connection kept alive still counts.
func TestConnAtCapFreesItsSlotWithItsLastResponse(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	capped := &capListener{Listener: tcp, limit: &limits.Conns{Max: 1}, log: slog.New(slog.DiscardHandler), refused: func() { refused.Add(1) }}
	held := &heldListener{Listener: capped, closing: make(chan struct{}, 1), let: make(chan struct{})}
	srv := &http.Server{
		Handler:     releaseLastConn(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })),
		ConnContext: capConnContext,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(held) }()
	t.Cleanup(func() { close(held.let); _ = srv.Close(); <-done })
	addr := tcp.Addr().String()

	if code, _ := request(t, addr, "Connection: close\r\n"); code != 200 {
		t.Fatalf("first request: %d", code)
	}
	<-held.closing // net/http is closing the first connection, not done yet
	code, keep := request(t, addr, "")
	if code != 200 {
		t.Fatalf("next connection after the last response of the first: %d (refused %d), want 200", code, refused.Load())
	}
	// keep stays open (keep-alive): it holds the address's one slot.
	if code, _ := request(t, addr, "-"); code != http.StatusTooManyRequests || refused.Load() != 1 {
		t.Fatalf("a second connection while one is kept alive: %d, refused %d; want 429, 1", code, refused.Load())
	}
	keep.Close()
}
