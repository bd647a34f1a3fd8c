#!/usr/bin/env bash
# `make e2e`, for users with Docker (not run in CI: these machines have no Docker engine):
# a kind cluster, the nightshift image loaded into it, `helm install`, and the demo jobs.
set -euo pipefail
cluster=${KIND_CLUSTER:-nightshift-e2e}
image=${IMAGE:-nightshift:e2e}
for tool in docker kind helm kubectl; do
  command -v "$tool" >/dev/null || { echo "e2e needs $tool on PATH" >&2; exit 1; }
done
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster"
docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"
helm upgrade --install nightshift charts/nightshift -n nightshift-system --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image#*:}" --set image.pullPolicy=Never --wait
kubectl create namespace nightshift-demo --dry-run=client -o yaml | kubectl apply -f -
kubectl -n nightshift-demo create secret generic app-db --from-literal=DATABASE_URL="${DATABASE_URL:-postgresql://postgres@postgres/app}" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f manifests/demo/jobs.yaml
kubectl -n nightshift-demo get backgroundjobs -w
