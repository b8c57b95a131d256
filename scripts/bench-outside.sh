#!/usr/bin/env bash
# Measures the durable shadow path from outside, as issue 17's baseline
# was: `umbra serve` in one process (fsync on, per-thing rate limit off),
# `umbra bench` as a separate load process against it. Prints bench's
# table, the durable ÷ raw ratio, the percentiles at the fixed rate (raw
# and shadow-update) and the delta fan-out of 8 app connections.
#
#   scripts/bench-outside.sh SERVER_BINARY [BENCH_BINARY]
#
# Compare two builds by running it alternately with each as SERVER_BINARY
# and the same BENCH_BINARY (default: the server binary).
set -euo pipefail
server=$1
bench=${2:-$1}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
UMBRA_LIMITS_SHADOW_RATE=-1 UMBRA_MQTT_ADDR=127.0.0.1:18830 UMBRA_MQTT_WS_ADDR=off \
  UMBRA_HTTP_ADDR=127.0.0.1:18080 "$server" serve >serve.log 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:18080/readyz >/dev/null && break; sleep 0.1; done
"$bench" bench --quiet --duration 5s --clients 100 --target tcp://127.0.0.1:18830 \
  --target-http http://127.0.0.1:18080 raw shadow-update delta-fanout
