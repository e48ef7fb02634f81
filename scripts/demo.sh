#!/usr/bin/env bash
# The live demo (`make demo`, `make demo-down`): a local cluster, the
# control plane with TLS, emojivoto meshed, then the live
# `linkerd stat authority -n emojivoto`. It first installs the Debian
# packages the mesh runs and this machine lacks (scripts/deps.sh demo). It
# leaves the mesh running; a second run reuses what runs. Where the mesh
# cannot run (no root, no network namespaces) it prints the table of a
# capture recorded from this demo and fails with one line saying why: a
# zero exit means the live mesh ran.
#
#   scripts/demo.sh up        # what `make demo` runs
#   scripts/demo.sh offline   # what `make demo-offline` runs: the recorded table, on purpose
#   scripts/demo.sh down      # what `make demo-down` runs
#
# Environment: MESHTLS_DEMO_DIR (cluster dir, default .localkube/demo),
# DEMO_TRAFFIC_TIMEOUT (seconds to wait for live traffic, default 180).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/bin
CP_NS=linkerd
APP_NS=emojivoto
TRAFFIC_TIMEOUT=${DEMO_TRAFFIC_TIMEOUT:-180}
# The first table's window: 30 s of a fresh mesh's traffic fill it sooner
# than stat's default minute, and it is a window Prometheus (scraping every
# 10 s) covers with three or four samples.
FIRST_WINDOW=30s
MAKE=${MAKE:-make}

if [[ -t 1 && -z ${NO_COLOR:-} ]]; then
	B=$'\033[1m' C=$'\033[36m' G=$'\033[32m' Y=$'\033[33m' R=$'\033[0m'
else
	B='' C='' G='' Y='' R=''
fi

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
START=$(now)
STEP=0
STEPS=7
STEP_START=$START
step() {
	STEP=$((STEP + 1))
	STEP_START=$(now)
	printf '%s==> [%d/%d] %s%s\n' "$C" "$STEP" "$STEPS" "$*" "$R"
}
done_step() { printf '    %sdone%s in %s%s\n' "$G" "$R" "$(secs "$STEP_START")" "${1:+ ($1)}"; }
die() {
	printf '%smake demo: %s%s\n' "$Y" "$*" "$R" >&2
	exit 1
}

# demo_dir is the cluster's persistent dir. Pods run as other users (the
# proxy as 2102, Prometheus as nobody) and read their volumes under it, so
# every parent must let others through; otherwise use a dir under /var/tmp.
demo_dir() {
	if [[ -n ${MESHTLS_DEMO_DIR:-} ]]; then
		echo "$MESHTLS_DEMO_DIR"
		return
	fi
	local d=$ROOT
	while [[ $d != / ]]; do
		if [[ $(stat -c %A "$d") != *x ]]; then
			echo "/var/tmp/meshtls-demo-$(printf %s "$ROOT" | md5sum | cut -c1-8)"
			return
		fi
		d=$(dirname "$d")
	done
	echo "$ROOT/.localkube/demo"
}
DIR=$(demo_dir)
export KUBECONFIG=$DIR/kubeconfig

kubectl() { "$BIN/kubectl" "$@"; }
linkerd() { NO_COLOR=${NO_COLOR:-} "$BIN/linkerd" "$@"; }

# recorded_table prints the table of a capture recorded from this demo
# (`linkerd capture record`, shipped in the CLI).
recorded_table() {
	"$MAKE" -s -C "$ROOT" build >/dev/null
	"$BIN/linkerd" stat authority -n "$APP_NS" --capture builtin:emojivoto-live
}

# offline is `make demo-offline`: the recorded table, asked for.
offline() {
	printf '%sA capture recorded from this demo, not a live mesh (linkerd stat --capture builtin:emojivoto-live):%s\n' "$Y" "$R"
	recorded_table
}

# no_mesh_here ends a run on a machine that cannot run the mesh: the
# recorded table, then one line saying why and failing, so that a zero exit
# always means the live mesh ran.
no_mesh_here() {
	recorded_table || true
	die "no live mesh: $1. The table above is a capture recorded from this demo, not live; make demo-offline prints it on purpose."
}

# no_live_mesh says why this machine cannot run the live mesh, or nothing.
# It needs nothing that scripts/deps.sh installs (unshare is util-linux,
# an Essential package), so it runs first.
no_live_mesh() {
	if [[ $(id -u) != 0 ]]; then
		echo "it needs root (each pod gets a network namespace, a veth and iptables rules)"
	elif [[ ! -e /proc/self/ns/net ]] || ! unshare --net true 2>/dev/null; then
		echo "this machine cannot create network namespaces (each pod needs one)"
	fi
}

# wait_for runs "$@" until it succeeds or timeout seconds pass.
wait_for() {
	local timeout=$1
	shift
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			return 1
		fi
		sleep 1
	done
}

# rps_by_name reads `linkerd stat -o json` and prints each row's name and
# RPS ("null" when stat has none), one row a line. It goes by the JSON's
# keys, one per line as stat indents them, not by a table's columns; the
# nested objects (no_tls, top_plaintext) have neither key.
rps_by_name() {
	awk '/^[[:space:]]*"name":/ { name = $2; gsub(/^"|",?$/, "", name) }
		/^[[:space:]]*"rps":/ { rps = $2; sub(/,$/, "", rps); print name, rps }'
}

# all_services_busy reads rps_by_name's lines and says whether every
# emojivoto Service's authority has requests.
all_services_busy() {
	awk '$1 ~ /^(web|emoji|voting)-svc\./ && $2 != "null" && $2 + 0 > 0 { split($1, a, "."); seen[a[1]] = 1 }
		END { exit !(("web-svc" in seen) && ("emoji-svc" in seen) && ("voting-svc" in seen)) }'
}

# web_svc_rps reads rps_by_name's lines and prints web-svc's RPS, or fails.
web_svc_rps() {
	awk '$1 ~ /^web-svc\./ && $2 != "null" { print $2; found = 1 } END { exit !found }'
}

# traffic_flows says whether stat, from the control plane's Prometheus,
# shows requests on every emojivoto Service's authority.
traffic_flows() {
	local json
	json=$(linkerd stat authority -n "$APP_NS" -o json 2>/dev/null) || return 1
	rps_by_name <<<"$json" | all_services_busy
}

# web_rps prints web-svc's RPS over the last WINDOW from the control
# plane's Prometheus (a number, no unit), or fails.
web_rps() {
	local json
	json=$(linkerd stat authority -n "$APP_NS" -t "$1" -o json 2>/dev/null) || return 1
	rps_by_name <<<"$json" | web_svc_rps
}

# window_filled waits until the first table's window holds steady traffic:
# right after the first scrapes, Prometheus has samples for only part of
# the window and the rate reads low (a third of the truth 20 s in). Two
# readings a scrape apart that agree within 10% mean the window is full.
window_filled() {
	local window=$1 timeout=$2 prev='' cur
	local deadline=$((SECONDS + timeout))
	# A mesh that has run for a minute already (a second `make demo`): the
	# minute and the window agree at once.
	prev=$(web_rps 1m) || prev=''
	while ((SECONDS < deadline)); do
		if cur=$(web_rps "$window"); then
			if [[ -n $prev ]] && awk -v a="$prev" -v b="$cur" 'BEGIN { exit !(b > 0 && (a - b) / b < 0.1 && (b - a) / b < 0.1) }'; then
				return 0
			fi
			prev=$cur
		fi
		sleep 10
	done
	return 1
}

# dns_probe runs a one-shot pod that resolves a Service name as the apps
# do and prints what it saw.
dns_probe() {
	local phase='' out
	kubectl -n "$APP_NS" delete pod dns-probe --ignore-not-found >/dev/null 2>&1 || true
	kubectl -n "$APP_NS" run dns-probe --image=ghcr.io/meshtls/emojivoto:v11 --restart=Never -- lookup --connect web-svc.emojivoto:80 >/dev/null 2>&1 || return 1
	local deadline=$((SECONDS + 60))
	while ((SECONDS < deadline)); do
		phase=$(kubectl -n "$APP_NS" get pod dns-probe -o jsonpath='{.status.phase}' 2>/dev/null || true)
		[[ $phase == Succeeded || $phase == Failed ]] && break
		sleep 1
	done
	out=$(kubectl -n "$APP_NS" logs dns-probe 2>/dev/null | head -1 || true)
	kubectl -n "$APP_NS" delete pod dns-probe --wait=false >/dev/null 2>&1 || true
	echo "$out"
	[[ $phase == Succeeded ]]
}

up() {
	local why
	why=$(no_live_mesh)
	[[ -z $why ]] || no_mesh_here "$why"
	"$ROOT/scripts/deps.sh" demo

	step "build the CLI, proxy, controller, emojivoto, the local Kubernetes and Prometheus"
	"$MAKE" -s -C "$ROOT" build localkube prometheus >/dev/null
	done_step

	step "start the local cluster in $DIR"
	if "$BIN/localkube" status --dir "$DIR" >/dev/null 2>&1; then
		done_step "already running: reused"
	else
		mkdir -p "$DIR"
		chmod 755 "$DIR"
		local out
		if ! out=$("$BIN/localkube" up --dir "$DIR" 2>&1); then
			local cannot
			if cannot=$(grep -m1 "pod networking needs" <<<"$out"); then
				no_mesh_here "$cannot"
			fi
			die "localkube up failed: $(tail -1 <<<"$out") (logs: $DIR/logs)"
		fi
		done_step
	fi

	step "linkerd install --tls=optional | kubectl apply -f -"
	if kubectl -n "$CP_NS" get deploy/linkerd-ca >/dev/null 2>&1; then
		# A second install would mint a new root under the running mesh.
		done_step "control plane already installed: reused"
	else
		linkerd install --tls=optional | kubectl apply -f - >/dev/null
		done_step
	fi

	step "wait for linkerd check --tls"
	if ! linkerd check --tls --wait 3m >/dev/null 2>&1; then
		linkerd check --tls || true
		die "linkerd check --tls did not pass within 3m (above)"
	fi
	done_step

	step "linkerd inject --tls=optional demo/emojivoto.yml | kubectl apply -f -"
	linkerd inject --tls=optional "$ROOT/demo/emojivoto.yml" 2>/dev/null | kubectl apply -f - >/dev/null
	if ! kubectl -n "$APP_NS" wait --for=condition=Available deploy --all --timeout=180s >/dev/null; then
		kubectl -n "$APP_NS" get pods
		die "emojivoto's Deployments are not available after 3m"
	fi
	done_step

	step "wait for traffic in the control plane's Prometheus (scrapes every 10s) to fill a ${FIRST_WINDOW} window"
	if ! wait_for "$TRAFFIC_TIMEOUT" traffic_flows; then
		linkerd stat authority -n "$APP_NS" || true
		local probe
		if ! probe=$(dns_probe); then
			die "no traffic after ${TRAFFIC_TIMEOUT}s: pods cannot reach Services by name (cluster DNS, ClusterIPs) - ${probe:-the probe pod did not run}; the mesh is left running (make demo-down stops it)"
		fi
		die "no traffic after ${TRAFFIC_TIMEOUT}s although DNS resolves ($probe); see kubectl -n $APP_NS logs deploy/vote-bot and deploy/web"
	fi
	if ! window_filled "$FIRST_WINDOW" 90; then
		printf '    %snote:%s the rate was still changing after 90s; the table may read low\n' "$Y" "$R"
	fi
	done_step

	step "linkerd stat authority -n $APP_NS -t $FIRST_WINDOW"
	linkerd stat authority -n "$APP_NS" -t "$FIRST_WINDOW"
	done_step

	printf '\n%sThe mesh is running%s (%s from start). Next:\n\n' "$B" "$R" "$(secs "$START")"
	cat <<EOF
  export KUBECONFIG=$KUBECONFIG PATH="$BIN:\$PATH"
  linkerd stat authority -n $APP_NS            # live, from the control plane's Prometheus
  linkerd stat deploy -n $APP_NS -o wide       # which traffic is plain text, and why
  linkerd tap deploy/web -n $APP_NS --tui
  linkerd check --tls
  make demo-down                                # stop it and delete $DIR

EOF
}

down() {
	if [[ ! -e $DIR ]]; then
		echo "make demo-down: no demo cluster in $DIR"
		return
	fi
	"$BIN/localkube" down --dir "$DIR" || true
	rm -rf "$DIR"
	echo "make demo-down: stopped the demo cluster and deleted $DIR"
}

# mem prints the resident memory of the running demo: localkube, the
# control plane it runs (etcd, API server, controller manager) and every
# pod's process (the mesh's control plane, proxies and emojivoto).
mem() {
	local lk
	lk=$(sed -n 's/^  "pid": \([0-9]*\),$/\1/p' "$DIR/state.json" 2>/dev/null | head -1)
	for p in /proc/[0-9]*; do
		if [[ ${p#/proc/} == "$lk" ]] || { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qx "LOCALKUBE_CLUSTER_DIR=$DIR"; then
			printf '%s %s\n' "$(awk '/^VmRSS/ {print $2}' "$p/status" 2>/dev/null)" "$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | cut -c1-60)"
		fi
	done | sort -n | awk '$1 > 0 { s += $1; n++; printf "%8.1f MiB  %s\n", $1 / 1024, substr($0, index($0, " ") + 1) }
		END { printf "%8.1f MiB  total, %d processes\n", s / 1024, n }'
}

# Sourced (scripts/demo_test.go tests the functions above), it only
# defines them.
if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
	return 0
fi
case ${1:-up} in
up) up ;;
offline) offline ;;
down) down ;;
mem) mem ;;
*) die "usage: scripts/demo.sh up|offline|down|mem" ;;
esac
