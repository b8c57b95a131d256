#!/usr/bin/env bash
# Produces the figures in BENCHMARKS.md. Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(date -u +%FT%TZ) $(go version) $(nproc) cores $(free -g | awk '/Mem:/{print $2}') GiB"
go test ./broker -run '^$' -bench 'QoS1PubSub' -benchtime 40000x -count 5
go test ./broker -run '^$' -bench 'ShadowVsRaw' -benchtime 20000x -count 3
go test ./broker -run '^$' -bench 'IdleConnectionMemory' -benchtime 5000x -count 3
go test ./shadow -run '^$' -bench . -benchmem
