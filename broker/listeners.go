package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/umbra-iot/umbra/internal/api"
	"github.com/umbra-iot/umbra/internal/limits"
	"github.com/umbra-iot/umbra/tempfork/mochi/listeners"
)

// connTracker remembers a listener's open connections so Close can end them
// directly. (Mochi's own close path walks Clients.GetByListener, which can
// deadlock against disconnecting clients: mochi-mqtt/server#488.)
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
}

func (t *connTracker) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return false
	}
	if t.conns == nil {
		t.conns = make(map[net.Conn]struct{})
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *connTracker) remove(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *connTracker) closeAll() {
	t.mu.Lock()
	t.done = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

// tcpListener serves MQTT over TCP (optionally TLS). Every accepted
// connection gets a deadline of connectTimeout covering the TLS handshake
// and the CONNECT packet; Mochi replaces it with the keepalive deadline once
// CONNECT is read. Mochi sets none before that, so without this a socket
// that never speaks would be held forever.
type tcpListener struct {
	id             string
	ln             net.Listener
	tls            *tls.Config
	connectTimeout time.Duration
	log            *slog.Logger
	limit          *limits.Conns
	writeTimeout   time.Duration
	conns          connTracker
	wg             sync.WaitGroup
}

func (l *tcpListener) ID() string                  { return l.id }
func (l *tcpListener) Address() string             { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string            { return "tcp" }
func (l *tcpListener) Init(log *slog.Logger) error { return nil }

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		release, ok := l.limit.Admit(c.RemoteAddr().String())
		if !ok {
			l.log.Warn("connection refused: too many from one address", "remote", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		if l.connectTimeout > 0 {
			_ = c.SetDeadline(time.Now().Add(l.connectTimeout))
		}
		c = &writeTimeoutConn{Conn: c, timeout: l.writeTimeout}
		if l.tls != nil {
			c = tls.Server(c, l.tls)
		}
		if !l.conns.add(c) {
			release()
			_ = c.Close()
			return
		}
		l.wg.Add(1)
		go l.serveConn(establish, c, release)
	}
}

// serveConn runs one connection: Mochi's client loop, in this goroutine.
// Its frame is kept small, and the cleanup out of line, because it waits in
// the client's read for as long as the device is connected, and the runtime
// keeps an idle goroutine's stack at four times the depth in use: a small
// frame here is what lets the stack of an idle connection shrink to 4 KiB.
func (l *tcpListener) serveConn(establish listeners.EstablishFn, c net.Conn, release func()) {
	err := establish(l.id, c)
	l.connEnded(c, release, err)
}

// connEnded releases what a connection held and logs an error other than
// the peer going away.
//
//go:noinline
func (l *tcpListener) connEnded(c net.Conn, release func(), err error) {
	l.conns.remove(c)
	release()
	l.wg.Done()
	if err != nil && !isDisconnect(err) {
		l.log.Debug("connection ended", "listener", l.id, "remote", c.RemoteAddr().String(), "error", err)
	}
}

func (l *tcpListener) Close(listeners.CloseFn) {
	_ = l.ln.Close()
	l.conns.closeAll()
}

// isDisconnect reports errors that are just a peer going away.
func isDisconnect(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// wsListener serves MQTT over WebSocket (subprotocol "mqtt") on any path.
// It is Umbra's own rather than Mochi's so that connections carry the
// connect deadline and the TLS state (for certificate identity) of the
// underlying HTTP connection.
type wsListener struct {
	id             string
	ln             net.Listener
	tls            *tls.Config
	connectTimeout time.Duration
	log            *slog.Logger
	limit          *limits.Conns
	writeTimeout   time.Duration
	srv            *http.Server
	conns          connTracker
	upgrader       websocket.Upgrader
	origins        originPolicy // which web pages may connect (edge.go)
	refused        func()       // counts a refused Origin

	mu        sync.Mutex
	establish listeners.EstablishFn
}

func newWSListener(id string, ln net.Listener, tlsConf *tls.Config, connectTimeout time.Duration, log *slog.Logger, limit *limits.Conns) *wsListener {
	l := &wsListener{id: id, ln: ln, tls: tlsConf, connectTimeout: connectTimeout, log: log, limit: limit}
	l.upgrader = websocket.Upgrader{
		Subprotocols: []string{"mqtt"},
		// An idle device holds a 1 KiB read buffer of its own rather than
		// the 4 KiB one net/http read the upgrade request with, and no
		// write buffer: one comes from the pool while a message is written.
		ReadBufferSize:  1024,
		WriteBufferPool: new(sync.Pool),
		// Devices and tools send no Origin and connect from anywhere; a
		// browser page may connect only from the listener's own origin or
		// an allowed one (handle answers the others first, in JSON).
		CheckOrigin: func(r *http.Request) bool { return l.origins.allow(r) },
		// A request that is no WebSocket upgrade gets the API's JSON error.
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			api.WriteError(w, api.Errorf(status, "", "%s: %v", http.StatusText(status), reason))
		},
	}
	l.srv = &http.Server{
		Handler:           http.HandlerFunc(l.handle),
		ReadHeaderTimeout: connectTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		TLSConfig:         tlsConf,
		// A keep-alive connection that never upgrades (a refused or plain
		// HTTP request) is not held either.
		IdleTimeout:    connectTimeout,
		MaxHeaderBytes: DefaultHTTPMaxHeaderBytes,
	}
	return l
}

func (l *wsListener) ID() string                  { return l.id }
func (l *wsListener) Address() string             { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string            { return "ws" }
func (l *wsListener) Init(log *slog.Logger) error { return nil }

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	l.establish = establish
	l.mu.Unlock()
	ln := l.ln
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("websocket listener stopped", "listener", l.id, "error", err)
	}
}

func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	establish := l.establish
	l.mu.Unlock()
	if !l.origins.allow(r) {
		if l.refused != nil {
			l.refused()
		}
		l.log.Warn("websocket refused: a web page of another origin", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "host", r.Host)
		api.WriteError(w, api.Errorf(http.StatusForbidden, "", "Forbidden: Origin %s may not open MQTT over WebSocket on %s; add it to http.allowed_origins to allow it",
			r.Header.Get("Origin"), r.Host))
		return
	}
	release, ok := l.limit.Admit(r.RemoteAddr)
	if !ok {
		l.log.Warn("websocket refused: too many connections from one address", "remote", r.RemoteAddr)
		api.WriteError(w, api.Errorf(http.StatusTooManyRequests, "", "Too Many Requests: too many connections from your address"))
		return
	}
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		release()
		return // the upgrader has answered with an HTTP error
	}
	conn := &wsConn{Conn: c.UnderlyingConn(), ws: c, tls: r.TLS, writeTimeout: l.writeTimeout}
	if l.connectTimeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(l.connectTimeout))
	}
	if !l.conns.add(conn) {
		release()
		_ = conn.Close()
		return
	}
	// The MQTT session runs in a goroutine of its own so that this handler
	// returns: net/http's connection goroutine, its 4 KiB buffers and the
	// upgrade request would otherwise stay pinned under every WebSocket
	// device for as long as it is connected.
	go l.serveConn(establish, conn, release)
}

// serveConn runs one upgraded connection: Mochi's client loop, in this
// goroutine (see tcpListener.serveConn for why its frame is small).
func (l *wsListener) serveConn(establish listeners.EstablishFn, c *wsConn, release func()) {
	err := establish(l.id, c)
	l.connEnded(c, release, err)
}

// connEnded releases what a connection held and logs an error other than
// the peer going away.
//
//go:noinline
func (l *wsListener) connEnded(c *wsConn, release func(), err error) {
	l.conns.remove(c)
	release()
	if err != nil && !isDisconnect(err) {
		l.log.Debug("websocket connection ended", "listener", l.id, "remote", c.RemoteAddr().String(), "error", err)
	}
}

func (l *wsListener) Close(listeners.CloseFn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = l.srv.Shutdown(ctx)
	_ = l.ln.Close() // in case Serve never ran
	l.conns.closeAll()
}

// wsConn adapts a WebSocket to the byte stream Mochi reads: MQTT packets may
// span or share binary frames.
type wsConn struct {
	net.Conn
	ws           *websocket.Conn
	r            io.Reader
	tls          *tls.ConnectionState
	writeTimeout time.Duration
}

var errTextFrame = errors.New("websocket: MQTT needs binary frames")

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errTextFrame
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			return n, nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		_ = c.ws.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			_ = c.Conn.Close() // see writeTimeoutConn
		}
		return 0, err
	}
	return len(p), nil
}

// ConnectionState exposes the TLS state of a wss:// connection, so identity
// checks treat WebSocket and TCP clients alike.
func (c *wsConn) ConnectionState() (tls.ConnectionState, bool) {
	if c.tls == nil {
		return tls.ConnectionState{}, false
	}
	return *c.tls, true
}

// writeTimeoutConn bounds every write. Mochi writes to a client while
// holding that client's lock, and publishers delivering to the client take
// the same lock; a client that stops reading would otherwise block, for
// ever, every device whose messages reach it. With the bound, such a client
// is disconnected after WriteTimeout and the others go on.
type writeTimeoutConn struct {
	net.Conn
	timeout time.Duration
}

func (c *writeTimeoutConn) Write(p []byte) (int, error) {
	if c.timeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	n, err := c.Conn.Write(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		// Mochi ignores write errors and would write (and wait) again:
		// closing ends the connection, whose read loop then tears it down.
		_ = c.Conn.Close()
	}
	return n, err
}
