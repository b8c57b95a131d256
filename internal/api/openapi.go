package api

import (
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strings"
)

// The OpenAPI 3 document of the HTTP API, served at GET /openapi.json.
//
// Operations are listed in routes below, one entry per route registered on
// the mux (api/*.go and broker/*.go); the component schemas are the JSON in
// openapiComponents. api/openapi_test.go checks both directions: every
// documented operation answers on a running broker, and every registered
// pattern is documented.

// oaParam is a query parameter.
type oaParam struct {
	name, typ, desc string
	required        bool
	repeated        bool
}

// oaRoute is one operation.
type oaRoute struct {
	method, path, tag, summary string
	role                       string // viewer, operator, admin; "" = no auth
	query                      []oaParam
	body                       string // request schema name, "" for none
	bodyOptional               bool
	status                     int    // main success status
	result                     string // success schema name; "" = no content
	media                      string // success media type; "" = application/json
	errs                       []int  // error statuses besides 401/403
}

var (
	qThing = oaParam{name: "thing", typ: "string", desc: "only events of this thing (repeatable)", repeated: true}
	qName  = oaParam{name: "name", typ: "string", desc: "named shadow; absent for the classic shadow"}
	qQuery = oaParam{name: "query", typ: "string", desc: "fleet query (default *: every thing)"}
	qPage  = oaParam{name: "pageSize", typ: "integer", desc: "page size (1-1000, default 100)"}
	qNext  = oaParam{name: "nextToken", typ: "string", desc: "token from the previous page"}
)

var oaRoutes = []oaRoute{
	// Health, metrics, documentation, dashboard.
	{method: "GET", path: "/healthz", tag: "operations", summary: "Liveness: 200 while the database can be read", status: 200, result: "Text", media: "text/plain", errs: []int{503}},
	{method: "GET", path: "/readyz", tag: "operations", summary: "Readiness: 200 while accepting work; 503 (one line per reason) while shutting down, a listener cannot accept, or the store cannot commit", status: 200, result: "Text", media: "text/plain", errs: []int{503}},
	{method: "GET", path: "/metrics", tag: "operations", summary: "Prometheus metrics", role: "viewer", status: 200, result: "Text", media: "text/plain"},
	{method: "GET", path: "/openapi.json", tag: "operations", summary: "This document", status: 200, result: "Object"},
	{method: "GET", path: "/api/admin/backup", tag: "operations", summary: "Online backup: the database file as one read transaction sees it (umbra db backup --online)", role: "admin", status: 200, result: "Text", media: "application/octet-stream"},
	{method: "GET", path: "/", tag: "dashboard", summary: "Redirects to the dashboard at /ui/", status: 302},
	{method: "GET", path: "/ui/", tag: "dashboard", summary: "The web dashboard (static files under /ui/)", status: 200, result: "Text", media: "text/html", errs: []int{404}},

	// Shadows (AWS IoT data-plane paths).
	{method: "GET", path: "/things/{thing}/shadow", tag: "shadows", summary: "Get a shadow (GetThingShadow)", role: "viewer", query: []oaParam{qName}, status: 200, result: "ShadowDocument", errs: []int{400, 404, 429}},
	{method: "POST", path: "/things/{thing}/shadow", tag: "shadows", summary: "Update a shadow (UpdateThingShadow)", role: "operator", query: []oaParam{qName}, body: "ShadowUpdate", status: 200, result: "ShadowDocument", errs: []int{400, 409, 413, 429}},
	{method: "DELETE", path: "/things/{thing}/shadow", tag: "shadows", summary: "Delete a shadow (DeleteThingShadow)", role: "operator", query: []oaParam{qName}, status: 200, result: "ShadowDeleted", errs: []int{400, 404}},
	{method: "GET", path: "/things/{thing}/shadow/history", tag: "shadows", summary: "Accepted changes of a shadow, newest first", role: "viewer", query: []oaParam{qName,
		{name: "limit", typ: "integer", desc: "entries (1-1000, default 100)"}, {name: "before", typ: "integer", desc: "only versions below this one"}},
		status: 200, result: "ShadowHistory", errs: []int{400}},
	{method: "GET", path: "/api/things/shadow/ListNamedShadowsForThing/{thing}", tag: "shadows", summary: "List the named shadows of a thing", role: "viewer", query: []oaParam{
		{name: "pageSize", typ: "integer", desc: "1-100, default 25"}, {name: "nextToken", typ: "string", desc: "token from the previous page"}},
		status: 200, result: "NamedShadowList", errs: []int{400}},

	// Device credentials.
	{method: "POST", path: "/api/things/{thing}/credentials", tag: "credentials", summary: "Issue or rotate the device secret (shown once)", role: "admin", status: 201, result: "Credentials", errs: []int{400}},
	{method: "DELETE", path: "/api/things/{thing}/credentials", tag: "credentials", summary: "Revoke the device secret", role: "admin", status: 204, errs: []int{400, 404}},

	// Registry.
	{method: "POST", path: "/api/things", tag: "things", summary: "Register a thing", role: "admin", body: "NewThing", status: 201, result: "ThingView", errs: []int{400, 409}},
	{method: "GET", path: "/api/things", tag: "things", summary: "List things by name", role: "viewer", query: []oaParam{qPage, qNext}, status: 200, result: "ThingList", errs: []int{400}},
	{method: "GET", path: "/api/things/{thing}", tag: "things", summary: "Get a thing with its groups and connectivity", role: "viewer", status: 200, result: "ThingView", errs: []int{404}},
	{method: "PATCH", path: "/api/things/{thing}", tag: "things", summary: "Change attributes (null removes one) or the type", role: "admin", body: "ThingPatch", status: 200, result: "ThingView", errs: []int{400, 404, 409}},
	{method: "GET", path: "/api/things/{thing}/connectivity", tag: "things", summary: "A thing's connectivity and its last connects and disconnects, newest first", role: "viewer", status: 200, result: "ConnectivityHistory", errs: []int{404}},
	{method: "DELETE", path: "/api/things/{thing}", tag: "things", summary: "Delete a thing", role: "admin", query: []oaParam{{name: "expectedVersion", typ: "integer", desc: "fail with 409 unless the thing has this version"}}, status: 204, errs: []int{400, 404, 409}},
	{method: "POST", path: "/api/thing-types", tag: "thing types", summary: "Create a thing type", role: "admin", body: "ThingType", status: 201, result: "ThingType", errs: []int{400, 409}},
	{method: "GET", path: "/api/thing-types", tag: "thing types", summary: "List thing types", role: "viewer", status: 200, result: "ThingTypeList"},
	{method: "GET", path: "/api/thing-types/{type}", tag: "thing types", summary: "Get a thing type", role: "viewer", status: 200, result: "ThingType", errs: []int{404}},
	{method: "PATCH", path: "/api/thing-types/{type}", tag: "thing types", summary: "Deprecate or undeprecate a thing type", role: "admin", body: "Deprecation", status: 200, result: "ThingType", errs: []int{400, 404}},
	{method: "DELETE", path: "/api/thing-types/{type}", tag: "thing types", summary: "Delete a thing type no thing uses", role: "admin", status: 204, errs: []int{404, 409}},
	{method: "POST", path: "/api/groups", tag: "groups", summary: "Create a static group, or a dynamic one with queryString", role: "admin", body: "Group", status: 201, result: "Group", errs: []int{400, 409}},
	{method: "GET", path: "/api/groups", tag: "groups", summary: "List groups", role: "viewer", status: 200, result: "GroupList"},
	{method: "GET", path: "/api/groups/{group}", tag: "groups", summary: "Get a group", role: "viewer", status: 200, result: "Group", errs: []int{404}},
	{method: "DELETE", path: "/api/groups/{group}", tag: "groups", summary: "Delete a group", role: "admin", status: 204, errs: []int{404, 409}},
	{method: "GET", path: "/api/groups/{group}/things", tag: "groups", summary: "Members of a group", role: "viewer", query: []oaParam{qPage, qNext}, status: 200, result: "SearchResult", errs: []int{400, 404}},
	{method: "PUT", path: "/api/groups/{group}/things/{thing}", tag: "groups", summary: "Add a thing to a static group", role: "admin", status: 204, errs: []int{400, 404}},
	{method: "DELETE", path: "/api/groups/{group}/things/{thing}", tag: "groups", summary: "Remove a thing from a static group", role: "admin", status: 204, errs: []int{400, 404}},
	{method: "GET", path: "/api/search", tag: "fleet queries", summary: "Things matching a fleet query", role: "viewer", query: []oaParam{qQuery, qPage, qNext,
		{name: "expand", typ: "string", desc: "also return each thing's registry record (thing), classic shadow (shadow), or both (thing,shadow) in `expanded`"}}, status: 200, result: "SearchResult", errs: []int{400}},
	{method: "GET", path: "/api/aggregations/count", tag: "fleet queries", summary: "Count of things matching a query", role: "viewer", query: []oaParam{qQuery}, status: 200, result: "Count", errs: []int{400}},
	{method: "GET", path: "/api/aggregations/buckets", tag: "fleet queries", summary: "Things matching a query, counted by the values of a field", role: "viewer", query: []oaParam{qQuery,
		{name: "field", typ: "string", desc: "e.g. shadow.reported.firmware_version", required: true}, {name: "maxBuckets", typ: "integer", desc: "1-10000, default 100"}},
		status: 200, result: "Buckets", errs: []int{400}},

	// Rollouts and jobs.
	{method: "POST", path: "/api/rollouts", tag: "rollouts", summary: "Create a rollout (and start it with \"start\": true); 400 when the target or a wave selects no device (unless allowEmpty), 409 when the fleet changed since the preview whose plan token the spec carries", role: "operator", body: "RolloutCreate", status: 201, result: "Rollout", errs: []int{400, 409}},
	{method: "POST", path: "/api/rollouts/preview", tag: "rollouts", summary: "Preview the waves of a rollout spec", role: "viewer", body: "RolloutSpec", status: 200, result: "Preview", errs: []int{400}},
	{method: "GET", path: "/api/rollouts", tag: "rollouts", summary: "List rollouts", role: "viewer", status: 200, result: "RolloutList"},
	{method: "GET", path: "/api/rollouts/{id}", tag: "rollouts", summary: "Get a rollout with per-wave progress and events", role: "viewer", status: 200, result: "Rollout", errs: []int{404}},
	{method: "GET", path: "/api/rollouts/{id}/preview", tag: "rollouts", summary: "The waves of a rollout and their devices", role: "viewer", status: 200, result: "Preview", errs: []int{404}},
	{method: "GET", path: "/api/rollouts/{id}/devices", tag: "rollouts", summary: "Devices of a rollout", role: "viewer", query: []oaParam{
		{name: "wave", typ: "integer", desc: "only this wave (from 0)"}, {name: "state", typ: "string", desc: "pending, notified, in_progress, succeeded, failed, timed_out or skipped"}},
		status: 200, result: "DeviceList", errs: []int{400, 404}},
	{method: "POST", path: "/api/rollouts/{id}/start", tag: "rollouts", summary: "Start a created rollout (400 if a wave now selects no device, 409 if the plan differs from its preview)", role: "operator", status: 200, result: "Rollout", errs: []int{400, 404, 409}},
	{method: "POST", path: "/api/rollouts/{id}/pause", tag: "rollouts", summary: "Pause a rollout", role: "operator", status: 200, result: "Rollout", errs: []int{404, 409}},
	{method: "POST", path: "/api/rollouts/{id}/resume", tag: "rollouts", summary: "Resume a paused or halted rollout", role: "operator", status: 200, result: "Rollout", errs: []int{404, 409}},
	{method: "POST", path: "/api/rollouts/{id}/cancel", tag: "rollouts", summary: "Cancel a rollout (notified devices keep the patch)", role: "operator", status: 200, result: "Rollout", errs: []int{404, 409}},
	{method: "POST", path: "/api/rollouts/{id}/rollback", tag: "rollouts", summary: "Restore the previous desired values on notified devices", role: "operator", status: 200, result: "Rollout", errs: []int{404, 409}},
	{method: "POST", path: "/api/rollouts/{id}/approve", tag: "rollouts", summary: "Approve a wave that requires approval", role: "operator", query: []oaParam{{name: "wave", typ: "integer", desc: "wave index (default: the current wave)"}}, status: 200, result: "Rollout", errs: []int{400, 404, 409}},
	{method: "POST", path: "/api/jobs", tag: "jobs", summary: "Create a bulk configuration job (writes desired state, or queues an AWS IoT Jobs execution of a job document)", role: "operator", body: "JobSpec", status: 201, result: "Job", errs: []int{400}},
	{method: "GET", path: "/api/jobs", tag: "jobs", summary: "List jobs", role: "viewer", status: 200, result: "JobList"},
	{method: "GET", path: "/api/jobs/{id}", tag: "jobs", summary: "Get a job and its progress", role: "viewer", status: 200, result: "Job", errs: []int{404}},
	{method: "POST", path: "/api/jobs/{id}/cancel", tag: "jobs", summary: "Cancel a running job (a job document: its QUEUED executions become CANCELED; with force=true its IN_PROGRESS ones too)", role: "operator",
		query: []oaParam{{name: "force", typ: "boolean", desc: "job documents: cancel IN_PROGRESS executions too"}}, status: 200, result: "Job", errs: []int{400, 404, 409}},
	{method: "GET", path: "/api/jobs/{id}/executions", tag: "jobs", summary: "The AWS IoT Jobs executions of a job document (or of a rollout delivered through one), by thing", role: "viewer", status: 200, result: "JobExecutionList", errs: []int{404}},

	// Firmware artifacts.
	{method: "POST", path: "/api/artifacts", tag: "artifacts", summary: "Upload a firmware image: the body is the image (Content-Type: application/octet-stream), streamed to disk; X-Umbra-SHA256 (hex) declares its digest, X-Umbra-Signature (base64) its signature over the digest (required when a signing key is configured). 201 stored, 200 the same image and version were already stored; 400 bad version/type, digest or signature mismatch; 409 the version is another image", role: "operator", query: []oaParam{
		{name: "version", typ: "string", desc: "firmware version, e.g. 1.2.0", required: true}, {name: "type", typ: "string", desc: "device type, e.g. esp32", required: true}},
		status: 201, result: "Artifact", errs: []int{400, 409, 413}},
	{method: "GET", path: "/api/artifacts", tag: "artifacts", summary: "List firmware artifacts, newest first", role: "viewer", status: 200, result: "ArtifactList"},
	{method: "GET", path: "/api/artifacts/{id}", tag: "artifacts", summary: "Get an artifact by id, id prefix (8+ digits) or type@version", role: "viewer", status: 200, result: "Artifact", errs: []int{404}},
	{method: "DELETE", path: "/api/artifacts/{id}", tag: "artifacts", summary: "Delete an artifact (409 while a rollout or running job references it, or a job document with executions still QUEUED or IN_PROGRESS)", role: "operator", status: 204, errs: []int{404, 409}},
	{method: "GET", path: "/api/artifacts/{id}/content", tag: "artifacts", summary: "Download the image (Range, If-Range, ETag = SHA-256, If-None-Match)", role: "viewer", status: 200, result: "Text", media: "application/octet-stream", errs: []int{304, 404, 416}},
	{method: "GET", path: "/api/artifacts/{id}/signature", tag: "artifacts", summary: "The image's signature (raw bytes; X-Umbra-Signature-Algorithm names the algorithm); 404 when unsigned", role: "viewer", status: 200, result: "Text", media: "application/octet-stream", errs: []int{404}},
	{method: "POST", path: "/api/artifacts/{id}/url", tag: "artifacts", summary: "A device's download URL (with its short-lived token), as rollouts write it into desired ota_url", role: "operator", query: []oaParam{
		{name: "thing", typ: "string", desc: "the device the URL is for", required: true}}, status: 200, result: "DownloadURL", errs: []int{400, 404}},
	{method: "GET", path: "/firmware/{id}", tag: "artifacts", summary: "Device download, authorised by the token in the URL or, on the HTTPS listener, the device's client certificate (no API key): Range (206, 416), If-Range, ETag, If-None-Match (304); 403 JSON for a missing, expired or foreign token", query: []oaParam{
		{name: "thing", typ: "string", desc: "the device", required: true}, {name: "expires", typ: "integer", desc: "Unix time the token expires", required: true}, {name: "token", typ: "string", desc: "HMAC token", required: true}},
		status: 200, result: "Text", media: "application/octet-stream", errs: []int{304, 403, 404, 416}},
	{method: "GET", path: "/firmware/{id}/signature", tag: "artifacts", summary: "The image's signature for a device, with the same token as its download", query: []oaParam{
		{name: "thing", typ: "string", desc: "the device", required: true}, {name: "expires", typ: "integer", desc: "Unix time the token expires", required: true}, {name: "token", typ: "string", desc: "HMAC token", required: true}},
		status: 200, result: "Text", media: "application/octet-stream", errs: []int{403, 404}},

	// Live events.
	{method: "GET", path: "/api/cluster", tag: "operations", summary: "Cluster mode: this node, and which node runs the rollout and job engine (docs/cluster.md); {\"cluster\":false} on a single node", role: "viewer", status: 200, result: "ClusterInfo", errs: []int{401}},
	{method: "GET", path: "/api/whoami", tag: "operations", summary: "The caller's API key name and role", role: "viewer", status: 200, result: "WhoAmI", errs: []int{401}},
	{method: "GET", path: "/api/events", tag: "events", summary: "Server-sent events: shadow, connectivity, rollout and job changes (job: an AWS IoT Jobs execution changed; data.execution)", role: "viewer", query: []oaParam{qThing,
		{name: "group", typ: "string", desc: "only things in this group"}, {name: "query", typ: "string", desc: "only things matching this fleet query"},
		{name: "types", typ: "string", desc: "comma-separated: shadow, connectivity, rollout, job"}},
		status: 200, result: "Text", media: "text/event-stream", errs: []int{400, 404}},
}

var pathParams = map[string]string{
	"thing": "thing name (1-128 characters of a-z A-Z 0-9 : _ -)",
	"type":  "thing type name",
	"group": "group name",
	"id":    "rollout, job or artifact id",
}

var statusText = map[int]string{
	302: "redirect", 304: "not modified (If-None-Match)", 416: "range not satisfiable", 400: "bad request: the message (and field) name the problem", 401: "missing or unknown API key",
	403: "the API key's role does not allow this", 404: "not found", 409: "conflict (exists, in use, version or state)",
	413: "payload too large", 429: "rate limited", 503: "unavailable",
}

var pathParamRE = regexp.MustCompile(`\{([a-z]+)\}`)

// OpenAPIDocument returns the OpenAPI 3 document as a JSON-ready value.
func OpenAPIDocument() map[string]any {
	var comps map[string]any
	if err := json.Unmarshal([]byte(openapiComponents), &comps); err != nil {
		panic("api: openapi components: " + err.Error())
	}
	paths := map[string]any{}
	for _, r := range oaRoutes {
		op := map[string]any{
			"summary":     r.summary,
			"tags":        []string{r.tag},
			"operationId": operationID(r),
		}
		var params []any
		for _, m := range pathParamRE.FindAllStringSubmatch(r.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true,
				"description": pathParams[m[1]], "schema": map[string]any{"type": "string"}})
		}
		for _, q := range r.query {
			var schema any = map[string]any{"type": q.typ}
			if q.repeated {
				schema = map[string]any{"type": "array", "items": map[string]any{"type": q.typ}}
			}
			p := map[string]any{"name": q.name, "in": "query", "description": q.desc, "schema": schema}
			if q.required {
				p["required"] = true
			}
			if q.repeated {
				p["explode"] = true
			}
			params = append(params, p)
		}
		if params != nil {
			op["parameters"] = params
		}
		if r.body != "" {
			op["requestBody"] = map[string]any{"required": !r.bodyOptional,
				"content": map[string]any{"application/json": map[string]any{"schema": oaRef(r.body)}}}
		}
		resp := map[string]any{}
		ok := map[string]any{"description": "success"}
		if r.result != "" {
			media := r.media
			if media == "" {
				media = "application/json"
			}
			ok["content"] = map[string]any{media: map[string]any{"schema": oaRef(r.result)}}
		}
		if r.status == 302 {
			ok = map[string]any{"description": "redirect to /ui/", "headers": map[string]any{"Location": map[string]any{"schema": map[string]any{"type": "string"}}}}
		}
		resp[itoa(r.status)] = ok
		errs := r.errs
		if r.role != "" {
			errs = append([]int{401, 403}, errs...)
			op["security"] = []any{map[string]any{"bearer": []string{}}, map[string]any{"apiKeyHeader": []string{}}}
		} else {
			op["security"] = []any{}
		}
		for _, c := range errs {
			schema, media := "Error", "application/json"
			if r.path == "/readyz" {
				schema, media = "Text", "text/plain"
			}
			resp[itoa(c)] = map[string]any{"description": statusText[c],
				"content": map[string]any{media: map[string]any{"schema": oaRef(schema)}}}
			if c == 304 {
				resp[itoa(c)] = map[string]any{"description": statusText[c]} // no body
			}
		}
		if strings.Contains(r.summary, "Range") && r.media == "application/octet-stream" {
			resp["206"] = map[string]any{"description": "the requested range (Content-Range)",
				"content": map[string]any{r.media: map[string]any{"schema": oaRef("Text")}}}
		}
		op["responses"] = resp
		if r.role != "" {
			op["x-umbra-role"] = r.role
		}
		item, _ := paths[r.path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[r.path] = item
		}
		item[strings.ToLower(r.method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":   "Umbra HTTP API",
			"version": "1",
			"description": "Device shadows on the AWS IoT data-plane paths, the device registry, fleet queries, " +
				"bulk configuration jobs, phased rollouts and a live event stream. With authentication on, send an API key as " +
				"`Authorization: Bearer <key>` (or `X-API-Key`); each operation's x-umbra-role is the least role it needs. " +
				"Errors on shadow paths (and authentication errors) are the shadow error document {code, message, timestamp}; " +
				"errors under /api/ are {code, message, field}. On every path, a write (POST, PUT, PATCH, DELETE) sent by a browser page " +
				"of another origin is refused with 403, and a request body without a JSON Content-Type (application/json or +json; " +
				"application/octet-stream on /things/ paths) with 415, both as the shadow error document.",
		},
		"paths":      paths,
		"components": comps,
		"tags": []any{
			map[string]any{"name": "shadows"}, map[string]any{"name": "things"}, map[string]any{"name": "thing types"},
			map[string]any{"name": "groups"}, map[string]any{"name": "fleet queries"}, map[string]any{"name": "jobs"},
			map[string]any{"name": "rollouts"}, map[string]any{"name": "events"}, map[string]any{"name": "credentials"},
			map[string]any{"name": "operations"}, map[string]any{"name": "dashboard"},
		},
	}
}

// OpenAPIOperations lists the documented operations as "METHOD /path".
func OpenAPIOperations() []string {
	out := make([]string, 0, len(oaRoutes))
	for _, r := range oaRoutes {
		out = append(out, r.method+" "+r.path)
	}
	sort.Strings(out)
	return out
}

func operationID(r oaRoute) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(r.method))
	for _, part := range strings.FieldsFunc(r.path, func(c rune) bool { return c == '/' || c == '-' || c == '{' || c == '}' }) {
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	if r.path == "/" {
		b.WriteString("Root")
	}
	return b.String()
}

func oaRef(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

var openapiJSON = func() []byte {
	b, err := json.MarshalIndent(OpenAPIDocument(), "", "  ")
	if err != nil {
		panic("api: openapi: " + err.Error())
	}
	return append(b, '\n')
}()

// OpenAPI serves the document (no authentication: it holds no data).
func OpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(openapiJSON)
}
