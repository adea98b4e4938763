#!/usr/bin/env bash
# The end-to-end suite on a kind cluster, for machines with Docker (the testbed is the place
# without it). Creates the cluster from hack/kind.yaml, builds the one image and loads it,
# cordons the spare workers, taints the system worker, then runs `pytest -m e2e` against it.
#
#   hack/kind-e2e.sh            # KEEP=1 keeps the cluster afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-gitquorum-e2e}
KUBECONFIG_FILE=${KUBECONFIG_FILE:-$PWD/.kind-kubeconfig}
IMAGES=(ghcr.io/gitquorum/gitquorum:0.1.0 gitquorum:0.1.0)   # chart default, standalone example

for tool in docker kind; do
    command -v "$tool" >/dev/null || { echo "$tool is needed on PATH" >&2; exit 2; }
done
make setup
kubectl=(.venv/bin/kubectl --kubeconfig "$KUBECONFIG_FILE")   # the pinned one

echo "==> kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" \
    || kind create cluster --name "$CLUSTER" --config hack/kind.yaml --kubeconfig "$KUBECONFIG_FILE"
echo "==> image ${IMAGES[*]}"
docker build $(printf -- '-t %s ' "${IMAGES[@]}") .
kind load docker-image "${IMAGES[@]}" --name "$CLUSTER"
echo "==> spare workers cordoned, the system worker tainted"
for node in $("${kubectl[@]}" get nodes -l gitquorum.io/spare=true -o name); do
    "${kubectl[@]}" cordon "$node"
done
"${kubectl[@]}" taint nodes -l gitquorum.io/system=true gitquorum.io/system=true:NoSchedule \
    --overwrite

status=0
GITQUORUM_KUBECONFIG="$KUBECONFIG_FILE" .venv/bin/pytest -m e2e -q -ra || status=$?
[[ -n "${KEEP:-}" ]] || kind delete cluster --name "$CLUSTER"
exit "$status"
