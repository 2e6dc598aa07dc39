#!/usr/bin/env bash
# Build the node's binaries from k8s.io/kubernetes, once, cached by version: the same wrapper
# module (staging modules replaced by v0.X.Y) that hack/build-binaries.sh uses for kube-apiserver.
#
#   kubelet                  k8s.io/kubernetes/cmd/kubelet
#   kube-controller-manager  k8s.io/kubernetes/cmd/kube-controller-manager
#   kube-scheduler           k8s.io/kubernetes/cmd/kube-scheduler
#   routing-pause            hack/pause (the sandbox image's static binary; not from kubernetes)
#
# ROUTING_NODE_BINARIES (space-separated, default all) selects what to build.
# Output: $ROUTING_CACHE_DIR/bin/<name>-<version>/<name> (default cache ~/.cache/routing-registry).
# Prints `name=dir` for each, like hack/build-binaries.sh. Builds run under `nice` so a shared
# machine stays responsive; set ROUTING_BUILD_NICE=0 to build at normal priority.
set -euo pipefail

WANT=" ${ROUTING_NODE_BINARIES:-kubelet kube-controller-manager kube-scheduler routing-pause} "
wants() { [[ "$WANT" == *" $1 "* ]]; }
CACHE="${ROUTING_CACHE_DIR:-$HOME/.cache/routing-registry}"
NICE="${ROUTING_BUILD_NICE:-10}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0

log() { echo "[build-node-binaries] $*" >&2; }
# shellcheck source=hack/k8s-version.sh
source "$HERE/k8s-version.sh"

k8s_replaces() {
  local modfile staging_version
  modfile="$(cd /tmp && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  staging_version="v0.${K8S_VERSION#v1.}"
  grep -oE '^\s*k8s.io/[a-z0-9-]+ => \./staging' "$modfile" \
    | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
}

build_k8s() {
  # $1 = command under k8s.io/kubernetes/cmd
  local name="$1" out="$CACHE/bin/$1-$K8S_VERSION"
  if [[ ! -x "$out/$name" ]]; then
    local work start=$SECONDS
    work="$(mktemp -d)"
    cat > "$work/go.mod" <<GOMOD
module routing.local/${name//-/}wrap

go 1.24

require k8s.io/kubernetes $K8S_VERSION

$(k8s_replaces)
GOMOD
    printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/%s"\n' "$name" \
      > "$work/tools.go"
    log "building $name $K8S_VERSION into $out (first time only; this takes minutes)"
    ( cd "$work" && go mod tidy >&2 && mkdir -p "$out.tmp" \
      && nice -n "$NICE" go build -trimpath -ldflags="-s -w $(k8s_version_ldflags)" -o "$out.tmp/$name" \
         "k8s.io/kubernetes/cmd/$name" >&2 )
    mkdir -p "$out" && mv "$out.tmp/$name" "$out/$name" && rmdir "$out.tmp"
    rm -rf "$work"
    log "built $name in $((SECONDS - start)) s"
  fi
  echo "$name=$out"
}

build_pause() {
  # Versioned by the content of its source, so an edit rebuilds it.
  local sum out
  sum="$(sha256sum "$HERE/pause/main.go" | cut -c1-12)"
  out="$CACHE/bin/routing-pause-$sum"
  if [[ ! -x "$out/routing-pause" ]]; then
    mkdir -p "$out.tmp"
    ( cd "$HERE/pause" && nice -n "$NICE" go build -trimpath -ldflags='-s -w' \
        -o "$out.tmp/routing-pause" . >&2 )
    mkdir -p "$out" && mv "$out.tmp/routing-pause" "$out/routing-pause" && rmdir "$out.tmp"
    log "built routing-pause into $out"
  fi
  echo "routing-pause=$out"
}

for name in kubelet kube-controller-manager kube-scheduler; do
  if wants "$name"; then build_k8s "$name"; fi
done
if wants routing-pause; then build_pause; fi
