// Package auth decides who may connect and what each identity may do.
//
// Identities are of three kinds:
//
//   - a device is a thing: it proves its name with a client certificate
//     (CN or a DNS SAN equal to the thing name) or with a per-thing secret,
//     and its MQTT client id must equal that thing name. A device may use
//     only its own topics (see DeviceACL).
//   - a service (an app, a backend, a dashboard) logs in to MQTT with a
//     username and password from the configuration and gets the publish and
//     subscribe rules written there, with {clientid} and {username}
//     substituted.
//   - an API caller presents an API key and gets a role: viewer (read),
//     operator (shadows, jobs, rollouts) or admin (everything, including the
//     registry and credentials).
//
// An identity is bound to the connection that proved it (Connections), never
// to a client id or a username: the end of one connection cannot change who
// another connection with the same client id is, and a connection without
// a bound identity is Nobody and may do nothing. A client id naming a
// registered thing belongs to that thing (and to services granted it), and
// a session changes hands only between connections entitled to it
// (MayTakeOver). Certificates can be denied (DenyList) and password
// guessing is throttled before bcrypt (Throttle).
//
// Everything not granted is denied. The package is pure policy: no MQTT, no
// HTTP, no storage; hooks and api apply it.
package auth
