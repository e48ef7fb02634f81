#!/usr/bin/env bash
# Installs the Debian packages the tests drive for real, when missing:
# chromium (the dashboard's browser tests), openssl (certificate
# verification), tmux (TUI tests), iptables and iproute2
# (the local cluster's pod networks and proxy-init's rules). kubectl is not here:
# Debian's kubernetes-client is 1.20, too old for the 1.36 local cluster,
# so `make localkube` builds bin/kubectl from the same pinned release.
# Prometheus is not here either: Debian's lacks Kubernetes service discovery,
# so `make prometheus` builds bin/prometheus-server and bin/promtool, which
# the tests use.
set -euo pipefail

need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want openssl openssl
want tmux tmux
# Pod networking (localkube): network namespaces, bridges, NAT rules.
want iptables iptables
want ip iproute2
# The proxy's tests: network namespaces, proxy-init's rules, and setpriv to
# run as the proxy's uid.
want iptables-restore iptables
want setpriv util-linux
# The dashboard's browser tests drive Debian's chromium headless (about
# 350 MB installed; apt took 13 s here with a warm mirror), with an emoji
# font so screenshots show the lock marks.
want chromium chromium
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
# `scripts/deps.sh bench` (make bench-proxy) adds the proxy benchmark's
# peers, nginx and haproxy; `make test` does not need them.
if [ "${1:-}" = bench ]; then
  want nginx nginx
  want haproxy haproxy
fi
# `scripts/deps.sh generate` (make generate) also installs protoc and the
# well-known .proto files the tap API imports.
if [ "${1:-}" = generate ]; then
  want protoc protobuf-compiler
  [ -f /usr/include/google/protobuf/duration.proto ] || need+=(libprotobuf-dev)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t pkgs < <(printf '%s\n' "${need[@]}" | sort -u)
echo "Installing Debian packages: ${pkgs[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
