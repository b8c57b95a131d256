package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
)

// Thing is a device as the registry knows it (the admin API's NewThing).
type Thing struct {
	Name       string            `json:"thingName"`
	Type       string            `json:"thingTypeName,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// Registrar puts devices in the device registry. Register must treat a
// thing that already exists as success (simulations are re-run).
type Registrar interface {
	Register(ctx context.Context, t Thing) error
}

// Credentials gives each device its MQTT password (per-thing secret).
type Credentials interface {
	Secret(ctx context.Context, thing string) (string, error)
}

// HTTPRegistry registers things with Umbra's admin API. The first
// registration of a thing type creates it (POST {BaseURL}/api/thing-types
// {"thingTypeName"}, 409 when it exists is fine); each thing is created with
// POST {BaseURL}/api/things {"thingName","thingTypeName","attributes"}. A
// thing that exists already (409) keeps its type and every attribute it
// has; the attributes it lacks (its ring, say) are added with PATCH
// {BaseURL}/api/things/{thing}. APIKey, when set, is sent as
// "Authorization: Bearer <key>" (an admin key when auth is on).
type HTTPRegistry struct {
	BaseURL string
	APIKey  string
	Client  *http.Client // nil: http.DefaultClient

	mu    sync.Mutex
	types map[string]bool // thing types known to exist
}

// Register implements Registrar.
func (r *HTTPRegistry) Register(ctx context.Context, t Thing) error {
	if t.Type != "" {
		if err := r.ensureType(ctx, t.Type); err != nil {
			return fmt.Errorf("register %s: %w", t.Name, err)
		}
	}
	body, err := json.Marshal(t)
	if err != nil {
		return err
	}
	base := strings.TrimRight(r.BaseURL, "/")
	code, resp, err := do(ctx, r.Client, http.MethodPost, base+"/api/things", r.APIKey, body)
	if err != nil {
		return fmt.Errorf("register %s: %w", t.Name, err)
	}
	switch code {
	case http.StatusCreated, http.StatusOK:
		return nil
	case http.StatusConflict:
		if err := r.addMissing(ctx, t); err != nil {
			return fmt.Errorf("register %s (exists): %w", t.Name, err)
		}
		return nil
	}
	return fmt.Errorf("register %s: HTTP %d: %s", t.Name, code, bytes.TrimSpace(resp))
}

// ensureType creates thing type name unless this registry saw it exist.
func (r *HTTPRegistry) ensureType(ctx context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock() // one creation at a time; later calls hit the map
	if r.types[name] {
		return nil
	}
	body, _ := json.Marshal(map[string]any{
		"thingTypeName": name,
		"description":   "simulated ESP32 devices (umbra sim)",
	})
	code, resp, err := do(ctx, r.Client, http.MethodPost, strings.TrimRight(r.BaseURL, "/")+"/api/thing-types", r.APIKey, body)
	if err != nil {
		return fmt.Errorf("create thing type %s: %w", name, err)
	}
	if code != http.StatusCreated && code != http.StatusOK && code != http.StatusConflict {
		return fmt.Errorf("create thing type %s: HTTP %d: %s", name, code, bytes.TrimSpace(resp))
	}
	if r.types == nil {
		r.types = map[string]bool{}
	}
	r.types[name] = true
	return nil
}

// addMissing adds to an existing thing the attributes of t it does not
// have; what it has is left as it is.
func (r *HTTPRegistry) addMissing(ctx context.Context, t Thing) error {
	u := strings.TrimRight(r.BaseURL, "/") + "/api/things/" + url.PathEscape(t.Name)
	code, resp, err := do(ctx, r.Client, http.MethodGet, u, r.APIKey, nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", code, bytes.TrimSpace(resp))
	}
	var have struct {
		Attributes map[string]string `json:"attributes"`
	}
	if err := json.Unmarshal(resp, &have); err != nil {
		return fmt.Errorf("GET %s: %v", u, err)
	}
	missing := map[string]string{}
	for k, v := range t.Attributes {
		if _, ok := have.Attributes[k]; !ok {
			missing[k] = v
		}
	}
	if len(missing) == 0 {
		return nil
	}
	body, _ := json.Marshal(map[string]any{"attributes": missing})
	code, resp, err = do(ctx, r.Client, http.MethodPatch, u, r.APIKey, body)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("add attributes: HTTP %d: %s", code, bytes.TrimSpace(resp))
	}
	return nil
}

// APICredentials issues a secret per device with
// POST {BaseURL}/api/things/{thing}/credentials (admin key), answered
// {"secret": "..."}. Issuing rotates: a device's earlier secret stops working.
type APICredentials struct {
	BaseURL string
	APIKey  string
	Client  *http.Client
}

// Secret implements Credentials.
func (c *APICredentials) Secret(ctx context.Context, thing string) (string, error) {
	u := strings.TrimRight(c.BaseURL, "/") + "/api/things/" + url.PathEscape(thing) + "/credentials"
	code, resp, err := do(ctx, c.Client, http.MethodPost, u, c.APIKey, nil)
	if err != nil {
		return "", fmt.Errorf("credentials for %s: %w", thing, err)
	}
	if code != http.StatusCreated && code != http.StatusOK {
		return "", fmt.Errorf("credentials for %s: HTTP %d: %s", thing, code, bytes.TrimSpace(resp))
	}
	var out struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal(resp, &out); err != nil || out.Secret == "" {
		return "", fmt.Errorf("credentials for %s: answer has no secret", thing)
	}
	return out.Secret, nil
}

func do(ctx context.Context, c *http.Client, method, u, key string, body []byte) (int, []byte, error) {
	if c == nil {
		c = http.DefaultClient
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, b, err
}

// Secrets is a fixed table of device secrets (thing → secret), safe for
// concurrent use. It is also a Credentials.
type Secrets struct {
	mu sync.RWMutex
	m  map[string]string
}

// NewSecrets returns an empty table.
func NewSecrets() *Secrets { return &Secrets{m: map[string]string{}} }

// Secret implements Credentials.
func (s *Secrets) Secret(_ context.Context, thing string) (string, error) {
	s.mu.RLock()
	v, ok := s.m[thing]
	s.mu.RUnlock()
	if !ok {
		return "", fmt.Errorf("no secret for %s in the secrets file", thing)
	}
	return v, nil
}

// Set records a secret.
func (s *Secrets) Set(thing, secret string) {
	s.mu.Lock()
	s.m[thing] = secret
	s.mu.Unlock()
}

// Len is the number of secrets.
func (s *Secrets) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}

// ReadSecrets reads a secrets file: one "thing secret" pair per line
// (separated by spaces or a tab); blank lines and lines starting with #
// are skipped.
func ReadSecrets(r io.Reader) (*Secrets, error) {
	s := NewSecrets()
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("secrets line %d: want \"thing secret\"", n)
		}
		s.m[f[0]] = f[1]
	}
	return s, sc.Err()
}

// LoadSecrets reads a secrets file from path.
func LoadSecrets(path string) (*Secrets, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadSecrets(f)
}

// WriteTo writes the table in ReadSecrets' format, sorted by thing.
func (s *Secrets) WriteTo(w io.Writer) (int64, error) {
	s.mu.RLock()
	names := make([]string, 0, len(s.m))
	for k := range s.m {
		names = append(names, k)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	for _, k := range names {
		fmt.Fprintf(&buf, "%s %s\n", k, s.m[k])
	}
	s.mu.RUnlock()
	return buf.WriteTo(w)
}

// SaveSecrets writes the table to path (mode 0600).
func (s *Secrets) Save(path string) error {
	var buf bytes.Buffer
	if _, err := s.WriteTo(&buf); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o600)
}

// recordingCredentials issues secrets with inner and keeps them in out (so
// that they can be saved for the next run).
type recordingCredentials struct {
	inner Credentials
	out   *Secrets
}

func (r recordingCredentials) Secret(ctx context.Context, thing string) (string, error) {
	s, err := r.inner.Secret(ctx, thing)
	if err == nil {
		r.out.Set(thing, s)
	}
	return s, err
}

// Recording wraps c so that every secret it gives is also kept in out.
func Recording(c Credentials, out *Secrets) Credentials {
	if c == nil || out == nil {
		return c
	}
	return recordingCredentials{c, out}
}
