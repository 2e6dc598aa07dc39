#!/usr/bin/env bash
# End to end on a real node of our own: the image, the node, the chart, the scenarios.
#
#   hack/e2e.sh [pytest args...]
#
# 1. builds the node's binaries once (hack/build-node-binaries.sh; cached under ~/.cache);
# 2. builds the project image (`make image`, podman) unless ROUTING_E2E_SKIP_IMAGE=1;
# 3. runs tests/e2e with --cluster=node: the local control plane plus kubelet and containerd
#    in a throw-away state directory, everything stopped and cleaned up at the end.
#
# ROUTING_E2E_IMAGE (default localhost/routing-registry:dev) names another podman image to run.
# ROUTING_E2E_REQUIRED defaults to 1 here: a skip (no root, no podman, no image) is a failure.
# Needs root (containerd, a bridge, iptables rules) and the packages the node installs on first
# use: containerd runc containernetworking-plugins conntrack iptables.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROUTING_E2E_REQUIRED="${ROUTING_E2E_REQUIRED:-1}"

start=$SECONDS
bash hack/build-node-binaries.sh >/dev/null
if [[ "${ROUTING_E2E_SKIP_IMAGE:-0}" != "1" ]]; then
  make image
fi
echo "[e2e] binaries and image ready in $((SECONDS - start)) s" >&2
.venv/bin/python -m pytest tests/e2e --cluster=node -v -rs "$@"
echo "[e2e] done in $((SECONDS - start)) s" >&2
