#!/usr/bin/env bash
# Produces the BENCHMARKS.md figures that take minutes, on an otherwise idle
# machine. Sections that need a large data set or a cluster (1M things,
# cluster mode, firmware downloads) write their own commands next to them.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(date -u +%FT%TZ) $(go version) $(nproc) cores $(free -g | awk '/Mem:/{print $2}') GiB"
go test ./broker -run '^$' -bench 'QoS1PubSub' -benchtime 40000x -count 5
go test ./broker -run '^$' -bench 'ShadowVsRaw' -benchtime 20000x -count 3
go test ./broker -run '^$' -bench 'IdleConnectionMemory' -benchtime 5000x -count 3
go test ./shadow -run '^$' -bench . -benchmem
# Issue 17: the disk under the store, then the durable path from outside
# (a `umbra serve` process, `umbra bench` as a separate load process):
# durable ÷ raw, raw@rate and shadow-update@rate percentiles, delta fan-out.
go test ./internal/store -run '^$' -bench 'DiskSyncAfterIdle' -benchtime 200x
go test ./internal/store -run '^$' -bench 'DiskSyncPages' -benchtime 1000x
bin=$(mktemp -d)/umbra
go build -o "$bin" ./cmd/umbra
scripts/bench-outside.sh "$bin"
