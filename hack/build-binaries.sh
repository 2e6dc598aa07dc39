#!/usr/bin/env bash
# Build the local control plane's binaries from their Go modules, once, cached by version.
#
#   etcd            go.etcd.io/etcd/server/v3   (ETCD_VERSION)
#   kube-apiserver  k8s.io/kubernetes           (K8S_VERSION; staging modules replaced by v0.X.Y)
#   helm            helm.sh/helm/v3             (HELM_VERSION)
#   fake-gcs-server github.com/fsouza/fake-gcs-server (FAKE_GCS_VERSION; the GCS emulator)
#
# ROUTING_BINARIES (space-separated, default all four) selects what to build, so a stack that
# needs only the GCS emulator does not wait for kube-apiserver; SKIP_HELM=1 drops helm.
#
# Output: $ROUTING_BIN_DIR (default ~/.cache/routing-registry/bin/<component>-<version>[-stamped]/;
# -stamped marks the builds that carry their version, so an older unstamped cache is not reused).
# When KUBEBUILDER_ASSETS is set and holds etcd + kube-apiserver, those are used instead,
# as envtest users expect. Prints the bin directory of each component on stdout.
set -euo pipefail

ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
FAKE_GCS_VERSION="${FAKE_GCS_VERSION:-v1.56.1}"
WANT=" ${ROUTING_BINARIES:-etcd kube-apiserver fake-gcs-server helm} "
wants() { [[ "$WANT" == *" $1 "* ]]; }
CACHE="${ROUTING_CACHE_DIR:-$HOME/.cache/routing-registry}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0

log() { echo "[build-binaries] $*" >&2; }
# shellcheck source=hack/k8s-version.sh
source "$(dirname "${BASH_SOURCE[0]}")/k8s-version.sh"

helm_version_ldflags() {
  # Run in the wrapper module: helm's default Kubernetes version (`helm template`, `helm lint`)
  # is the client-go it links, which its own release build stamps; unstamped it says v1.20.
  local client minor
  client="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
  minor="${client#v0.}"; minor="${minor%%.*}"
  printf -- '-X helm.sh/helm/v3/internal/version.version=%s ' "$HELM_VERSION"
  printf -- '-X helm.sh/helm/v3/internal/version.gitTreeState=clean '
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    printf -- '-X %s.k8sVersionMajor=1 -X %s.k8sVersionMinor=%s ' "$pkg" "$pkg" "$minor"
  done
}

build_wrapper() {
  # $1 = name, $2 = version dir, $3 = go.mod body, $4 = package to build, $5 = binary name,
  # $6 = optional function printing extra -ldflags (run inside the wrapper module)
  local name="$1" out="$2" gomod="$3" pkg="$4" bin="$5" stamp="${6:-}"
  if [[ -x "$out/$bin" ]]; then return 0; fi
  local work; work="$(mktemp -d)"
  printf '%s\n' "$gomod" > "$work/go.mod"
  printf 'package tools\n\nimport _ "%s"\n' "$pkg" > "$work/tools.go"
  sed -i 's/^package tools$/\/\/go:build tools\n\npackage tools/' "$work/tools.go"
  log "building $name into $out (first time only; this takes minutes)"
  local start=$SECONDS
  ( cd "$work" && go mod tidy >&2 && mkdir -p "$out.tmp" \
      && go build -trimpath -ldflags="-s -w ${stamp:+$($stamp)}" -o "$out.tmp/$bin" "$pkg" >&2 )
  mv "$out.tmp/$bin" "$out.tmp/.built" 2>/dev/null || true
  mkdir -p "$out" && mv "$out.tmp/.built" "$out/$bin" && rmdir "$out.tmp"
  rm -rf "$work"
  log "built $name in $((SECONDS - start)) s"
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/etcd" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]]; then
  log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  if wants etcd; then echo "etcd=$KUBEBUILDER_ASSETS"; fi
  if wants kube-apiserver; then echo "kube-apiserver=$KUBEBUILDER_ASSETS"; fi
else
  etcd_dir="$CACHE/bin/etcd-$ETCD_VERSION"
  if wants etcd; then
    build_wrapper etcd "$etcd_dir" "module routing.local/etcdwrap

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION" go.etcd.io/etcd/server/v3 etcd
    echo "etcd=$etcd_dir"
  fi

  k8s_dir="$CACHE/bin/kube-apiserver-$K8S_VERSION-stamped"
  if wants kube-apiserver && [[ ! -x "$k8s_dir/kube-apiserver" ]]; then
    modfile="$(cd /tmp && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    staging_version="v0.${K8S_VERSION#v1.}"
    replaces="$(grep -oE '^\s*k8s.io/[a-z0-9-]+ => \./staging' "$modfile" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}')"
    build_wrapper kube-apiserver "$k8s_dir" "module routing.local/apiserverwrap

go 1.24

require k8s.io/kubernetes $K8S_VERSION

$replaces" k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver k8s_version_ldflags
  fi
  if wants kube-apiserver; then echo "kube-apiserver=$k8s_dir"; fi
fi

if wants fake-gcs-server; then
  # No replace directives in its go.mod (v1.56.1), so a plain require is enough.
  gcs_dir="$CACHE/bin/fake-gcs-server-$FAKE_GCS_VERSION"
  build_wrapper fake-gcs-server "$gcs_dir" "module routing.local/fakegcswrap

go 1.24

require github.com/fsouza/fake-gcs-server $FAKE_GCS_VERSION" github.com/fsouza/fake-gcs-server fake-gcs-server
  echo "fake-gcs-server=$gcs_dir"
fi

if wants helm && [[ "${SKIP_HELM:-0}" != "1" ]]; then
  helm_dir="$CACHE/bin/helm-$HELM_VERSION-stamped"
  build_wrapper helm "$helm_dir" "module routing.local/helmwrap

go 1.24

require helm.sh/helm/v3 $HELM_VERSION" helm.sh/helm/v3/cmd/helm helm helm_version_ldflags
  echo "helm=$helm_dir"
fi
