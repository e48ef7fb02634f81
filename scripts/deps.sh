#!/usr/bin/env bash
# Installs the Debian packages a make command runs and this machine lacks,
# from scripts/tools.txt only (which tools each command needs, and why).
#
#   scripts/deps.sh [demo|test|bench|generate]   # default: test
#
# It prints one line naming what it installs and why, or nothing when all
# is there. Only bash builtins and apt-get run here (sudo when not root):
# scripts/tools_test.go runs it with nothing else on PATH, and with
# DEPS_SYSROOT, a dir to look for the listed files under instead of /.
set -euo pipefail

cmd=${1:-test}
case $cmd in
demo | test | bench | generate) ;;
*)
	echo "scripts/deps.sh: unknown command \"$cmd\"; use demo, test, bench or generate" >&2
	exit 2
	;;
esac
dir=${BASH_SOURCE[0]%/*}
[[ $dir != "${BASH_SOURCE[0]}" ]] || dir=.
list=$dir/tools.txt

# present says whether one of the alternatives a|b|… is there: a file for a
# path, else a command on PATH.
present() {
	local alt
	local -a alts
	IFS='|' read -ra alts <<<"$1"
	for alt in "${alts[@]}"; do
		if [[ $alt == /* ]]; then
			[[ -e ${DEPS_SYSROOT:-}$alt ]] && return 0
		elif command -v "$alt" >/dev/null 2>&1; then
			return 0
		fi
	done
	return 1
}

declare -A why=()
pkgs=()
while read -r commands exe pkg reason; do
	[[ -z $commands || $commands == \#* ]] && continue
	[[ ,$commands, == *,"$cmd",* ]] || continue
	present "$exe" && continue
	if [[ -z ${why[$pkg]+set} ]]; then
		pkgs+=("$pkg")
		why[$pkg]="${exe%%|*}: $reason"
	else
		why[$pkg]+="; ${exe%%|*}: $reason"
	fi
done <"$list"

((${#pkgs[@]} > 0)) || exit 0

line=""
for pkg in "${pkgs[@]}"; do
	line+="${line:+, }$pkg (${why[$pkg]})"
done
echo "make $cmd: installing from Debian: $line"

apt() {
	if ((EUID == 0)); then
		DEBIAN_FRONTEND=noninteractive apt-get "$@"
	else
		sudo DEBIAN_FRONTEND=noninteractive apt-get "$@"
	fi
}
apt -qq update
apt -y -qq --no-install-recommends install "${pkgs[@]}" >/dev/null
