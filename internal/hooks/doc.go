// Package hooks is the thin seam between Mochi MQTT and Umbra's domain
// services: session persistence, shadow topic routing, identity and ACL,
// presence. Hooks translate Mochi events into service calls and carry no
// business rules of their own.
//
// Mochi runs hooks synchronously on the publishing client's read goroutine,
// so every hook here is cheap or, when it must wait (a shadow commit), waits
// only on the store's group commit and never on another client.
package hooks
