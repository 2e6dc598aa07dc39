#!/usr/bin/env bash
# Set up everything the stack and the tests need, idempotently, on a fresh machine:
#   redis-server (apt-get), a Python venv with the project and its test extras at exactly the
#   versions of requirements.lock (what the image ships; `make lock` refreshes it), and the Go-built
#   binaries (etcd, kube-apiserver, helm, fake-gcs-server) cached under ~/.cache/routing-registry.
# The Firestore emulator comes with the machine's gcloud (`gcloud emulators firestore`).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[setup] $*" >&2; }

if ! command -v redis-server >/dev/null 2>&1; then
  log "installing redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v gcloud >/dev/null 2>&1; then
  log "gcloud (with the Firestore emulator component) is required and was not found" && exit 2
fi

PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "installing the project and its test dependencies (constrained by requirements.lock)"
  # pip itself pinned too, so a fresh machine installs with the same resolver as CI did.
  .venv/bin/python -m pip install -q "pip==26.3"
  if ! .venv/bin/python -m pip install -q -c requirements.lock -e ".[test]"; then
    log "pyproject.toml asks for versions requirements.lock does not pin: run 'make lock'"
    exit 1
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi

log "building / reusing cached binaries"
bash hack/build-binaries.sh >/dev/null
log "ready"
