// Package shadow is the document model of Umbra's AWS IoT-compatible device
// shadow service: topic parsing, request validation, merge, metadata, delta,
// convergence, limits and the exact reply payloads. It is pure: functions over
// JSON bytes and an injected clock, no I/O, no MQTT, no storage. The wire
// contract is spec/aws-shadow-spec.md; this comment records every choice made
// where the spec says UNCONFIRMED, and every place Umbra deliberately differs.
//
// # Basics
//
// A request goes through ParseUpdate (spec §3.6 steps 1-9), then, with the
// stored state, through Update (steps 11-12), which returns the new stored
// document and the /update/accepted, /update/delta and /update/documents
// payloads. Get and Delete build the /get/accepted and /delete/accepted
// payloads; Rejected builds every …/rejected payload. ParseTopic and Ref map
// between topics and shadows.
//
// JSON is handled as an ordered tree whose scalars are the bytes the client
// sent (see jsontree.go): numbers are never rounded (1.50 stays 1.50, 1e400
// stays 1e400), key order is kept, strings keep their escapes. The parser is
// iterative, so hostile nesting cannot exhaust the stack, and every recursive
// walk happens only after the depth was checked.
//
// The stored document is compact JSON:
//
//	{"state":{"desired":{…},"reported":{…}},"metadata":{"desired":{…},"reported":{…}},"version":N,"timestamp":T}
//
// with desired/reported omitted when empty ("state" and "metadata" are always
// present). Timestamps everywhere are Unix seconds of the injected now.
//
// # Umbra behaviour beyond AWS
//
// Convergence (Options.Converge). With ConvergePrune, the default and the seed's
// "shadow reaches convergence" step, every desired value equal to the reported
// value at the same path is removed from desired (with its metadata, and with
// objects this empties) in the same update and version; arrays are compared
// whole. So after every update desired is exactly the delta, and a device that
// reports what was asked clears the request. /update/accepted still echoes the
// request; /update/documents shows the pruned document. ConvergeKeep is AWS
// behaviour: desired stays until someone clears it.
//
// Shorthand. A payload with no "state" but a top-level "desired" and/or
// "reported" (the seed's tutorial publishes {"desired": {"led_is_on": false}})
// is treated as {"state": {…}} and echoed in that form. With Options.Strict it
// is 400 "Missing required node: state", as on AWS (so conformance vector 9,
// {"desired":{}}, holds in strict mode). When "state" is present, top-level
// desired/reported are ignored like any unknown field.
//
// # Trailing NUL bytes
//
// C firmware often publishes a JSON C string including its terminating NUL:
// the AWS Embedded C SDK's shadow demo and Espressif's ESP32 thing_shadow
// example pass strlen+1 as the payload length. AWS IoT accepts these. So on
// every face (MQTT and HTTP) and for every operation (/update, /get, /delete),
// the run of NUL bytes (0x00) at the very end of a payload is removed before
// it is parsed: one JSON text, optionally followed by JSON whitespace, then one
// or more NULs, is the JSON text. Nothing but NULs may follow the first
// trailing NUL ({…}\x00 and {…} \x00\x00 are accepted; {…}\x00 , {…}\x00x,
// \x00{…} and a payload of NULs only are 400 Invalid JSON), and a raw NUL inside
// a string is invalid JSON as always. The size limit (413) counts the payload
// as received, NULs included. History keeps the request without its NULs.
//
// # Choices where the spec is UNCONFIRMED
//
//   - Patch values (§10.5, Greengrass): {"state":{}} changes nothing but is
//     accepted and increments the version; "desired": {} clears desired like
//     "desired": null; a {} value deletes its key like null. /update/accepted
//     echoes them as sent and gives each a {"timestamp":T} metadata leaf, like null.
//   - Objects that merge into a non-object or absent key are merged as into {}:
//     their nulls vanish and, if nothing is left, the key is deleted (Greengrass
//     would store such an object with its nulls). Any object a merge empties is
//     removed; empty objects are never stored ({} inside arrays is kept: arrays
//     are values).
//   - "state": null clears both sections; the shadow persists and the version
//     increments. The echo is "state":null; the metadata is a leaf for both
//     desired and reported.
//   - No-op updates (same values) are accepted, increment the version, publish
//     accepted and documents, and give every written leaf a new timestamp (§3.2,
//     §3.3, Greengrass).
//   - Version of an absent shadow (§10.6): Greengrass accepts only "version": 1.
//     Umbra generalises this to tombstones: the shadow is created at T+1, where T
//     is the tombstone's version (0 if none: never existed, or the tombstone
//     expired after TombstoneTTL). A request "version" must be T+1, or T when
//     T > 0, else 400 Invalid version. T is accepted because it is the version
//     /delete/accepted reported, and clients that track the last version they
//     saw send it on their next update: npm aws-iot-device-sdk v1's
//     thingShadow does exactly that after its own delete. Either way the
//     shadow is created at T+1, and the update after it must name T+1 (so a
//     second writer still holding T gets 409). With no tombstone only 1 is
//     accepted (0 is 400, as on Greengrass). For an existing shadow "version"
//     must equal the current version, else 409.
//   - "version" must be written as a plain non-negative integer that fits int64
//     (0|[1-9][0-9]*): 1.0, 1e2, -1, "1", true are 400 Invalid version.
//     "version": null is treated as absent (Greengrass).
//   - clientToken (§3.4): a string of at most MaxClientTokenBytes bytes (bytes of
//     the decoded string, not runes); anything else but null is 400 Invalid
//     clientToken; null is treated as absent. An invalid token is never echoed.
//     A valid token is echoed on every reply the request causes, rejections
//     included, as soon as the payload parsed as a JSON object (so 413 and 415
//     from step 1, and 400 Invalid JSON, carry no token).
//   - Invalid JSON (§10.7): malformed JSON, an empty /update payload, a top level
//     that is not an object, and duplicate keys anywhere (compared after
//     unescaping) are 400 "Invalid JSON". Arrays inside desired/reported may not
//     contain null at any depth (also inside objects inside arrays): 400
//     "Invalid JSON", checked after the nesting limit (step 9). Unknown top-level
//     fields, including "metadata", are ignored whatever they contain.
//   - Nesting (§10.1): the Greengrass rule. The desired/reported object is level
//     1, every nested object or array adds a level, scalars add none; the
//     default maximum is 6, the message names the configured maximum.
//   - Size (§5): MaxDocumentBytes limits the compact size of the merged state
//     object {"desired":…,"reported":…} after convergence (metadata excluded);
//     MaxPayloadBytes limits the request payload (413 in both cases). An update
//     that does not grow a document already over the limit is allowed.
//   - 415 comes before the 413 payload check, as the spec orders step 1.
//   - Delta (§10.10, §10.14): numbers are compared by exact decimal value
//     (1 == 1.0 == 1e0; big numbers are not rounded through float64), strings
//     after unescaping, arrays whole, objects key by key. /update/delta is
//     published after every accepted update whose resulting delta is non-empty,
//     reported-only updates included, with the whole current delta.
//     metadata.delta is never produced (§10.9).
//   - /delete/accepted carries the version the shadow had when deleted (§10.4,
//     Greengrass); the caller keeps it in a tombstone.
//   - Errors: 429 says "Too Many Requests" (§10.7). Rejections carry a
//     timestamp. Get and Delete do not know the shadow's name, which AWS puts in
//     the 404 message; they return ErrNoShadow and the caller replies with
//     Ref.NotFound() (thing name for the classic shadow, §3.8).
//   - Shadow names (§10.12) follow the AWS API model [$a-zA-Z0-9:_-]{1,64}: '$'
//     is allowed because AWS itself uses reserved names such as "$package".
//     Thing names are [a-zA-Z0-9:_-]{1,128}.
//   - Topics (§10.13): anything under the prefix that is not a known stub is not
//     a shadow topic (ParseTopic reports false; callers ignore it).
//
// # Caveats
//
// Options.Normalize is applied by every function, so the zero Options is AWS's
// defaults; Validate is for configuration time (an unknown Converge value is
// treated as prune at run time). Update returns ErrInternal (500) for a stored
// document it cannot read; Delete still works on one. UpdateRequest values are
// immutable and safe to apply again or concurrently.
package shadow
