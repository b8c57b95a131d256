package sim

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/umbra-iot/umbra/shadow"
)

// Defaults of the zero Config.
const (
	DefaultIDPattern         = "esp32-%05d"
	DefaultFirmware          = "1.0.0"
	DefaultThingType         = "esp32"
	DefaultTelemetryInterval = 60 * time.Second
	DefaultKeepAlive         = 120 * time.Second
	DefaultConnectTimeout    = 30 * time.Second
	DefaultConcurrency       = 64
	DefaultOTADuration       = 10 * time.Second
	DefaultRebootDelay       = 2 * time.Second
	DefaultAwake             = 30 * time.Second
	DefaultStateFlush        = time.Second
	// PortsPerSource is how many connections the simulator opens from one
	// loopback source address before it uses the next one (Linux's
	// ephemeral range holds ~28k ports per address).
	PortsPerSource = 20000
)

// Config describes a simulated fleet.
type Config struct {
	// Broker is the MQTT URL: tcp:// or mqtt:// (plain), tls://, ssl:// or
	// mqtts:// (TLS), ws:// or wss:// (WebSocket), host:port after it.
	Broker string
	// Devices is how many devices; their ids are fmt.Sprintf(IDPattern,
	// First+i) for i in [0, Devices).
	Devices   int
	IDPattern string // default "esp32-%05d"
	First     int

	// Firmware is the version every device boots with (default "1.0.0").
	Firmware string
	// Features are desired keys that firmware understands only from a
	// version on (key → minimum version). Older firmware ignores such a key
	// (it neither acts nor reports), so its delta never clears, as the
	// seed's "no shadow versioning" mistake describes. led_is_on,
	// telemetry_interval_s, ota_url and target_version are always known;
	// any other desired key is ignored unless listed here.
	Features map[string]string
	// TelemetryInterval is the initial telemetry period (reported as
	// telemetry_interval_s, changeable through desired state). Default 60s;
	// negative disables telemetry.
	TelemetryInterval time.Duration
	// Tags are extra registry attributes for every device (they override
	// the derived ones: deployment_ring, hardware_rev, location, customer_id).
	Tags map[string]string
	// ThingType is the registry thing type (default "esp32").
	ThingType string
	// Rings are the deployment rings and their shares of the fleet (default
	// DefaultRings: 1% canary, 10% early_adopters; the rest is general).
	Rings []RingShare

	// StateFile, when set, is where the devices keep what a real ESP32
	// keeps in flash and NVS across power cycles: the firmware it runs,
	// boot_count, crash_count, the settings it acted on (led_is_on,
	// telemetry_interval_s, feature keys), the OTA URL, the version whose
	// update failed, whether it is bricked. It is read by New (a device found
	// there boots with that state; Firmware is for the others) and written
	// while the fleet runs (every StateFlush when something changed) and at
	// Stop, atomically (temporary file and rename). Entries of devices not in
	// this fleet are kept. A missing file is an empty one.
	StateFile string
	// ResetState ignores what StateFile holds (every device boots fresh)
	// and overwrites it.
	ResetState bool
	// StateFlush is how often changed state is written (default 1s).
	StateFlush time.Duration

	// PersistentSession connects with clean session off, so deltas
	// published while a device is offline are queued for it.
	PersistentSession bool
	// KeepAlive is the MQTT keepalive (default 120s, ESP-IDF's).
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt (default 30s).
	ConnectTimeout time.Duration
	// Concurrency is how many devices connect at once (default 64).
	Concurrency int
	// ConnectRate caps new connections per second (0: no cap).
	ConnectRate float64
	// SourceAddrs are local IP addresses to connect from, used in turn by
	// device index (device i uses SourceAddrs[i % len]). Empty: for more
	// than PortsPerSource devices to a loopback broker, 127.0.0.2,
	// 127.0.0.3, … are used, enough for PortsPerSource each.
	SourceAddrs []net.IP

	// OTADuration is how long a download takes (default 10s; progress is
	// reported at 0, 25, 50, 75, 100%). RebootDelay is how long a reboot
	// keeps a device offline (default 2s).
	OTADuration time.Duration
	RebootDelay time.Duration
	// Download makes devices download real images: a desired ota_url that
	// is an http(s) URL is fetched (Range requests resume a dropped
	// download), its size and SHA-256 checked against ota_size and
	// ota_sha256 and, with SigningKey, its ota_signature; only an image
	// that verifies is installed, otherwise ota_status failed with the
	// reason in ota_error. OTADuration is then unused.
	Download bool
	// HTTPClient downloads images (default http.DefaultClient).
	HTTPClient *http.Client
	// SigningKey, when set (an *ecdsa.PublicKey on P-256 or an
	// ed25519.PublicKey), is the key images must be signed with.
	SigningKey any

	// JobsAPI makes the devices take updates through the AWS IoT Jobs
	// device API instead of desired state (see jobs.go): they subscribe to
	// notify-next, start the next job, report IN_PROGRESS with progress in
	// statusDetails, and end it SUCCEEDED (after rebooting into the new
	// firmware) or FAILED, per the faults. A job document that carries the
	// image's http(s) url and sha256 is downloaded and verified for real,
	// as with Download.
	JobsAPI bool

	// LowPower, when Period > 0, runs the seed's battery loop: wake,
	// connect, /get, act on the delta, report, telemetry, disconnect, sleep
	// Period. A device's first wake is spread over the first Period.
	LowPower LowPower

	// Faults are the fault-injection rules, applied in order.
	Faults []Fault
	// Seed varies which devices the faults hit (default 0).
	Seed int64

	// Registrar, when set, registers every device (name, type, attributes)
	// before it first connects.
	Registrar Registrar
	// Credentials, when set, gives each device its secret: it connects with
	// username = thing name, password = secret.
	Credentials Credentials
	// TLS is the client TLS configuration for ssl:// and wss:// brokers.
	// ClientCert, when set, gives each device its certificate (CN = thing).
	TLS        *tls.Config
	ClientCert func(thing string) (*tls.Certificate, error)

	Logger *slog.Logger
}

// LowPower is the seed's battery-powered loop.
type LowPower struct {
	Period time.Duration // sleep between wakes; 0 disables low-power mode
	Awake  time.Duration // longest a wake lasts (default 30s)
}

func (c Config) withDefaults() Config {
	if c.IDPattern == "" {
		c.IDPattern = DefaultIDPattern
	}
	if c.Firmware == "" {
		c.Firmware = DefaultFirmware
	}
	if c.ThingType == "" {
		c.ThingType = DefaultThingType
	}
	if c.TelemetryInterval == 0 {
		c.TelemetryInterval = DefaultTelemetryInterval
	}
	if c.Rings == nil {
		c.Rings = DefaultRings
	}
	if c.StateFlush <= 0 {
		c.StateFlush = DefaultStateFlush
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.OTADuration == 0 {
		c.OTADuration = DefaultOTADuration
	}
	if c.RebootDelay == 0 {
		c.RebootDelay = DefaultRebootDelay
	}
	if c.LowPower.Period > 0 && c.LowPower.Awake == 0 {
		c.LowPower.Awake = DefaultAwake
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if len(c.SourceAddrs) == 0 && c.Devices > PortsPerSource && loopbackBroker(c.Broker) {
		for i := range (c.Devices + PortsPerSource - 1) / PortsPerSource {
			c.SourceAddrs = append(c.SourceAddrs, net.IPv4(127, 0, 0, byte(2+i)))
		}
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	u, err := url.Parse(c.Broker)
	switch {
	case err != nil || u.Host == "":
		errs = append(errs, fmt.Errorf("broker %q: want a URL such as tcp://127.0.0.1:1883", c.Broker))
	case !knownScheme(u.Scheme):
		errs = append(errs, fmt.Errorf("broker %q: unknown scheme %q (want tcp://, mqtt://, tls://, ssl://, mqtts://, ws:// or wss://)", c.Broker, u.Scheme))
	}
	if c.Devices <= 0 {
		errs = append(errs, fmt.Errorf("devices must be positive (got %d)", c.Devices))
	}
	if c.First < 0 {
		errs = append(errs, fmt.Errorf("first index must not be negative (got %d)", c.First))
	}
	if c.Devices > 0 {
		for _, i := range []int{c.First, c.First + c.Devices - 1} {
			if id := fmt.Sprintf(c.IDPattern, i); !shadow.ValidThingName(id) {
				errs = append(errs, fmt.Errorf("id pattern %q gives %q, not a valid thing name ([a-zA-Z0-9:_-]{1,128})", c.IDPattern, id))
				break
			}
		}
	}
	if c.KeepAlive < 0 || c.ConnectTimeout < 0 || c.OTADuration < 0 || c.RebootDelay < 0 || c.LowPower.Period < 0 || c.LowPower.Awake < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	total := 0.0
	for _, r := range c.Rings {
		total += r.Share
		if r.Name == "" || r.Share < 0 {
			errs = append(errs, fmt.Errorf("ring %+v: want a name and a share in [0,1]", r))
		}
	}
	if total > 1+1e-9 {
		errs = append(errs, fmt.Errorf("ring shares add up to %g%%, more than 100%%", total*100))
	}
	if c.ConnectRate < 0 {
		errs = append(errs, fmt.Errorf("connect rate must not be negative (got %g)", c.ConnectRate))
	}
	return errors.Join(errs...)
}

// TLSSchemes are the broker URL schemes that mean MQTT over TLS.
var TLSSchemes = []string{"tls", "ssl", "mqtts", "wss"}

func knownScheme(s string) bool {
	switch strings.ToLower(s) {
	case "tcp", "mqtt", "tls", "ssl", "mqtts", "ws", "wss":
		return true
	}
	return false
}

// IsTLSBroker reports whether the broker URL uses TLS.
func IsTLSBroker(broker string) bool {
	u, err := url.Parse(broker)
	if err != nil {
		return false
	}
	for _, s := range TLSSchemes {
		if strings.EqualFold(u.Scheme, s) {
			return true
		}
	}
	return false
}

// loopbackBroker reports whether the broker URL names a loopback host.
func loopbackBroker(broker string) bool {
	u, err := url.Parse(broker)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// ParseSourceAddrs reads a comma-separated list of IPv4 addresses and
// ranges (127.0.0.2-127.0.0.9).
func ParseSourceAddrs(s string) ([]net.IP, error) {
	var out []net.IP
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a := net.ParseIP(lo).To4()
		if a == nil {
			return nil, fmt.Errorf("source address %q is not an IPv4 address", lo)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b := net.ParseIP(hi).To4()
		if b == nil || a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] > b[3] {
			return nil, fmt.Errorf("source range %q: want a.b.c.x-a.b.c.y with x <= y", part)
		}
		for x := int(a[3]); x <= int(b[3]); x++ {
			out = append(out, net.IPv4(a[0], a[1], a[2], byte(x)).To4())
		}
	}
	return out, nil
}
