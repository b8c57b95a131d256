package api

// openapiComponents are the schemas and security schemes of the OpenAPI
// document (see openapi.go). They mirror the JSON of registry, rollout and
// shadow types as the handlers write them.
const openapiComponents = `{
 "securitySchemes": {
  "bearer": {"type": "http", "scheme": "bearer", "description": "API key: Authorization: Bearer <key>"},
  "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
 },
 "schemas": {
  "Text": {"type": "string"},
  "Object": {"type": "object", "additionalProperties": true},
  "Error": {"type": "object", "required": ["code", "message", "timestamp"], "description": "every error of the HTTP listener, including unknown routes (404) and wrong methods (405)", "properties": {
   "code": {"type": "integer", "description": "the HTTP status", "example": 400},
   "message": {"type": "string", "example": "unknown field \"colour\""},
   "field": {"type": "string", "description": "the request field or parameter to blame, when one is", "example": "colour"},
   "timestamp": {"type": "integer", "description": "Unix seconds"},
   "clientToken": {"type": "string", "description": "shadow operations: the request's clientToken, echoed"}}},
  "ShadowState": {"type": "object", "properties": {
   "desired": {"type": "object", "additionalProperties": true, "nullable": true},
   "reported": {"type": "object", "additionalProperties": true, "nullable": true},
   "delta": {"type": "object", "additionalProperties": true}}},
  "ShadowUpdate": {"type": "object", "required": ["state"], "properties": {
   "state": {"type": "object", "properties": {
    "desired": {"type": "object", "additionalProperties": true, "nullable": true},
    "reported": {"type": "object", "additionalProperties": true, "nullable": true}}},
   "version": {"type": "integer", "description": "reject with 409 unless the shadow has this version"},
   "clientToken": {"type": "string"}}},
  "ShadowDocument": {"type": "object", "properties": {
   "state": {"$ref": "#/components/schemas/ShadowState"},
   "metadata": {"type": "object", "additionalProperties": true},
   "version": {"type": "integer"},
   "timestamp": {"type": "integer"},
   "clientToken": {"type": "string"}}},
  "ShadowDeleted": {"type": "object", "properties": {"version": {"type": "integer"}, "timestamp": {"type": "integer"}}},
  "HistoryEntry": {"type": "object", "properties": {
   "version": {"type": "integer"}, "op": {"type": "string", "enum": ["update", "delete"]},
   "timestamp": {"type": "integer"}, "principal": {"type": "string"}, "origin": {"type": "string"},
   "request": {"type": "object", "additionalProperties": true}, "state": {"type": "object", "additionalProperties": true}}},
  "ShadowHistory": {"type": "object", "properties": {
   "thing": {"type": "string"}, "shadow": {"type": "string"},
   "entries": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}}}},
  "NamedShadowList": {"type": "object", "properties": {
   "results": {"type": "array", "items": {"type": "string"}}, "nextToken": {"type": "string"}, "timestamp": {"type": "integer"}}},
  "Credentials": {"type": "object", "properties": {
   "thing": {"type": "string"}, "secret": {"type": "string"}, "createdAt": {"type": "integer"}, "note": {"type": "string"}}},
  "NewThing": {"type": "object", "required": ["thingName"], "additionalProperties": false, "properties": {
   "thingName": {"type": "string"}, "thingTypeName": {"type": "string"},
   "attributes": {"type": "object", "additionalProperties": {"type": "string"}}}},
  "Thing": {"type": "object", "properties": {
   "thingName": {"type": "string"}, "thingTypeName": {"type": "string"},
   "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
   "version": {"type": "integer"}, "createdAt": {"type": "integer"}, "updatedAt": {"type": "integer"}}},
  "Connectivity": {"type": "object", "properties": {
   "connected": {"type": "boolean"}, "timestamp": {"type": "integer", "description": "Unix ms"},
   "lastConnectedAt": {"type": "integer"}, "lastDisconnectedAt": {"type": "integer"},
   "disconnectReason": {"type": "string"}, "clientAddress": {"type": "string"},
   "protocolVersion": {"type": "integer"}, "versionNumber": {"type": "integer"}}},
  "ConnectivityHistory": {"type": "object", "properties": {
   "thingName": {"type": "string"},
   "connectivity": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/Connectivity"}]},
   "history": {"type": "array", "description": "the last 16 connects and disconnects, newest first", "items": {"type": "object", "properties": {
    "connected": {"type": "boolean"}, "timestamp": {"type": "integer", "description": "Unix ms"},
    "versionNumber": {"type": "integer", "description": "the connect count; a disconnect shares its connect's"},
    "disconnectReason": {"type": "string"}, "clientAddress": {"type": "string"}, "protocolVersion": {"type": "integer"}}}}}},
  "ThingView": {"allOf": [{"$ref": "#/components/schemas/Thing"}, {"type": "object", "properties": {
   "thingGroupNames": {"type": "array", "items": {"type": "string"}},
   "connectivity": {"$ref": "#/components/schemas/Connectivity"}}}]},
  "ThingPatch": {"type": "object", "additionalProperties": false, "properties": {
   "attributes": {"type": "object", "additionalProperties": {"type": "string", "nullable": true}, "description": "null removes an attribute"},
   "thingTypeName": {"type": "string"}, "expectedVersion": {"type": "integer"}}},
  "ThingList": {"type": "object", "properties": {
   "things": {"type": "array", "items": {"$ref": "#/components/schemas/Thing"}}, "nextToken": {"type": "string"}}},
  "ThingType": {"type": "object", "required": ["thingTypeName"], "properties": {
   "thingTypeName": {"type": "string"}, "description": {"type": "string"},
   "searchableAttributes": {"type": "array", "items": {"type": "string"}},
   "deprecated": {"type": "boolean"}, "createdAt": {"type": "integer"}}},
  "ThingTypeList": {"type": "object", "properties": {"thingTypes": {"type": "array", "items": {"$ref": "#/components/schemas/ThingType"}}}},
  "Deprecation": {"type": "object", "required": ["deprecated"], "additionalProperties": false, "properties": {"deprecated": {"type": "boolean"}}},
  "Group": {"type": "object", "required": ["groupName"], "properties": {
   "groupName": {"type": "string"}, "parentGroupName": {"type": "string"}, "description": {"type": "string"},
   "queryString": {"type": "string", "description": "set for a dynamic group: its fleet query"},
   "createdAt": {"type": "integer"}}},
  "GroupList": {"type": "object", "properties": {"groups": {"type": "array", "items": {"$ref": "#/components/schemas/Group"}}}},
  "SearchResult": {"type": "object", "properties": {
   "things": {"type": "array", "items": {"type": "string"}}, "total": {"type": "integer"}, "nextToken": {"type": "string"},
   "expanded": {"type": "array", "description": "with ?expand: the things in the same order", "items": {"type": "object", "properties": {
    "thingName": {"type": "string"},
    "thing": {"description": "the registry record, null if the thing is gone", "nullable": true, "allOf": [{"$ref": "#/components/schemas/Thing"}]},
    "shadow": {"description": "the classic shadow, null if it has none", "nullable": true, "allOf": [{"$ref": "#/components/schemas/ShadowDocument"}]},
    "shadowError": {"$ref": "#/components/schemas/Error"}}}}}},
  "Count": {"type": "object", "properties": {"count": {"type": "integer"}, "query": {"type": "string"}}},
  "ClusterInfo": {"type": "object", "required": ["cluster"], "properties": {
   "cluster": {"type": "boolean", "description": "whether this node runs in cluster mode"},
   "node": {"type": "string", "description": "this node's name"},
   "engine": {"type": "object", "properties": {
    "leader": {"type": "string", "description": "the node that holds the engine lease (absent while none does)"},
    "since": {"type": "string", "format": "date-time"}, "revision": {"type": "integer", "description": "KV revision of the lease entry"},
    "thisNode": {"type": "boolean", "description": "whether this node runs the engine now"},
    "epoch": {"type": "integer", "description": "this node's term (the revision that began it), when it runs the engine"},
    "terms": {"type": "integer", "description": "terms this node has run the engine since it started"},
    "leaseTTL": {"type": "string"}, "error": {"type": "string", "description": "the lease could not be read"}}}}},
  "WhoAmI": {"type": "object", "properties": {
   "name": {"type": "string", "description": "the API key's name (anonymous without authentication)"},
   "role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
   "authentication": {"type": "boolean", "description": "whether the server checks API keys"}}},
  "Buckets": {"type": "object", "properties": {
   "totalCount": {"type": "integer"}, "field": {"type": "string"},
   "buckets": {"type": "array", "items": {"type": "object", "properties": {"keyValue": {"type": "string"}, "count": {"type": "integer"}}}}}},
  "WaveSpec": {"type": "object", "required": ["name"], "properties": {
   "name": {"type": "string"}, "query": {"type": "string"}, "percent": {"type": "number"},
   "deviceTimeout": {"type": "string", "example": "1h"}, "minFinished": {"type": "integer"},
   "successThreshold": {"type": "number"}, "failureThreshold": {"type": "number"},
   "bakeTime": {"type": "string", "example": "10m"}, "requireApproval": {"type": "boolean"}}},
  "RolloutSpec": {"type": "object", "required": ["name", "target", "waves"], "additionalProperties": false, "properties": {
   "name": {"type": "string"}, "target": {"type": "string", "description": "fleet query"}, "shadow": {"type": "string"},
   "artifact": {"type": "string", "description": "a stored firmware artifact (id, id prefix or type@version) instead of a URL: each device gets its own ota_url and target_version, ota_sha256, ota_size (ota_signature); patch is then optional. With jobDocument, the document refers to it with placeholders (see jobDocument)"},
   "patch": {"type": "object", "additionalProperties": true, "description": "desired patch (or give jobDocument)"},
   "jobDocument": {"type": "object", "additionalProperties": true, "description": "deliver through the AWS IoT Jobs device API instead of desired state: each notified device gets a QUEUED execution of this job document (job id = rollout id); SUCCEEDED passes, FAILED/REJECTED fail, TIMED_OUT times out. With artifact, string values may contain ${umbra:artifact.url}, ${umbra:artifact.sha256}, ${umbra:artifact.size}, ${umbra:artifact.version} and ${umbra:artifact.signature} (signed artifacts), replaced per device each time the device receives the document (the URL with a token minted then; size is a JSON number when it is the whole string); stored and shown with the placeholders. 400: a placeholder without artifact (field artifact), an unknown placeholder or one in a key, or an artifact the document does not refer to"},
   "successCondition": {"type": "string"}, "failureCondition": {"type": "string"},
   "health": {"type": "object", "properties": {"offlineWindow": {"type": "string"}, "errorCondition": {"type": "string"},
    "increaseOf": {"type": "array", "items": {"type": "string"}}}},
   "waves": {"type": "array", "items": {"$ref": "#/components/schemas/WaveSpec"}},
   "onFailure": {"type": "string", "enum": ["halt", "rollback"]},
   "rate": {"type": "object", "properties": {"maxPerMinute": {"type": "integer"}, "baseRatePerMinute": {"type": "integer"},
    "incrementFactor": {"type": "number"}, "increaseEvery": {"type": "integer"}, "criteria": {"type": "string", "enum": ["notified", "succeeded"]}}},
   "rollbackPatch": {"type": "object", "additionalProperties": true, "description": "desired values written over the restored ones at rollback, e.g. the previous firmware, to downgrade"},
   "allowEmpty": {"type": "boolean", "description": "allow a target or wave that selects no device"},
   "plan": {"$ref": "#/components/schemas/PlanToken"}}},
  "PlanToken": {"type": "object", "required": ["seed"], "description": "from a preview: create freezes exactly the previewed waves, or answers 409 if the fleet changed", "properties": {
   "seed": {"type": "string"}, "fingerprint": {"type": "string"}, "counts": {"type": "array", "items": {"type": "integer"}}}},
  "RolloutCreate": {"allOf": [{"$ref": "#/components/schemas/RolloutSpec"}, {"type": "object", "properties": {"start": {"type": "boolean"}}}]},
  "WaveProgress": {"type": "object", "properties": {
   "name": {"type": "string"}, "state": {"type": "string", "enum": ["pending", "running", "baking", "waiting_approval", "paused", "passed", "failed", "halted", "cancelled", "rolled_back", "not_reached"]},
   "size": {"type": "integer"}, "pending": {"type": "integer"}, "notified": {"type": "integer"}, "inProgress": {"type": "integer"},
   "succeeded": {"type": "integer"}, "failed": {"type": "integer"}, "regressed": {"type": "integer"}, "rolledBack": {"type": "integer"},
   "skipped": {"type": "integer"}, "installed": {"type": "integer"}}},
  "RolloutEvent": {"type": "object", "properties": {
   "time": {"type": "integer"}, "type": {"type": "string"}, "wave": {"type": "integer"}, "thing": {"type": "string"}, "message": {"type": "string"}}},
  "Rollout": {"type": "object", "properties": {
   "id": {"type": "string"}, "spec": {"$ref": "#/components/schemas/RolloutSpec"},
   "state": {"type": "string", "enum": ["created", "running", "paused", "waiting_approval", "baking", "halted", "completed", "cancelled", "rolled_back"]},
   "reason": {"type": "string"}, "currentWave": {"type": "integer"},
   "waves": {"type": "array", "items": {"$ref": "#/components/schemas/WaveProgress"}},
   "bakeUntil": {"type": "integer"}, "totals": {"$ref": "#/components/schemas/WaveProgress"}, "notice": {"type": "string"},
   "createdAt": {"type": "integer"}, "updatedAt": {"type": "integer"},
   "events": {"type": "array", "items": {"$ref": "#/components/schemas/RolloutEvent"}}}},
  "RolloutList": {"type": "object", "properties": {"rollouts": {"type": "array", "items": {"$ref": "#/components/schemas/Rollout"}}}},
  "Preview": {"type": "object", "properties": {"waves": {"type": "array", "items": {"type": "object", "additionalProperties": true}},
   "plan": {"$ref": "#/components/schemas/PlanToken"}, "empty": {"type": "array", "items": {"type": "string"}}}},
  "Device": {"type": "object", "properties": {
   "thing": {"type": "string"}, "wave": {"type": "integer"},
   "state": {"type": "string", "enum": ["pending", "notified", "in_progress", "succeeded", "failed", "timed_out", "regressed", "rolled_back", "skipped"]},
   "before": {"type": "string", "description": "the state a rolled-back device had"}, "reason": {"type": "string"},
   "failure": {"type": "object", "properties": {"gate": {"type": "string"}, "value": {"type": "string"}, "time": {"type": "integer"}}},
   "ota": {"type": "object", "description": "from reported.ota_status / ota_progress / ota_error", "properties": {
    "status": {"type": "string"}, "progress": {"type": "number"}, "error": {"type": "string"}}},
   "installed": {"type": "boolean", "description": "matched the success condition when last seen"},
   "notifiedAt": {"type": "integer"}, "finishedAt": {"type": "integer"}, "succeededAt": {"type": "integer"}, "rolledBack": {"type": "boolean"}}},
  "DeviceList": {"type": "object", "properties": {"devices": {"type": "array", "items": {"$ref": "#/components/schemas/Device"}}}},
  "JobSpec": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
   "name": {"type": "string"}, "artifact": {"type": "string", "description": "as in a rollout spec; patch (required otherwise) is then optional; with document, the document refers to it with placeholders"}, "target": {"type": "string", "description": "fleet query (or group)"}, "group": {"type": "string"},
   "shadow": {"type": "string"}, "patch": {"type": "object", "additionalProperties": true, "description": "desired values to write (or give document)"},
   "document": {"type": "object", "additionalProperties": true, "description": "an AWS IoT Jobs job document (at most 32 KB): each eligible thing gets a QUEUED execution, read and reported over $aws/things/{thing}/jobs/... With artifact, it refers to the image with ${umbra:artifact.url}, .sha256, .size, .version, .signature placeholders, replaced per device as in a rollout's jobDocument"},
   "condition": {"type": "string"}, "ratePerSecond": {"type": "integer"}}},
  "Job": {"type": "object", "properties": {
   "id": {"type": "string"}, "spec": {"$ref": "#/components/schemas/JobSpec"},
   "state": {"type": "string", "enum": ["running", "completed", "cancelled"]},
   "createdAt": {"type": "integer"}, "updatedAt": {"type": "integer"},
   "progress": {"type": "object", "properties": {"targeted": {"type": "integer"}, "applied": {"type": "integer"}, "converged": {"type": "integer"},
    "pending": {"type": "integer"}, "ineligible": {"type": "integer"}, "remaining": {"type": "integer"}, "failed": {"type": "integer"}}},
   "executions": {"type": "object", "description": "a job document's executions counted by status", "additionalProperties": {"type": "integer"}},
   "ineligibleThings": {"type": "array", "items": {"type": "string"}}, "errors": {"type": "array", "items": {"type": "string"}}}},
  "JobExecution": {"type": "object", "properties": {
   "jobId": {"type": "string"}, "thingName": {"type": "string"},
   "status": {"type": "string", "enum": ["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED"]},
   "statusDetails": {"type": "object", "additionalProperties": {"type": "string"}},
   "queuedAt": {"type": "integer", "description": "Unix ms"}, "startedAt": {"type": "integer"}, "lastUpdatedAt": {"type": "integer"},
   "versionNumber": {"type": "integer"}, "executionNumber": {"type": "integer"}, "stepDeadline": {"type": "integer", "description": "Unix ms when the step timer expires"}}},
  "JobExecutionList": {"type": "object", "properties": {"executions": {"type": "array", "items": {"$ref": "#/components/schemas/JobExecution"}}}},
  "JobList": {"type": "object", "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}},
  "Artifact": {"type": "object", "properties": {
   "id": {"type": "string", "description": "hex SHA-256 of the content"}, "sha256": {"type": "string"}, "size": {"type": "integer"},
   "version": {"type": "string"}, "type": {"type": "string", "description": "device type, e.g. esp32"},
   "uploadedAt": {"type": "integer", "description": "Unix ms"}, "uploader": {"type": "string"},
   "signature": {"type": "string", "format": "byte", "description": "base64; signs the SHA-256 digest"},
   "signatureAlgorithm": {"type": "string", "enum": ["ecdsa-p256", "ed25519"], "description": "set when verified with the configured key"}}},
  "ArtifactList": {"type": "object", "properties": {"artifacts": {"type": "array", "items": {"$ref": "#/components/schemas/Artifact"}}}},
  "DownloadURL": {"type": "object", "properties": {"url": {"type": "string"}, "artifact": {"$ref": "#/components/schemas/Artifact"}}}
 }
}`
