#!/usr/bin/env bash
# OTA downloads at fleet scale (BENCHMARKS.md "Firmware downloads"):
# N simulated devices (default 1000) download an image of SIZE bytes
# (default 1.5 MB) from `umbra serve` at once, through a one-wave rollout
# that references the artifact. Prints the download window, throughput and
# the server's resident memory (VmRSS before, VmHWM peak) from /proc.
#
#   scripts/bench-ota.sh [devices] [bytes]
#
# Uses loopback ports 19883 (MQTT) and 19080 (HTTP).
set -euo pipefail
n="${1:-1000}"
size="${2:-1500000}"
cd "$(dirname "$0")/.."
work=$(mktemp -d)
go build -o "$work/umbra" ./cmd/umbra
export PATH="$work:$PATH" UMBRA_SERVER=http://127.0.0.1:19080
cleanup() { kill "${SIM:-}" "${SRV:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The HTTP per-address cap (128) would turn most of 1,000 loopback
# downloads away (they retry): lift it for the benchmark.
UMBRA_HTTP_MAX_CONNS_PER_IP=-1 umbra serve --data-dir "$work/data" --mqtt-addr 127.0.0.1:19883 \
  --ws-addr off --http-addr 127.0.0.1:19080 --log-level warn > "$work/serve.log" 2>&1 &
SRV=$!
until curl -sf $UMBRA_SERVER/readyz >/dev/null; do sleep 0.2; done
rss() { awk -v k="$1" '$1==k":" {print $2}' /proc/$SRV/status; }

head -c "$size" /dev/urandom > "$work/fw.bin"
umbra sim --register-only --devices "$n" --rings canary=1% > /dev/null
umbra artifacts push "$work/fw.bin" --version 2.0.0 --type esp32 > /dev/null
umbra sim --broker tcp://127.0.0.1:19883 --devices "$n" --rings canary=1% --download \
  --reboot-delay 1s --telemetry 0 --state none --json > "$work/sim.json" 2> "$work/sim.err" &
SIM=$!
until [ "$(umbra query 'shadow.reported.firmware_version:1.0.0' --count)" = "$n" ]; do sleep 0.5; done
before=$(rss VmRSS)

cat > "$work/spec.json" <<JSON
{"name": "bench", "target": "thingTypeName:esp32", "artifact": "esp32@2.0.0",
 "failureCondition": "shadow.reported.ota_status:failed",
 "waves": [{"name": "all", "percent": 100, "deviceTimeout": "10m"}]}
JSON
t0=$(date +%s.%N)
ID=$(umbra rollout create -f "$work/spec.json" --start | awk '{print $3}')
metric() { curl -s $UMBRA_SERVER/metrics | awk -v k="$1" '$1==k {printf "%d", $2}'; }
until [ "$(metric umbra_artifact_downloads_total)" -ge "$n" ]; do sleep 0.1; done
t1=$(date +%s.%N)
umbra rollout status "$ID" --watch > /dev/null
t2=$(date +%s.%N)
bytes=$(metric umbra_artifact_download_bytes_total)
peak=$(rss VmHWM)
after=$(rss VmRSS)
kill $SIM; wait $SIM || true
echo "# $(date -u +%FT%TZ) $(go version | awk '{print $3}') $(nproc) cores: $n devices, $size-byte image"
awk -v n="$n" -v b="$bytes" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v r0="$before" -v hw="$peak" -v r1="$after" 'BEGIN {
  printf "rollout start -> last image delivered: %.2f s, %.0f MB sent, %.0f MB/s (%.1f Gbit/s)\n", t1-t0, b/1e6, b/1e6/(t1-t0), b*8/1e9/(t1-t0)
  printf "rollout start -> rollout completed (installed, rebooted, reported): %.2f s\n", t2-t0
  printf "server RSS: %.0f MB with %d devices connected before; peak (VmHWM) %.0f MB; %.0f MB after\n", r0/1024, n, hw/1024, r1/1024
}'
grep -o '"download_[a-z_]*": [0-9]*\|"downloads_verified": [0-9]*\|"ota_[a-z]*": [0-9]*' "$work/sim.json" | tr '\n' ' '; echo
