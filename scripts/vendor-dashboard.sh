#!/usr/bin/env bash
# Re-fetches the dashboard's script libraries from the npm registry and
# verifies them: each tarball's sha512 must equal the integrity the registry
# publishes for that exact version, and each extracted file must equal the
# sha256 recorded in dashboard/static/VENDOR.md (so a re-run proves the
# committed files are what the registry serves). No Node build step: the
# packages ship minified files, which are copied as they are.
#
#   scripts/vendor-dashboard.sh          # verify the committed files
#   scripts/vendor-dashboard.sh update   # rewrite them and VENDOR.md's hashes
set -euo pipefail

cd "$(dirname "$0")/.."
dest=dashboard/static/vendor
vendor_md=dashboard/static/VENDOR.md
registry=https://registry.npmjs.org
mode=${1:-verify}

# name version file-in-package local-name
libs=(
  "htmx.org 2.0.11 dist/htmx.min.js htmx.min.js"
  "htmx-ext-sse 2.2.4 dist/sse.min.js htmx-ext-sse.min.js"
  "uplot 1.6.32 dist/uPlot.iife.min.js uPlot.iife.min.js"
  "uplot 1.6.32 dist/uPlot.min.css uPlot.min.css"
  "htmx.org 2.0.11 LICENSE htmx.LICENSE"
  "htmx-ext-sse 2.2.4 LICENSE htmx-ext-sse.LICENSE"
  "uplot 1.6.32 LICENSE uPlot.LICENSE"
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dest"
fail=0
for lib in "${libs[@]}"; do
  read -r name version file local <<<"$lib"
  meta="$tmp/$name-$version.json"
  [ -f "$meta" ] || curl -fsS "$registry/$name/$version" -o "$meta"
  integrity=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dist"]["integrity"])' "$meta")
  tarball=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dist"]["tarball"])' "$meta")
  tgz="$tmp/$name-$version.tgz"
  if [ ! -f "$tgz" ]; then
    curl -fsS "$tarball" -o "$tgz"
    got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
    if [ "$got" != "$integrity" ]; then
      echo "$name@$version: tarball integrity $got does not match the registry's $integrity" >&2
      exit 1
    fi
    mkdir -p "$tmp/$name-$version"
    tar -xzf "$tgz" -C "$tmp/$name-$version"
  fi
  src="$tmp/$name-$version/package/$file"
  sum=$(sha256sum "$src" | cut -d' ' -f1)
  if [ "$mode" = update ]; then
    cp "$src" "$dest/$local"
    echo "$local $name@$version $integrity sha256:$sum"
    continue
  fi
  recorded=$(grep -F "| \`$local\` |" "$vendor_md" | grep -o 'sha256:[0-9a-f]*' | cut -d: -f2 || true)
  have=$(sha256sum "$dest/$local" 2>/dev/null | cut -d' ' -f1 || true)
  if [ "$sum" != "$recorded" ] || [ "$sum" != "$have" ]; then
    echo "$local: registry's $name@$version has sha256:$sum; VENDOR.md records ${recorded:-nothing}; the committed file is ${have:-missing}" >&2
    fail=1
  else
    echo "ok $local ($name@$version, $integrity)"
  fi
done
exit $fail
