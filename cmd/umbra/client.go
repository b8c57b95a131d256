package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/umbra-iot/umbra/client"
)

// The client commands (umbra shadow|things|query|groups|jobs|rollout) talk
// to the REST API. Exit codes: 0 ok, 1 the server answered with an error,
// 2 usage error, 3 the server cannot be reached.

// cli is one client command's context: where the server is, how to print.
type cli struct {
	ctx            context.Context
	stdout, stderr io.Writer
	env            []string

	// From flags (empty: not given).
	server, apiKey, caFile, config string
	json                           bool
	output                         string // -o: "", json, yaml, wide
	yaml                           bool   // -o yaml: print the JSON as YAML

	api  *client.Client // nil until the first request
	base string
}

// cliConfig is ~/.config/umbra/cli.yaml.
type cliConfig struct {
	Server string `yaml:"server"`
	APIKey string `yaml:"api_key"`
	CAFile string `yaml:"ca_file"`
}

// unreachableError means no answer came from the server (exit code 3).
type unreachableError = client.UnreachableError

// flagSet returns a flag set for a client command with the connection and
// output flags every client command takes.
func (c *cli) flagSet(name, argsUsage, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet("umbra "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.StringVar(&c.server, "server", "", "API address (default $UMBRA_SERVER, the config file, or http://127.0.0.1:8080)")
	fs.StringVar(&c.apiKey, "api-key", "", "API key, sent as Authorization: Bearer (default $UMBRA_API_KEY)")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM CA certificate to verify an HTTPS server (default $UMBRA_CA_FILE)")
	fs.StringVar(&c.config, "config", "", "client config file (default ~/.config/umbra/cli.yaml; $UMBRA_CLI_CONFIG)")
	fs.BoolVar(&c.json, "json", false, "print the API's JSON instead of a table (same as -o json)")
	fs.StringVar(&c.output, "o", "", "output format: json, yaml or wide (a table; the default)")
	fs.StringVar(&c.output, "output", "", "same as -o")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: umbra %s %s\n\n%s\n\nFlags:\n", name, argsUsage, summary)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and positional arguments in any order and checks
// that between min and max (-1: any) positional arguments were given.
func (c *cli) parse(fs *flag.FlagSet, args []string, min, max int, what string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{fmt.Errorf("%s: %v (see %s -h)", strings.TrimPrefix(fs.Name(), "umbra "), err, fs.Name())}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < min {
		return nil, usageError{fmt.Errorf("%s: missing %s (usage: %s %s)", strings.TrimPrefix(fs.Name(), "umbra "), what, fs.Name(), what)}
	}
	if max >= 0 && len(pos) > max {
		return nil, usageError{fmt.Errorf("%s: unexpected argument %q (usage: %s %s)", strings.TrimPrefix(fs.Name(), "umbra "), pos[max], fs.Name(), what)}
	}
	if err := c.setOutput(); err != nil {
		return nil, err
	}
	return pos, nil
}

// connect resolves the server, key and CA: flags, then environment, then
// the config file, then defaults.
func (c *cli) connect() error {
	var file cliConfig
	path, explicit := c.config, c.config != ""
	if path == "" {
		if path = lookup(c.env, "UMBRA_CLI_CONFIG"); path != "" {
			explicit = true
		}
	}
	if path == "" {
		dir := lookup(c.env, "XDG_CONFIG_HOME")
		if dir == "" {
			if home := lookup(c.env, "HOME"); home != "" {
				dir = filepath.Join(home, ".config")
			}
		}
		if dir != "" {
			path = filepath.Join(dir, "umbra", "cli.yaml")
		}
	}
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			dec := yaml.NewDecoder(bytes.NewReader(b))
			dec.KnownFields(true)
			if err := dec.Decode(&file); err != nil && !errors.Is(err, io.EOF) {
				return usageError{fmt.Errorf("config file %s: %v (known keys: server, api_key, ca_file)", path, err)}
			}
		case explicit || !errors.Is(err, os.ErrNotExist):
			return usageError{fmt.Errorf("config file: %v", err)}
		}
	}
	pick := func(vals ...string) string {
		for _, v := range vals {
			if v != "" {
				return v
			}
		}
		return ""
	}
	server := pick(c.server, lookup(c.env, "UMBRA_SERVER"), file.Server, "http://127.0.0.1:8080")
	c.apiKey = pick(c.apiKey, lookup(c.env, "UMBRA_API_KEY"), file.APIKey)
	caFile := pick(c.caFile, lookup(c.env, "UMBRA_CA_FILE"), file.CAFile)
	api, err := client.New(client.Config{Server: server, APIKey: c.apiKey, CAFile: caFile, UserAgent: "umbra-cli/" + versionString()})
	if err != nil {
		return usageError{err}
	}
	c.api, c.base = api, api.BaseURL()
	return nil
}

// request sends a request (see client.Client.Do for body) with a 30s
// timeout and returns the body of a 2xx answer.
func (c *cli) request(method, path string, query url.Values, body any) ([]byte, error) {
	return c.getJSON(method, path, query, body, nil)
}

// getJSON requests and decodes the answer into v; it returns the raw body.
func (c *cli) getJSON(method, path string, query url.Values, body, v any) ([]byte, error) {
	if err := c.lazyConnect(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	b, err := c.api.Call(ctx, method, path, query, body, v)
	if err != nil && c.ctx.Err() != nil {
		return nil, c.ctx.Err()
	}
	return b, err
}

// send sends a request whose answer the caller reads (and closes);
// timeout 0 means none.
func (c *cli) send(ctx context.Context, method, path string, query url.Values, body any, timeout time.Duration) (*http.Response, error) {
	if err := c.lazyConnect(); err != nil {
		return nil, err
	}
	var cancel context.CancelFunc = func() {}
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	resp, err := c.api.Do(ctx, method, path, query, body)
	if err != nil {
		cancel()
		if c.ctx.Err() != nil {
			return nil, c.ctx.Err()
		}
		return nil, err
	}
	resp.Body = &cancelBody{resp.Body, cancel}
	return resp, nil
}

// lazyConnect resolves the connection settings on the first request, so
// that parsing a command line never depends on them.
func (c *cli) lazyConnect() error {
	if c.api != nil {
		return nil
	}
	return c.connect()
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error { err := b.ReadCloser.Close(); b.cancel(); return err }

// printJSON prints an API answer, indented.
func (c *cli) printJSON(raw []byte) error {
	if c.yaml {
		return c.printYAML(raw)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		_, err = c.stdout.Write(raw)
		return err
	}
	buf.WriteByte('\n')
	_, err := c.stdout.Write(buf.Bytes())
	return err
}

// stream follows the server-sent events at path until fn returns true,
// the context ends or the stream breaks. ready runs once the stream is
// open.
func (c *cli) stream(ctx context.Context, path string, query url.Values, ready func(), fn func(typ string, data []byte) (bool, error)) error {
	if err := c.lazyConnect(); err != nil {
		return err
	}
	return c.api.Stream(ctx, path, query, ready, fn)
}

// table returns a writer for aligned columns; call Flush.
func (c *cli) table() *tabwriter.Writer { return tabwriter.NewWriter(c.stdout, 0, 8, 2, ' ', 0) }

// formatTime prints Unix seconds (or milliseconds) in UTC, "-" for zero.
// fetchPages reads a paged list: every page, or the first limit items.
func fetchPages[T any](c *cli, path, field string, limit, maxPage int) ([]T, error) {
	if err := c.lazyConnect(); err != nil {
		return nil, err
	}
	return client.Pages[T](c.ctx, c.api, path, field, limit, maxPage)
}

func formatTime(v int64) string {
	if v == 0 {
		return "-"
	}
	if v > 1e11 {
		return time.UnixMilli(v).UTC().Format(time.RFC3339)
	}
	return time.Unix(v, 0).UTC().Format(time.RFC3339)
}

// decodeExact is json.Unmarshal that keeps numbers as the literals they
// were written as (json.Number), because shadows store numbers exactly:
// 100000000000000000001, 1.50 and 1e400 must reach the server and the
// screen unchanged, not as float64.
func decodeExact(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("unexpected data after the JSON value")
	}
	return nil
}

// pairs parses k=v (string) and k:=v (JSON) arguments into an object.
func pairs(args []string, what string) (map[string]any, error) {
	out := map[string]any{}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, ":="); ok && k != "" && !strings.Contains(k, "=") {
			var val any
			if err := decodeExact([]byte(v), &val); err != nil {
				return nil, usageError{fmt.Errorf("%s %q: the value after := must be JSON (%v)", what, a, err)}
			}
			out[k] = val
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("%s %q: want key=value (a string) or key:=JSON", what, a)}
		}
		out[k] = v
	}
	return out, nil
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// joinAttrs prints a string map as k=v pairs sorted by key.
func joinAttrs(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// setOutput checks -o and folds it into the json/yaml switches.
func (c *cli) setOutput() error {
	switch c.output {
	case "", "wide", "table":
	case "json":
		c.json = true
	case "yaml", "yml":
		c.json, c.yaml = true, true
	default:
		return usageError{fmt.Errorf("-o %q: want json, yaml or wide", c.output)}
	}
	return nil
}

// printYAML prints a JSON document as YAML. JSON is YAML, so decoding it
// into yaml.Node keeps every scalar's text: numbers come out exactly as the
// server sent them (no float rounding).
func (c *cli) printYAML(raw []byte) error {
	var n yaml.Node
	if err := yaml.Unmarshal(bytes.TrimSpace(raw), &n); err != nil {
		return fmt.Errorf("printing YAML: %v", err)
	}
	clearStyle(&n)
	enc := yaml.NewEncoder(c.stdout)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

// clearStyle drops JSON's flow style and quoting so the YAML is block style.
func clearStyle(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		n.Style &^= yaml.DoubleQuotedStyle
	}
	for _, k := range n.Content {
		clearStyle(k)
	}
}
