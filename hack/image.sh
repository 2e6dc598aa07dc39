#!/usr/bin/env bash
# Build the image and tell the image tests how to run containers on this machine.
#
#   hack/image.sh engine        print the container engine: docker where a daemon answers, else
#                               podman; exit 3 (with the reason on stderr) when neither can run
#   hack/image.sh run-flags     print, one per line, the flags `ENGINE run` needs on this machine
#   hack/image.sh build IMAGE [FLAGS...]
#                               build the Dockerfile as IMAGE (make image), FLAGS passed to build
#   hack/image.sh deps          install podman and what the stand-in base needs (apt-get), unless
#                               a Docker daemon answers or they are installed already (CI)
#
# The base the Dockerfile's FROM names is used when it exists locally or can be pulled; otherwise
# hack/standin-base.sh builds a stand-in from Debian's packages, with a loud banner.
#
# pip inside the build reaches the package index through this machine's pip settings (index,
# proxy, CA bundle). Podman lends them to the build as a read-only bind mount over /root
# (`build -v`), so they are in no layer (tests/image/test_image.py opens every layer to check).
# `docker build` has no such mount for an unchanged Dockerfile: with Docker the build uses pip's
# defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[image] $*" >&2; }

engine() {
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then
    echo podman
  else
    echo "no container engine: 'docker info' fails (no daemon) and podman is not usable;" \
      "install podman (apt-get install podman runc) or start Docker" >&2
    return 3
  fi
}

# Podman on this kind of machine: runc (crun cannot run on a cgroup hybrid-mode host), ulimits
# within the hard limits (podman's defaults exceed them on hosts with lower limits), host network
# (the local stack listens on loopback; a bridge network needs iptables the host may not have).
podman_flags() {
  if command -v runc >/dev/null 2>&1; then
    echo "--runtime=runc"
  fi
  echo "--ulimit=nofile=$(ulimit -H -n):$(ulimit -H -n)"
  # nproc: the hard limit, but no more than pid_max (the container's init is refused a higher one).
  local nproc pid_max
  nproc="$(ulimit -H -u)"
  pid_max="$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)"
  if [[ "$nproc" == unlimited ]] || ((nproc > pid_max)); then
    nproc="$pid_max"
  fi
  echo "--ulimit=nproc=$nproc:$nproc"
  echo "--network=host"
}

run_flags() {
  case "$(engine)" in
    podman) podman_flags ;;
    docker) echo "--network=host" ;;
  esac
}

# The base image the Dockerfile builds FROM (the default of its PYTHON_IMAGE argument).
dockerfile_base() {
  sed -n 's/^ARG PYTHON_IMAGE=\(.*\)$/\1/p' Dockerfile | head -n1
}

# A short name as Docker resolves it (podman asks for a fully qualified one to pull).
qualified() {
  local ref="$1" first="${1%%/*}"
  if [[ "$ref" != */* ]]; then
    echo "docker.io/library/$ref"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
    echo "docker.io/$ref"
  else
    echo "$ref"
  fi
}

is_standin() {
  local key
  key="$("$1" image inspect --format '{{ index .Config.Labels "io.engines.routing-registry.standin-base" }}' "$2" 2>/dev/null)"
  [[ -n "$key" && "$key" != "<no value>" ]]
}

ensure_base() {
  local eng="$1" ref="$2"
  if "$eng" image inspect "$ref" >/dev/null 2>&1 && ! is_standin "$eng" "$ref"; then
    log "base $ref: present"
    return
  fi
  log "base $ref: pulling"
  if "$eng" pull -q "$(qualified "$ref")" >/dev/null 2>"$tmp/pull.err"; then
    [[ "$eng" == podman ]] && podman tag "$(qualified "$ref")" "$ref"
    log "base $ref: pulled (official)"
    return
  fi
  log "base $ref: cannot be pulled ($(tail -n1 "$tmp/pull.err"))"
  bash hack/standin-base.sh "$eng" "$ref"
}

# This machine's effective pip settings (files and PIP_* environment) that reach the index, as
# one pip.conf in DIR/.config/pip/, with the CA bundle it names copied beside it; DIR is mounted
# read-only over /root, the build's HOME, where pip reads a user config. /root exists in the base,
# so nothing is created for the mount (a mount point the build had to create, such as
# /etc/pip.conf, would stay in the layer as an empty file).
pip_settings() {
  local dir="$1/.config/pip" pip=(python3 -m pip)
  mkdir -p "$dir"
  [[ -x .venv/bin/python ]] && pip=(.venv/bin/python -m pip)
  "${pip[@]}" config list 2>/dev/null | sed -n \
    -e "s/^[^.]*\.\(index-url\|extra-index-url\|trusted-host\|proxy\|cert\|client-cert\|timeout\|default-timeout\|retries\)='\(.*\)'$/\1 \2/p" \
    | awk '!seen[$1]++' >"$1/settings"
  # PIP_CERT unset but the machine trusts a bundle through the usual variables: lend that one.
  if ! grep -q '^cert ' "$1/settings"; then
    local bundle="${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}"
    [[ -n "$bundle" && -r "$bundle" ]] && echo "cert $bundle" >>"$1/settings"
  fi
  {
    echo "[global]"
    local key value
    while read -r key value; do
      [[ "$key" == default-timeout ]] && key=timeout
      if [[ "$key" == cert || "$key" == client-cert ]]; then
        cp "$value" "$dir/$key.pem"
        value="/root/.config/pip/$key.pem"
      fi
      echo "$key = $value"
    done <"$1/settings"
  } >"$dir/pip.conf"
  rm -f "$1/settings"
}

build() {
  local image="$1" eng base started
  shift
  eng="$(engine)"
  base="$(dockerfile_base)"
  [[ -n "$base" ]] || { log "no 'ARG PYTHON_IMAGE=' default in the Dockerfile"; exit 2; }
  started=$SECONDS
  ensure_base "$eng" "$base"
  local args=(build --network=host "$@" -t "$image" -f Dockerfile .)
  if [[ "$eng" == podman ]]; then
    mkdir -p "$tmp/home"
    pip_settings "$tmp/home"
    mapfile -t flags < <(podman_flags | grep -v -- '--network')
    # --layers: podman caches RUN steps like Docker does; the mount is not part of the cache key.
    args=(build --layers "${flags[@]}" --network=host -v "$tmp/home:/root:ro" "$@"
      -t "$image" -f Dockerfile .)
  fi
  log "$eng ${args[*]}"
  "$eng" "${args[@]}"
  if is_standin "$eng" "$image"; then
    bash hack/standin-base.sh --banner-only "$eng" "$base"
  fi
  log "built $image in $((SECONDS - started)) s"
}

deps() {
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    return
  fi
  local missing=() cmd pkg
  for cmd in podman:podman runc:runc catatonit:catatonit debootstrap:debootstrap newuidmap:uidmap \
    fuse-overlayfs:fuse-overlayfs slirp4netns:slirp4netns; do
    pkg="${cmd#*:}"
    command -v "${cmd%%:*}" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
case "${1:-}" in
  engine) engine ;;
  run-flags) run_flags ;;
  deps) deps ;;
  build) shift; build "${@:?usage: hack/image.sh build IMAGE [BUILD FLAGS...]}" ;;
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
