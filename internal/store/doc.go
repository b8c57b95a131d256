// Package store keeps Umbra's state in one bbolt file.
//
// Every write goes through a single committer goroutine that groups
// concurrent writes into one bbolt transaction (group commit) and fsyncs it
// once. Two kinds of writes share that committer:
//
//   - Commit: a synchronous write (shadow changes, registry changes). Commit
//     returns only after the transaction holding it is on disk, so a caller
//     may acknowledge the change to a client as soon as Commit returns.
//   - Stage: a write-behind write (MQTT session state: client records,
//     subscriptions, retained and queued messages). Stage returns at once;
//     the value is coalesced per key with later stages of the same key and
//     written with the next transaction. A crash can lose the stages of the
//     transaction that had not reached the disk; a clean Close loses nothing.
//
// The committer starts the next transaction as soon as the previous one is
// durable, so an idle database commits a lone write immediately and a busy
// one amortises each fsync over everything that queued up meanwhile.
//
// Nothing outside this package opens the bbolt file. Domain packages reach
// storage through small interfaces that the broker adapts to this package,
// so another engine can replace bbolt without touching them.
package store
