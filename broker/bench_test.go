package broker_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/gorilla/websocket"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	mt "github.com/umbra-iot/umbra/internal/mqtttest"
	"github.com/umbra-iot/umbra/internal/testpki"
)

// BenchmarkQoS1PubSub measures QoS 1 publish → subscriber round trips
// through the broker with MQTT session persistence off (plain Mochi, state in
// memory) and on (Umbra's write-behind session store). 50 devices with
// persistent sessions (clean session off) each publish QoS 1 on a topic they
// subscribe to at QoS 1 and wait for the message before the next one, so
// every message is an inflight record to persist and delete. Both variants
// run in one invocation so the ratio holds on a noisy machine:
//
//	go test ./broker -run '^$' -bench QoS1PubSub -benchtime 50000x -count 5
func BenchmarkQoS1PubSub(b *testing.B) {
	for _, persist := range []bool{false, true} {
		b.Run("persistence="+map[bool]string{false: "off", true: "on"}[persist], func(b *testing.B) {
			benchRoundTrips(b, "raw", 50, func(o *broker.Options) { o.EphemeralSessions = !persist },
				func(o *paho.ClientOptions) { o.SetCleanSession(false) })
		})
	}
}

// BenchmarkIdleConnectionMemory measures the broker memory held per idle
// MQTT connection: Go heap and stacks after GC, divided by connections, over
// plain TCP and over TLS. The devices connect from a child process (this
// test binary re-run as TestIdleDevices), so the figure is the broker's
// alone. Each device sends CONNECT (clean session, keepalive 0) and then
// nothing.
//
//	go test ./broker -run '^$' -bench IdleConnectionMemory -benchtime 5000x -count 3
func BenchmarkIdleConnectionMemory(b *testing.B) {
	b.Run("tcp", func(b *testing.B) { benchIdleConnections(b, "tcp") })
	b.Run("tls", func(b *testing.B) { benchIdleConnections(b, "tls") })
	b.Run("ws", func(b *testing.B) { benchIdleConnections(b, "ws") })
}

func benchIdleConnections(b *testing.B, transport string) {
	dir := b.TempDir()
	var caFile string
	srv := brokertest.Start(b, func(o *broker.Options) {
		o.EphemeralSessions = true
		if q := os.Getenv("UMBRA_BENCH_CLIENT_QUEUE"); q != "" {
			o.ClientQueue, _ = strconv.Atoi(q)
		}
		if transport == "tls" {
			ca := testpki.NewCA(b, dir, "bench-ca")
			pair := ca.Server(b, dir)
			o.TLS = broker.TLSOptions{CertFile: pair.CertFile, KeyFile: pair.KeyFile}
			caFile = ca.File
		}
	})
	g0 := runtime.NumGoroutine()
	before := heapAndStacks()

	b.ResetTimer()
	child := exec.Command(os.Args[0], "-test.run=^TestIdleDevices$", "-test.count=1")
	addr := srv.MQTTAddr()
	if transport == "ws" {
		addr = srv.WSURL()
	}
	child.Env = append(os.Environ(), "UMBRA_IDLE_DEVICES="+strconv.Itoa(b.N), "UMBRA_IDLE_ADDR="+addr, "UMBRA_IDLE_CA="+caFile)
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = stdin.Close() // the devices disconnect and the child exits
		_ = child.Wait()
	}()
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && lines.Text() != idleDevicesReady {
	}
	if lines.Text() != idleDevicesReady {
		b.Fatalf("device process ended before its %d devices were connected", b.N)
	}
	b.StopTimer()

	after := heapAndStacks()
	n := float64(b.N)
	b.ReportMetric(float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse)/n, "B/conn")
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "heap-B/conn")
	b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n, "stack-B/conn")
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/conn")
}

const idleDevicesReady = "idle devices connected"

// TestIdleDevices is the device side of BenchmarkIdleConnectionMemory, run
// in a child process: it connects UMBRA_IDLE_DEVICES devices to
// UMBRA_IDLE_ADDR (a ws:// URL, or host:port over TLS trusting UMBRA_IDLE_CA
// when set, or plain TCP), says so on
// stdout, and holds them until stdin closes. Without the variables it skips.
func TestIdleDevices(t *testing.T) {
	addr := os.Getenv("UMBRA_IDLE_ADDR")
	if addr == "" {
		t.Skip("device side of BenchmarkIdleConnectionMemory")
	}
	n, err := strconv.Atoi(os.Getenv("UMBRA_IDLE_DEVICES"))
	if err != nil {
		t.Fatal(err)
	}
	dial := func() (idleConn, error) { return net.Dial("tcp", addr) }
	if strings.HasPrefix(addr, "ws://") {
		dial = func() (idleConn, error) {
			ws, _, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}}).Dial(addr, nil)
			return wsDevice{ws}, err
		}
	} else if caFile := os.Getenv("UMBRA_IDLE_CA"); caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", CurvePreferences: []tls.CurveID{tls.X25519}}
		dial = func() (idleConn, error) { return tls.Dial("tcp", addr, cfg) }
	}
	conns := make([]idleConn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := dial()
		if err != nil {
			t.Fatalf("device %d: %v", i, err)
		}
		conns = append(conns, c)
		connectIdle(t, c, i)
	}
	fmt.Println(idleDevicesReady)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// idleConn is what an idle device needs of its connection.
type idleConn interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
}

// wsDevice is an idle device's WebSocket: one MQTT packet per binary
// message, which is all a CONNECT and its CONNACK need.
type wsDevice struct{ *websocket.Conn }

func (d wsDevice) Write(p []byte) (int, error) {
	return len(p), d.WriteMessage(websocket.BinaryMessage, p)
}

func (d wsDevice) Read(p []byte) (int, error) {
	_, msg, err := d.ReadMessage()
	return copy(p, msg), err
}

// connectIdle sends device i's CONNECT (client id idle-i, clean session,
// keepalive 0) on c and reads a successful CONNACK.
func connectIdle(tb testing.TB, c idleConn, i int) {
	tb.Helper()
	if _, err := c.Write(connectPacket(fmt.Sprintf("idle-%d", i))); err != nil {
		tb.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(mt.Wait))
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		tb.Fatalf("device %d: CONNACK %x err %v", i, ack, err)
	}
}

func heapAndStacks() runtime.MemStats {
	// Stacks shrink by half per GC cycle while mostly unused: a few cycles
	// reach the steady size an idle broker settles at.
	for range 5 {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// connectPacket is an MQTT 3.1.1 CONNECT with clean session and keepalive
// 0, optionally carrying a QoS 1 will (encoded by paho's packet codec).
func connectPacket(id string, will ...string) []byte {
	p := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	p.ProtocolName, p.ProtocolVersion, p.CleanSession, p.ClientIdentifier = "MQTT", 4, true, id
	if len(will) == 2 {
		p.WillFlag, p.WillQos, p.WillTopic, p.WillMessage = true, 1, will[0], []byte(will[1])
	}
	var b bytes.Buffer
	_ = p.Write(&b)
	return b.Bytes()
}
