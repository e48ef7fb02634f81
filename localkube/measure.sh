#!/usr/bin/env bash
# measure.sh: the figures of localkube/README.md. Run from the repository
# root after `make localkube`: bash localkube/measure.sh [RUNS]
# MEASURE_BIN=DIR measures the binaries of DIR instead of bin/ (for an A/B
# against another commit's localkube).
set -euo pipefail
runs=${1:-3}
bin=${MEASURE_BIN:-$(pwd)/bin}
work=$(mktemp -d)
trap '"$bin/localkube" down --dir "$work/c" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
(cd localkube && go build -o "$work/apps/testapp" ./internal/cmd/testapp)

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

# Sum of VmRSS (MiB) of the cluster's processes: localkube and everything it started.
rss() {
	local dir=$1 total=0 pid
	for pid in $(cat "$dir/state.json" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p' | head -1) \
		$(grep -l "LOCALKUBE_CLUSTER_DIR=$dir" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
		kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		total=$((total + ${kb:-0}))
	done
	echo $((total / 1024))
}

echo "fresh up (new dir) to ready:"
for i in $(seq "$runs"); do
	s=$(now); "$bin/localkube" up --dir "$work/f$i" >/dev/null; echo "  $(since "$s")s"
	"$bin/localkube" down --dir "$work/f$i" >/dev/null
done
echo "restart (existing dir) to ready:"
"$bin/localkube" up --dir "$work/c" --bin-dir "$work/apps" >/dev/null
"$bin/localkube" down --dir "$work/c" >/dev/null
for i in $(seq "$runs"); do
	s=$(now); "$bin/localkube" up --dir "$work/c" --bin-dir "$work/apps" >/dev/null; echo "  $(since "$s")s"
	[ "$i" = "$runs" ] || "$bin/localkube" down --dir "$work/c" >/dev/null
done
export KUBECONFIG=$work/c/kubeconfig
sleep 5
echo "idle cluster RSS: $(rss "$work/c") MiB"
kp=$(sed -n 's/.*"kube-proxy": \([0-9]*\).*/\1/p' "$work/c/state.json")
[ -n "$kp" ] && echo "  of which kube-proxy: $(($(awk '/VmRSS/ {print $2}' "/proc/$kp/status") / 1024)) MiB"
for pid in $(pgrep -x coredns || true); do
	if grep -qz "LOCALKUBE_CLUSTER_DIR=$work/c" "/proc/$pid/environ" 2>/dev/null; then
		echo "  of which coredns: $(($(awk '/VmRSS/ {print $2}' "/proc/$pid/status") / 1024)) MiB"
	fi
done

cat >"$work/fifty.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: fifty}
spec:
  replicas: 50
  selector: {matchLabels: {app: fifty}}
  template:
    metadata: {labels: {app: fifty}}
    spec:
      containers:
      - name: app
        image: example.test/testapp:v1
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1
YAML
echo "50-replica Deployment, apply to all Ready:"
for i in $(seq "$runs"); do
	s=$(now)
	"$bin/kubectl" apply -f "$work/fifty.yaml" >/dev/null
	until [ "$("$bin/kubectl" get deploy fifty -o jsonpath='{.status.readyReplicas}')" = 50 ]; do sleep 0.1; done
	echo "  $(since "$s")s"
	[ "$i" = "$runs" ] && echo "cluster RSS with 50 pods: $(rss "$work/c") MiB"
	"$bin/kubectl" delete -f "$work/fifty.yaml" --wait >/dev/null
	until [ -z "$("$bin/kubectl" get pods -l app=fifty -o name)" ]; do sleep 0.2; done
done
