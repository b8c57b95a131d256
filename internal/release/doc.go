// Package release tests Umbra's module as users receive it, not as it sits in
// a clone: `go install github.com/umbra-iot/umbra/cmd/umbra@<version>` from a
// module proxy, and a program in another module that embeds the broker and
// must get Umbra's patched Mochi (tempfork/mochi), not upstream's. It has no
// code of its own.
package release
