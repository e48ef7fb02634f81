#!/usr/bin/env bash
# Peak memory and wall time of `linkerd stat` over a synthetic capture of
# N pods (default 1000), each with ~340 series, two scrapes. Prints the
# median of RUNS runs (default 5). Needs GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
RUNS=${RUNS:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/linkerd" ./cmd/linkerd
go run ./fixtures/gen -synthetic "$N" -out "$dir/capture" >/dev/null
echo "capture: $N pods, $(du -sm "$dir/capture" | cut -f1) MB of scrape text"
rss=(); secs=()
for _ in $(seq "$RUNS"); do
  /usr/bin/time -f '%M %e' -o "$dir/time" "$dir/linkerd" stat deploy -A --capture "$dir/capture" -o json >/dev/null
  read -r kb s < "$dir/time"
  rss+=("$kb"); secs+=("$s")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median peak RSS: $(( $(median "${rss[@]}") / 1024 )) MB   median wall: $(median "${secs[@]}") s   (runs: $RUNS)"
