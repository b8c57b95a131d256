// Package reliability holds Umbra's reliability suite: tests that would fail
// if Umbra broke one of its promises under crashes, concurrency, hostile
// input, load and time. There is no production code here; see RELIABILITY.md
// at the repository root for what is guaranteed, how each guarantee is
// tested and the figures of the last long runs.
//
// The default `go test ./...` runs the short modes (a few crash cycles, a few
// seconds of linearizability histories, the hostile input catalogue, the
// isolation figures). The long modes are flags of this package:
//
//	go test ./reliability -run Crash -crash.cycles=50 -v
//	go test ./reliability -run Linearizable -lin.duration=60s -v
//	go test ./reliability -run Isolation -iso.storm=2000 -v
//	go test ./reliability -run Soak -soak.duration=1h -soak.rate=5000 -timeout 0 -v
package reliability
