#!/usr/bin/env bash
# The version make stamps into the CLI, the binaries and the images: a clean
# commit with a tag is its tag; anything else is "dev-" plus git describe
# (dev-e45bc1c, dev-v0.2.0-3-g1a2b3c4, …-dirty); outside git, "dev".
set -euo pipefail
cd "$(dirname "$0")/.."
d=$(git describe --tags --always --dirty 2>/dev/null) || { echo dev; exit 0; }
if [[ $d != *-dirty ]] && git describe --tags --exact-match >/dev/null 2>&1; then
	echo "$d"
else
	echo "dev-$d"
fi
