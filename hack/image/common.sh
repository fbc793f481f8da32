# shellcheck shell=bash
# Shared by hack/image/base.sh and hack/image/build.sh: the cache directory, the tools, and
# buildah's settings. Sourced, not run.

die() { echo "image: $*" >&2; exit 1; }

# shellcheck disable=SC2034 # used by the scripts that source this file
cache_root="${AGENTTASK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agenttask-operator}"

# buildah without a daemon, on a machine without Docker: the vfs storage driver (no overlay
# mounts: each layer is a full copy, slower and bigger on disk, but it works on any filesystem,
# also inside a container) and RUN steps in a chroot rather than an OCI runtime (which fails on
# this machine's cgroups). Every buildah call of these scripts goes through this function;
# `buildah --storage-driver vfs images` lists what they made.
export BUILDAH_STORAGE_DRIVER="${BUILDAH_STORAGE_DRIVER:-vfs}"
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
buildah() { command buildah --storage-driver "$BUILDAH_STORAGE_DRIVER" "$@"; }

# Debian's packages, by upstream version: a Debian stable release keeps it and only adds
# security fixes (+debNNuN), which the globs accept.
BUILDAH_APT="buildah=1.28.*"
DEBOOTSTRAP_APT="debootstrap=1.0.128*"

# Install buildah and debootstrap from Debian's packages if either is missing (CI starts from a
# machine without them). Non-interactive and idempotent; needs root and apt-get.
ensure_tools() {
  local missing=()
  type -P buildah >/dev/null || missing+=("$BUILDAH_APT")
  type -P debootstrap >/dev/null || missing+=("$DEBOOTSTRAP_APT")
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "need buildah and debootstrap (Debian: apt-get install buildah debootstrap; as root)"
  fi
  echo "image: installing ${missing[*]} from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 || die "apt-get update failed"
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
}

# Remove the images of repository $1 other than $2 (ours, made by an earlier version of these
# scripts or for an earlier base: nothing uses them any more).
remove_others() {
  local name
  { buildah images --format '{{.Repository}}:{{.Tag}}' "$1" 2>/dev/null || true; } \
    | { grep -v -x -F "$2" || true; } \
    | while read -r name; do buildah rmi "$name" >/dev/null 2>&1 || true; done
}
