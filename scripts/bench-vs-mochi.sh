#!/usr/bin/env bash
# Issue 17's "raw QoS 1 through Umbra ÷ bare Mochi v2.7.9, same run" row:
# `umbra serve` (fsync on, session persistence on, shadow rate limit off)
# and bare upstream Mochi v2.7.9 (scripts/baremochi: allow-all auth, one
# TCP listener, no persistence) run side by side; the same `umbra bench
# raw` load process measures each alternately, ROUNDS times, and the
# ratio of each pair is printed.
#
#   go build -C scripts/baremochi -o /tmp/bare-mochi .
#   scripts/bench-vs-mochi.sh UMBRA_BINARY /tmp/bare-mochi [ROUNDS]
set -euo pipefail
umbra=$1
mochi=$2
rounds=${3:-3}
dir=$(mktemp -d)
trap 'kill "$upid" "$mpid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
UMBRA_LIMITS_SHADOW_RATE=-1 UMBRA_MQTT_ADDR=127.0.0.1:18832 UMBRA_MQTT_WS_ADDR=off \
  UMBRA_HTTP_ADDR=127.0.0.1:18082 "$umbra" serve >serve.log 2>&1 &
upid=$!
"$mochi" 127.0.0.1:18833 >mochi.log 2>&1 &
mpid=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:18082/readyz >/dev/null && break; sleep 0.1; done
rate() { # prints raw round trips per second against $1
  "$umbra" bench --quiet --duration 5s --clients 100 --rate -1 --target "$1" raw 2>/dev/null |
    awk '$1 == "raw" { print $8; exit }'
}
for i in $(seq "$rounds"); do
  u=$(rate tcp://127.0.0.1:18832)
  m=$(rate tcp://127.0.0.1:18833)
  echo "round $i: umbra $u/s, bare mochi $m/s, umbra/mochi $(awk -v u="$u" -v m="$m" 'BEGIN { printf "%.2f", u / m }')"
done
