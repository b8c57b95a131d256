// Package registry is the fleet's directory: things with attributes (tags)
// and an optional thing type, static and dynamic groups, each device's
// live connectivity, and an in-memory fleet index that answers the fleet
// query language (package query) over registry, connectivity and shadow
// state.
//
// Registry changes are durable before they are acknowledged (Store.Update
// commits through the store's group committer). Connectivity changes are
// frequent and ephemeral: they are written behind, and every thing is
// reported disconnected after a restart. The index is rebuilt from the store
// at start and kept current by every registry change and every committed
// shadow change (Registry.ShadowChanged).
package registry
