#!/usr/bin/env bash
# Runs the main module's fuzz targets, one `go test -fuzz` each (Go fuzzes
# one target per run), for FUZZTIME each. The targets are found rather
# than listed: every `func FuzzXxx(f *testing.F)` in a test file that a
# plain `go test` builds, so a new target cannot be left out.
#
#   scripts/fuzz.sh              every target, $FUZZTIME (30s) each
#   scripts/fuzz.sh -l           list the targets as package:FuzzName
#   FUZZ=regexp scripts/fuzz.sh  only the targets whose name matches
#   FUZZFLAGS='-parallel 1'      more flags for go test
#   FUZZMINIMIZETIME=100x        how much go test shrinks an input (see below)
#
# A failing input is saved by go test under the package's
# testdata/fuzz/FuzzXxx/: commit it with the fix, and `go test` (so `make
# test`) replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
FUZZ=${FUZZ:-.}
# go test shrinks each new interesting input before going on, for up to
# 60 s by default: for the slower targets (a capture, a certificate) on a
# loaded machine that can take a whole run's time, leaving a dozen inputs
# tried. A bound in runs (100x) keeps the shrinking in proportion.
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-100x}

targets() {
	# Test files as go test sees them: build tags applied, nested
	# modules (localkube, install/prometheus) left to their own runs.
	# shellcheck disable=SC2016 # a Go template, not shell
	"$GO" list -f '{{$d := .Dir}}{{range .TestGoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .XTestGoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}' ./... |
		xargs -r grep -HE '^func Fuzz[A-Za-z0-9_]*\([a-z]+ \*testing\.F\)' |
		sed -E "s|^$PWD/(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*|./\1:\2|" |
		sort -u
}

if [ "${1:-}" = -l ]; then
	targets
	exit
fi

list=$(targets)
if [ -z "$list" ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
failed=()
n=0
for t in $list; do
	pkg=${t%%:*} name=${t##*:}
	[[ $name =~ $FUZZ ]] || continue
	n=$((n + 1))
	echo "==> $pkg $name ($FUZZTIME)"
	# shellcheck disable=SC2086 # FUZZFLAGS is a list of flags
	if ! "$GO" test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" ${FUZZFLAGS:-} "$pkg"; then
		failed+=("$pkg $name")
	fi
done
if [ "$n" = 0 ]; then
	echo "fuzz: no target matches FUZZ=$FUZZ" >&2
	exit 1
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $n targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: $n targets, $FUZZTIME each, found nothing"
