#!/usr/bin/env bash
# `make cluster`: start the test control plane in the background and wait until it is ready.
set -euo pipefail
dir=.cluster
mkdir -p "$dir"
if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
  echo "cluster already running: export KUBECONFIG=$PWD/$dir/kubeconfig"; exit 0
fi
rm -f "$dir/ready"
NIGHTSHIFT_BIN_DIR=$(bash hack/build-binaries.sh 2>/dev/null | tail -n1) \
  nohup .venv/bin/python -m tests.support.cluster up --dir "$dir" >"$dir/cluster.log" 2>&1 &
for _ in $(seq 1 120); do
  [ -f "$dir/ready" ] && { echo "cluster ready: export KUBECONFIG=$PWD/$dir/kubeconfig"; exit 0; }
  kill -0 $! 2>/dev/null || { cat "$dir/cluster.log"; exit 1; }
  sleep 0.5
done
echo "cluster did not become ready; see $dir/cluster.log" >&2; exit 1
