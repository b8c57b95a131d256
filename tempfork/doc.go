// Package tempfork holds temporary forks of upstream packages that Umbra
// needs patched, as packages of Umbra's own module (the shape of tailscale's
// tempfork): no replace directive, so `go install` works and a program that
// imports Umbra builds with exactly the code Umbra is tested with.
//
// Each fork is recorded as an upstream release plus one patch file:
//
//   - mochi/ is Mochi MQTT (github.com/mochi-mqtt/server/v2), at the
//     version named in mochi.upstream, with its import paths rewritten to
//     github.com/umbra-iot/umbra/tempfork/mochi and the changes in
//     mochi.patch, each described in mochi/UMBRA-PATCHES.md.
//
// TestForkMatchesUpstreamPlusPatch fails when the copy drifts from that
// record. After changing the fork on purpose, regenerate the patch:
//
//	UMBRA_TEMPFORK_UPDATE=1 go test ./tempfork -run TestForkMatchesUpstreamPlusPatch
//
// and describe the change in UMBRA-PATCHES.md. The fork is importable
// because broker.Broker.MQTT returns its *mqtt.Server, but it is not a
// stable API of Umbra: it follows upstream Mochi's.
package tempfork
