#!/usr/bin/env bash
# Runs every test (`make test`, after the binaries are built): the main
# module's unit and cluster tests (-tags integration), the localkube
# module's, and the Prometheus launcher's, the suites side by side. Each
# prints a line per package as it ends; then one summary lists every
# skip with its reason, and in CI (CI=true) fails on a skip that is not on
# .ci/skip-allowlist. Full `go test -json` output: bin/test-results/.
#
#   scripts/test.sh                 every suite
#   TEST_RUN=TestDemo scripts/test.sh   only tests matching a -run pattern
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/bin/test-results
rm -rf "$out" && mkdir -p "$out"
# Tests take the binaries `make build` just put in bin/ rather than
# linking their own (testutil/testbin), and find bin/kubectl, bin/prometheus…
export MESHTLS_BIN=$root/bin PATH=$root/bin:$PATH
flags=(-race -count=1 -timeout "${TEST_TIMEOUT:-30m}")
[ -n "${TEST_RUN:-}" ] && flags+=(-run "$TEST_RUN")

# suite NAME DIR GO-TEST-ARGS…: one `go test -json`, its package lines
# prefixed with NAME, its JSON saved, its time printed.
suite() {
  local name=$1 dir=$2 start=$SECONDS
  shift 2
  (cd "$dir" && go test -json "$@" 2>&1) |
    "$root/bin/testsum" -brief -save "$out/$name.json" |
    sed -u "s/^/[$name] /"
  local rc=$?
  echo "[$name] done in $((SECONDS - start))s"
  return $rc
}

start=$SECONDS
pids=()
suite main . "${flags[@]}" -tags integration ./... & pids+=($!)
# localkube's e2e runs bin/localkube (LOCALKUBE_BINARY) and its own test apps.
LOCALKUBE_BIN_DIR='' LOCALKUBE_BINARY=$root/bin/localkube \
  suite localkube localkube "${flags[@]}" ./internal/... ./e2e/... & pids+=($!)
suite prometheus-launcher install/prometheus -count=1 ./launcher/ & pids+=($!)
# tools/images (own module): reproducible builds, the push, arm64 under
# qemu, the archive imported and run by containerd.
suite images tools/images -count=1 -tags integration -timeout "${TEST_TIMEOUT:-30m}" ${TEST_RUN:+-run "$TEST_RUN"} ./... & pids+=($!)
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
"$root/bin/testsum" -summary -allow .ci/skip-allowlist "$out"/*.json || rc=1
echo "==> tests done in $((SECONDS - start))s"
exit $rc
