#!/usr/bin/env bash
# Build a stand-in for the Dockerfile's official base image from Debian's own packages, for
# machines that reach Debian's package mirror but no container registry.
#
#   hack/standin-base.sh [--banner-only] ENGINE IMAGE_REF
#
# ENGINE is docker or podman; IMAGE_REF is the base the Dockerfile's FROM names (for example
# python:3.11.14-slim-bookworm). The stand-in is Debian bookworm (minbase) with Debian's python3.11,
# its venv module (which brings pip; debootstrap needs its virtual distutils named) and the CA
# certificates, `python` on PATH as in the official image, tagged
# with IMAGE_REF so the Dockerfile builds on it unchanged. It is NOT the official image: Debian's
# python3.11 is the bookworm release (3.11.2 plus Debian's security patches), not the upstream
# patch release the tag names. The rootfs tarball is cached under ~/.cache/routing-registry/,
# keyed by the tag, the package list and this script; the imported image carries that key in
# its label io.engines.routing-registry.standin-base, so an unchanged stand-in is not re-imported.
set -euo pipefail

banner_only=0
if [[ "${1:-}" == --banner-only ]]; then
  banner_only=1
  shift
fi
engine="${1:?usage: standin-base.sh ENGINE IMAGE_REF}"
ref="${2:?usage: standin-base.sh ENGINE IMAGE_REF}"
suite=bookworm
packages=python3.11,python3.11-venv,python3-distutils,ca-certificates

log() { echo "[standin-base] $*" >&2; }

banner() {
  local line='!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
  {
    echo "$line"
    echo "!! STAND-IN BASE IMAGE: '$ref' could not be pulled."
    echo "!! It is replaced by Debian $suite + Debian's python3.11 built here from Debian's packages."
    echo "!! This image is for local testing only: do not push or ship it."
    echo "$line"
  } >&2
}

# The mirror debootstrap uses is the one this machine's apt already uses (read at run time from
# its sources, one-line or deb822 format), so nothing here names a host.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -r "$f" ]] || continue
    awk -v suite="$suite" '
      /^[[:space:]]*#/ { next }
      $1 == "deb" && $0 ~ (" " suite "([[:space:]]|$)") {
        for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit }
      }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
      /^[[:space:]]*$/ { if (found && uri != "" && uri !~ /-security/) { print uri; exit }
                         uri = ""; found = 0 }
      END { if (found && uri != "" && uri !~ /-security/) print uri }
    ' "$f" | head -n1
  done | head -n1
}

if ((banner_only)); then
  banner
  exit 0
fi

cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/routing-registry/standin-base"
key="$(printf '%s\n%s\n%s\n' "$ref" "$suite" "$packages" | cat - "$0" | sha256sum | cut -c1-16)"
safe_ref="$(printf '%s' "$ref" | tr -c 'A-Za-z0-9._-' '_')"
tarball="$cache_dir/$safe_ref-$key.tar"

banner
label=io.engines.routing-registry.standin-base
imported="$("$engine" image inspect --format "{{ index .Config.Labels \"$label\" }}" "$ref" 2>/dev/null || true)"
if [[ "$imported" == "$key" ]]; then
  log "reusing the stand-in $ref already imported ($key)"
  exit 0
fi
if [[ ! -s "$tarball" ]]; then
  command -v debootstrap >/dev/null || { log "debootstrap is required (apt-get install debootstrap)"; exit 2; }
  [[ "$(id -u)" == 0 ]] || { log "debootstrap needs root to build the stand-in rootfs"; exit 2; }
  mirror="$(debian_mirror)"
  [[ -n "$mirror" ]] || { log "no Debian '$suite' source found in /etc/apt/sources.list*"; exit 2; }
  mkdir -p "$cache_dir"
  work="$(mktemp -d "$cache_dir/rootfs.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  log "debootstrap $suite (minbase + $packages) from the machine's apt mirror"
  debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  # What the official image provides: `python`/`python3` on PATH under /usr/local/bin.
  ln -sf /usr/bin/python3.11 "$work/rootfs/usr/local/bin/python"
  ln -sf /usr/bin/python3.11 "$work/rootfs/usr/local/bin/python3"
  rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/archives/"*.deb \
    "$work/rootfs/var/log/"*.log
  tar --numeric-owner -C "$work/rootfs" -cf "$tarball.part" .
  find "$cache_dir" -maxdepth 1 -name "$safe_ref-*.tar" ! -name "${tarball##*/}" -delete
  mv "$tarball.part" "$tarball"
  log "cached $tarball"
else
  log "reusing $tarball"
fi

err="$(mktemp)"
"$engine" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "LABEL $label=$key" \
  --change 'CMD ["python3"]' \
  "$tarball" "$ref" >/dev/null 2>"$err" || { cat "$err" >&2; rm -f "$err"; exit 1; }
rm -f "$err"
log "tagged the stand-in as $ref"
banner
