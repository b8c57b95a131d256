package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/api"
)

// registeredPatterns parses the mux registrations (mux.HandleFunc and
// mux.Handle calls) in the non-test Go files of dirs: the source of truth
// for which routes exist. A pattern built as "prefix/"+v inside
// `for _, v := range []string{...}` expands to one pattern per element.
func registeredPatterns(t *testing.T, dirs ...string) []string {
	t.Helper()
	var out []string
	fset := token.NewFileSet()
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, name, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ranges := map[string][]string{} // loop variable -> values
			ast.Inspect(f, func(n ast.Node) bool {
				if rs, ok := n.(*ast.RangeStmt); ok {
					if v, ok := rs.Value.(*ast.Ident); ok {
						if lit, ok := rs.X.(*ast.CompositeLit); ok {
							for _, e := range lit.Elts {
								if s, ok := e.(*ast.BasicLit); ok && s.Kind == token.STRING {
									u, _ := strconv.Unquote(s.Value)
									ranges[v.Name] = append(ranges[v.Name], u)
								}
							}
						}
					}
				}
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || (sel.Sel.Name != "HandleFunc" && sel.Sel.Name != "Handle") {
					return true
				}
				if id, ok := sel.X.(*ast.Ident); !ok || id.Name != "mux" {
					return true
				}
				switch arg := call.Args[0].(type) {
				case *ast.BasicLit:
					s, _ := strconv.Unquote(arg.Value)
					out = append(out, s)
				case *ast.BinaryExpr:
					lit, ok1 := arg.X.(*ast.BasicLit)
					v, ok2 := arg.Y.(*ast.Ident)
					if !ok1 || !ok2 || len(ranges[v.Name]) == 0 {
						t.Fatalf("%s: cannot read the pattern of %s", fset.Position(call.Pos()), name)
					}
					prefix, _ := strconv.Unquote(lit.Value)
					for _, s := range ranges[v.Name] {
						out = append(out, prefix+s)
					}
				default:
					t.Fatalf("%s: mux registration with a pattern that is not a literal", fset.Position(call.Pos()))
				}
				return true
			})
		}
	}
	sort.Strings(out)
	return out
}

// normalise turns a ServeMux pattern into "METHOD /openapi/path": a pattern
// without a method answers GET (what the document lists), {$} is the exact
// path.
func normalise(p string) string {
	method, path, ok := strings.Cut(p, " ")
	if !ok {
		method, path = "GET", p
	}
	path = strings.ReplaceAll(path, "{$}", "")
	if path == "" {
		path = "/"
	}
	return method + " " + path
}

func TestEveryRegisteredRouteIsDocumented(t *testing.T) {
	var registered []string
	for _, p := range registeredPatterns(t, ".", "../../broker") {
		registered = append(registered, normalise(p))
	}
	if len(registered) < 40 {
		t.Fatalf("found only %d registrations: %v", len(registered), registered)
	}
	documented := api.OpenAPIOperations()
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is registered but not in the OpenAPI document", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("operation %s is documented but not registered", d)
		}
	}
}

type openapiDoc struct {
	OpenAPI string `json:"openapi"`
	Paths   map[string]map[string]struct {
		Parameters []struct {
			Name, In string
		} `json:"parameters"`
		RequestBody *struct{} `json:"requestBody"`
		Responses   map[string]struct {
			Content map[string]struct {
				Schema struct {
					Ref string `json:"$ref"`
				} `json:"schema"`
			} `json:"content"`
		} `json:"responses"`
	} `json:"paths"`
	Components struct {
		Schemas map[string]json.RawMessage `json:"schemas"`
	} `json:"components"`
}

func do(t *testing.T, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Every documented operation answers on a running broker (not the mux's
// 404/405), and the document is served without authentication.
func TestEveryDocumentedRouteAnswers(t *testing.T) {
	srv := brokertest.Start(t)
	base := srv.HTTPURL()
	c := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	code, body := do(t, c, "GET", base+"/openapi.json", "")
	if code != 200 {
		t.Fatalf("GET /openapi.json: %d %s", code, body)
	}
	var doc openapiDoc
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.0.3" || len(doc.Paths) < 30 {
		t.Fatalf("document: openapi %q, %d paths", doc.OpenAPI, len(doc.Paths))
	}
	// Every $ref resolves.
	for path, ops := range doc.Paths {
		for m, op := range ops {
			for status, r := range op.Responses {
				for _, ct := range r.Content {
					name := strings.TrimPrefix(ct.Schema.Ref, "#/components/schemas/")
					if _, ok := doc.Components.Schemas[name]; !ok {
						t.Errorf("%s %s %s: schema %q undefined", m, path, status, ct.Schema.Ref)
					}
				}
			}
		}
	}

	// Resources for realistic path parameters.
	mustDo := func(method, path, body string, want int) string {
		t.Helper()
		code, got := do(t, c, method, base+path, body)
		if code != want {
			t.Fatalf("%s %s: %d %s", method, path, code, got)
		}
		return got
	}
	mustDo("POST", "/api/thing-types", `{"thingTypeName":"sensor"}`, 201)
	mustDo("POST", "/api/things", `{"thingName":"dev-1","thingTypeName":"sensor","attributes":{"ring":"canary"}}`, 201)
	mustDo("POST", "/api/groups", `{"groupName":"g1"}`, 201)
	mustDo("POST", "/things/dev-1/shadow", `{"state":{"reported":{"firmware_version":"1.0"}}}`, 200)
	var ro, job struct{ ID string }
	_ = json.Unmarshal([]byte(mustDo("POST", "/api/rollouts", `{"name":"r","target":"*","patch":{"target_version":"1.1"},"waves":[{"name":"all","percent":100}]}`, 201)), &ro)
	_ = json.Unmarshal([]byte(mustDo("POST", "/api/jobs", `{"name":"j","target":"*","patch":{"interval":5}}`, 201)), &job)
	params := map[string]string{"{thing}": "dev-1", "{type}": "sensor", "{group}": "g1"}
	// A signed (unchecked: no key configured) firmware artifact.
	up, _ := http.NewRequest("POST", base+"/api/artifacts?type=esp32&version=1.0.0", strings.NewReader("firmware image"))
	up.Header.Set("Content-Type", "application/octet-stream")
	up.Header.Set("X-Umbra-Signature", "c2lnbmF0dXJl")
	upResp, err := c.Do(up)
	if err != nil {
		t.Fatal(err)
	}
	var art struct{ ID string }
	_ = json.NewDecoder(upResp.Body).Decode(&art)
	upResp.Body.Close()
	if upResp.StatusCode != 201 {
		t.Fatalf("artifact upload: %d", upResp.StatusCode)
	}

	type call struct{ method, path string }
	var calls []call
	for path, ops := range doc.Paths {
		for m := range ops {
			calls = append(calls, call{strings.ToUpper(m), path})
		}
	}
	// Deletions last, the most specific first, so each finds its resource.
	sort.Slice(calls, func(i, j int) bool {
		di, dj := calls[i].method == "DELETE", calls[j].method == "DELETE"
		if di != dj {
			return dj
		}
		if di && len(calls[i].path) != len(calls[j].path) {
			return len(calls[i].path) > len(calls[j].path)
		}
		return calls[i].method+calls[i].path < calls[j].method+calls[j].path
	})
	for _, cl := range calls {
		p := cl.path
		for k, v := range params {
			p = strings.ReplaceAll(p, k, v)
		}
		id := ro.ID
		if strings.HasPrefix(p, "/api/jobs/") {
			id = job.ID
		}
		if strings.HasPrefix(p, "/api/artifacts/") || strings.HasPrefix(p, "/firmware/") {
			id = art.ID
		}
		p = strings.ReplaceAll(p, "{id}", id)
		if strings.Contains(p, "{") {
			t.Fatalf("no value for a parameter of %s", cl.path)
		}
		if p == "/api/aggregations/buckets" {
			p += "?field=attributes.ring"
		}
		if cl.path == "/api/events" {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", base+p, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Errorf("GET /api/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			cancel()
			resp.Body.Close()
			continue
		}
		code, body := do(t, c, cl.method, base+p, "")
		if code == 404 || code == 405 || code >= 500 {
			t.Errorf("%s %s (%s): %d %s", cl.method, cl.path, p, code, body)
		}
		if _, ok := doc.Paths[cl.path][strings.ToLower(cl.method)].Responses[fmt.Sprint(code)]; !ok {
			t.Errorf("%s %s answered %d, which the document does not list: %s", cl.method, p, code, body)
		}
	}
}

// Every $ref in the document names a schema it defines.
func TestEveryReferenceResolves(t *testing.T) {
	raw, err := json.Marshal(api.OpenAPIDocument())
	if err != nil {
		t.Fatal(err)
	}
	var doc openapiDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	refs := regexp.MustCompile(`"\$ref":"#/components/schemas/([^"]+)"`).FindAllStringSubmatch(string(raw), -1)
	if len(refs) < 20 {
		t.Fatalf("found only %d references", len(refs))
	}
	for _, m := range refs {
		if _, ok := doc.Components.Schemas[m[1]]; !ok {
			t.Errorf("$ref to undefined schema %q", m[1])
		}
	}
}
