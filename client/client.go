// Package client is a Go client for Umbra's REST API, shared by the umbra
// command-line tool and by any Go program (CI jobs, embedders) that drives
// a fleet.
//
//	c, err := client.New(client.Config{Server: "https://umbra.example:8443", APIKey: key})
//	things, err := c.ListThings(ctx)
//	raw, err := c.Shadow(ctx, "esp32-001", "") // the API's JSON, numbers exact
//
// Errors: an answer of the server that is not 2xx is an *Error (status,
// message and field of the API's JSON error); no answer at all is an
// UnreachableError. Typed methods use the registry's own wire types;
// shadow documents are returned as raw JSON so that numbers stay exact.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/umbra-iot/umbra/registry"
)

// Config says where the server is and how to authenticate.
type Config struct {
	// Server is the API's base URL, e.g. http://127.0.0.1:8080 (a bare
	// host:port means http).
	Server string
	// APIKey is sent as Authorization: Bearer when not empty.
	APIKey string
	// CAFile is a PEM CA certificate that verifies an HTTPS server.
	CAFile string
	// UserAgent is sent with every request (default "umbra-client").
	UserAgent string
	// HTTPClient replaces the default client (CAFile is then ignored).
	HTTPClient *http.Client
}

// Client talks to one Umbra server. It is safe for concurrent use.
type Client struct {
	base, apiKey, userAgent string
	http                    *http.Client
}

// Error is an error answer of the server.
type Error struct {
	Status  int
	Message string
	Field   string
}

func (e *Error) Error() string {
	msg := e.Message
	if e.Field != "" && !strings.Contains(msg, e.Field) {
		msg += " (field " + e.Field + ")"
	}
	return fmt.Sprintf("%d %s", e.Status, msg)
}

// UnreachableError means no (complete) answer came from the server.
type UnreachableError struct{ Err error }

func (e UnreachableError) Error() string { return e.Err.Error() }
func (e UnreachableError) Unwrap() error { return e.Err }

// New checks the configuration and returns a client; it does not connect.
func New(cfg Config) (*Client, error) {
	server := cfg.Server
	if server == "" {
		server = "http://127.0.0.1:8080"
	}
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q: want a URL such as http://127.0.0.1:8080", server)
	}
	c := &Client{base: strings.TrimRight(u.String(), "/"), apiKey: cfg.APIKey, userAgent: cfg.UserAgent, http: cfg.HTTPClient}
	if c.userAgent == "" {
		c.userAgent = "umbra-client"
	}
	if c.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("CA file: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA file %s holds no PEM certificate", cfg.CAFile)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		c.http = &http.Client{Transport: tr}
	}
	return c, nil
}

// BaseURL is the server's URL without a trailing slash.
func (c *Client) BaseURL() string { return c.base }

// Do sends a request; body is nil, []byte (JSON as is) or a value to encode
// as JSON. A 2xx answer is returned for the caller to read and close;
// anything else is an *Error, no answer an UnreachableError.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(enc)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, UnreachableError{fmt.Errorf("cannot reach %s: %v", c.base, errors.Unwrap(err))}
	}
	if resp.StatusCode >= 300 {
		return nil, errorOf(resp)
	}
	return resp, nil
}

// errorOf reads a non-2xx answer into an *Error (and closes its body).
func errorOf(resp *http.Response) *Error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{Status: resp.StatusCode}
	var doc struct {
		Message string `json:"message"`
		Field   string `json:"field"`
	}
	if json.Unmarshal(b, &doc) == nil && doc.Message != "" {
		e.Message, e.Field = doc.Message, doc.Field
	} else if s := strings.TrimSpace(string(b)); s != "" && len(s) < 200 {
		e.Message = s
	} else {
		e.Message = strings.ToLower(http.StatusText(resp.StatusCode))
	}
	return e
}

// Upload streams body (size bytes, -1 if unknown) as an
// application/octet-stream request with the given extra headers, and
// decodes the JSON answer into v. The body is never held in memory.
func (c *Client) Upload(ctx context.Context, method, path string, query url.Values, body io.Reader, size int64, header map[string]string, v any) ([]byte, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	for k, val := range header {
		req.Header.Set(k, val)
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, UnreachableError{fmt.Errorf("cannot reach %s: %v", c.base, errors.Unwrap(err))}
	}
	if resp.StatusCode >= 300 {
		return nil, errorOf(resp)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, UnreachableError{fmt.Errorf("reading the answer of %s: %v", c.base, err)}
	}
	if v != nil && len(b) > 0 {
		if err := json.Unmarshal(b, v); err != nil {
			return nil, fmt.Errorf("unexpected answer from %s%s: %v", c.base, path, err)
		}
	}
	return b, nil
}

// Call sends a request and returns the body of the 2xx answer; when v is
// not nil the body is also decoded into it.
func (c *Client) Call(ctx context.Context, method, path string, query url.Values, body, v any) ([]byte, error) {
	resp, err := c.Do(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, UnreachableError{fmt.Errorf("reading the answer of %s: %v", c.base, err)}
	}
	if v != nil && len(b) > 0 {
		if err := json.Unmarshal(b, v); err != nil {
			return nil, fmt.Errorf("unexpected answer from %s%s: %v", c.base, path, err)
		}
	}
	return b, nil
}

// Pages reads a paged list (pageSize/nextToken) whose items are in the
// answer's field: every page, or the first limit items when limit > 0,
// asking for up to maxPage at a time.
func Pages[T any](ctx context.Context, c *Client, path, field string, limit, maxPage int) ([]T, error) {
	var all []T
	next := ""
	for {
		q := url.Values{"pageSize": {strconv.Itoa(maxPage)}}
		if limit > 0 && limit < maxPage {
			q.Set("pageSize", strconv.Itoa(limit))
		}
		if next != "" {
			q.Set("nextToken", next)
		}
		var page map[string]json.RawMessage
		if _, err := c.Call(ctx, "GET", path, q, nil, &page); err != nil {
			return nil, err
		}
		var items []T
		if raw, ok := page[field]; ok {
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, field, err)
			}
		}
		all = append(all, items...)
		if limit > 0 && len(all) >= limit {
			return all[:limit], nil
		}
		next = ""
		if raw, ok := page["nextToken"]; ok {
			_ = json.Unmarshal(raw, &next)
		}
		if next == "" {
			return all, nil
		}
	}
}

// Stream follows the server-sent events at path until fn returns true, the
// context ends (nil) or the stream breaks (UnreachableError). ready runs
// once the stream is open.
func (c *Client) Stream(ctx context.Context, path string, query url.Values, ready func(), fn func(typ string, data []byte) (bool, error)) error {
	resp, err := c.Do(ctx, "GET", path, query, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if ready != nil {
		ready()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var typ string
	var data []byte
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != nil {
				done, err := fn(typ, data)
				if err != nil || done {
					return err
				}
			}
			typ, data = "", nil
		case strings.HasPrefix(line, "event:"):
			typ = strings.TrimSpace(line[len("event:"):])
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(line[len("data:"):], " ")...)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return UnreachableError{fmt.Errorf("event stream from %s broke: %v", c.base, err)}
	}
	return UnreachableError{fmt.Errorf("event stream from %s ended", c.base)}
}

// ListThings returns every registered thing.
func (c *Client) ListThings(ctx context.Context) ([]registry.Thing, error) {
	return Pages[registry.Thing](ctx, c, "/api/things", "things", 0, 1000)
}

// ListGroups returns every thing group.
func (c *Client) ListGroups(ctx context.Context) ([]registry.Group, error) {
	var out struct {
		Groups []registry.Group `json:"groups"`
	}
	_, err := c.Call(ctx, "GET", "/api/groups", nil, nil, &out)
	return out.Groups, err
}

// RolloutIDs returns the ids of every rollout.
func (c *Client) RolloutIDs(ctx context.Context) ([]string, error) {
	var out struct {
		Rollouts []struct {
			ID string `json:"id"`
		} `json:"rollouts"`
	}
	if _, err := c.Call(ctx, "GET", "/api/rollouts", nil, nil, &out); err != nil {
		return nil, err
	}
	ids := make([]string, len(out.Rollouts))
	for i, r := range out.Rollouts {
		ids[i] = r.ID
	}
	return ids, nil
}

// Shadow returns a thing's shadow (name "" is the classic one) as the API's
// JSON, unchanged, so that its numbers stay exact.
func (c *Client) Shadow(ctx context.Context, thing, name string) (json.RawMessage, error) {
	var q url.Values
	if name != "" {
		q = url.Values{"name": {name}}
	}
	return c.Call(ctx, "GET", "/things/"+url.PathEscape(thing)+"/shadow", q, nil, nil)
}
