#!/usr/bin/env bash
# Runs every fuzz target in the repository (every `func FuzzXxx(f *testing.F)`
# in a _test.go file) for a set time each, one after the other, and prints a
# summary. Usage:
#
#   scripts/fuzz.sh [seconds-per-target]      (default 60)
#
# The default `go test ./...` (and CI) only replays the seed corpora
# (testdata/fuzz/<Target>/ plus the f.Add seeds); this script explores.
# A failing input is written by Go to <package>/testdata/fuzz/<Target>/:
# commit it with the fix, and it becomes a seed that CI replays for ever.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [seconds-per-target]" >&2; exit 2 ;;
esac

# "dir name" for every fuzz target, sorted.
targets=$(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]+\(' . |
  grep -v '^./vendor/' |
  sed -E 's#^\./(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+)\($#\1 \2#' | sort -u)
if [ -z "$targets" ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi
n=$(printf '%s\n' "$targets" | wc -l)
echo "# $(date -u +%FT%TZ) $(go version), $(nproc) cores: $n fuzz targets, ${secs}s each"

summary=()
failed=0
while read -r dir name; do
  log=$(mktemp)
  echo "== ./$dir $name (${secs}s)"
  if go test -run='^$' -fuzz="^${name}\$" -fuzztime="${secs}s" "./$dir" >"$log" 2>&1; then
    result=ok
  else
    result=FAIL
    failed=1
    cat "$log"
  fi
  # The last progress line carries the totals: "fuzz: elapsed: 60s, execs: N (r/sec), new interesting: K (total: T)".
  stats=$(grep -E '^fuzz: elapsed' "$log" | tail -1 | sed -E 's/^fuzz: //; s/ \([0-9]+\/sec\)//')
  summary+=("$(printf '%-4s %-18s %-24s %s' "$result" "./$dir" "$name" "$stats")")
  rm -f "$log"
done <<<"$targets"

echo
echo "# summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
