#!/usr/bin/env bash
# `make image`: build the repository's Dockerfile with buildah (no Docker daemon needed) on the
# local base image of hack/image/base.sh, tag it agenttask-operator:<the chart's appVersion>,
# print its size and user on stderr and its name on stdout.
#
# Cached like hack/control-plane/build.sh: the image carries a label with a hash of its inputs
# (the Dockerfile, .dockerignore, the files it copies, the base image's ID); when the tagged
# image already has the current hash nothing is built and the script returns at once.
# Otherwise both stages are built afresh (no per-step layer cache: with the vfs driver every
# cached step costs a full copy of the root filesystem, more than rebuilding), and the image
# it replaces is removed.
#
# The image lives in buildah's storage with the vfs driver:
#   buildah --storage-driver vfs images
#   buildah --storage-driver vfs push agenttask-operator:0.1.0 docker-archive:op.tar:agenttask-operator:0.1.0
# the latter writes a file for `docker load -i op.tar` or `kind load image-archive op.tar`.
#   BASE_IMAGE=python:3.11-slim-bookworm make image   builds on that base instead (it must be
#                                                     pullable from here)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

ensure_tools
if [ -n "${BASE_IMAGE:-}" ]; then
  base="$BASE_IMAGE" pull=missing
else
  base=$(bash "$here/base.sh") pull=never # in buildah's storage, from no registry
fi
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/charts/agenttask-operator/Chart.yaml")
[ -n "$version" ] || die "no appVersion in charts/agenttask-operator/Chart.yaml"
image="localhost/agenttask-operator:${version}"
label=agenttask.dev/build-inputs

report() {
  local size user
  size=$(buildah images --format '{{.Size}}' "$image" | head -n1)
  user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
  echo "image: ${image} ($1): size ${size}, user ${user}" >&2
  echo "$image"
}

image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true; }

# What the Dockerfile reads: itself, .dockerignore and what it copies (pyproject.toml, README.md,
# operator/, without what .dockerignore leaves out), and the base image.
inputs=$(
  cd "$repo"
  {
    find Dockerfile .dockerignore pyproject.toml README.md operator -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' ! -name '.*.tmp' \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    echo "${base} $(image_id "$base")"
  } | sha256sum | cut -c1-16
)
previous=$(image_id "$image")
if [ -n "$previous" ] && [ "$(buildah inspect --type image \
  --format "{{index .OCIv1.Config.Labels \"${label}\"}}" "$image")" = "$inputs" ]; then
  report "cached: inputs ${inputs} unchanged"
  exit 0
fi

# Where this machine's own pip is told to trust a CA bundle (PIP_CERT, or pip's global.cert: a
# TLS-inspecting proxy on the way to PyPI), the builder stage runs on the base plus a pip.conf
# naming that bundle (--build-arg BUILDER_IMAGE); the final stage, and so the image, is built
# on the base alone. Elsewhere the builder stage runs on the base, as with `docker build`.
builder_arg=()
cert="${PIP_CERT:-$(python3 -m pip config list 2>/dev/null | sed -n "s/^global\.cert='\(.*\)'\$/\1/p")}"
if [ -n "$cert" ] && [ -f "$cert" ]; then
  key=$( { echo "$base $(image_id "$base")"; cat "$cert"; } | sha256sum | cut -c1-16)
  builder="localhost/agenttask-operator-builder-base:${key}"
  if [ -z "$(image_id "$builder")" ]; then
    tmp=$(mktemp -d)
    ctr=$(buildah from --pull="$pull" --name "agenttask-operator-builder-base-$$" "$base") \
      || die "cannot get the base image ${base} (see above)"
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
    printf '[global]\ncert = /etc/pip-build-ca.pem\n' >"$tmp/pip.conf"
    buildah copy --quiet --chmod 0644 "$ctr" "$cert" /etc/pip-build-ca.pem >/dev/null
    buildah copy --quiet --chmod 0644 "$ctr" "$tmp/pip.conf" /etc/pip.conf >/dev/null
    buildah commit --quiet --rm "$ctr" "$builder" >/dev/null
    trap - EXIT
    rm -rf "$tmp"
    remove_others localhost/agenttask-operator-builder-base "$builder"
  fi
  builder_arg=(--build-arg "BUILDER_IMAGE=${builder}")
  echo "image: the builder stage trusts ${cert} for PyPI, as pip here does (${builder})" >&2
  pull=never
fi

start=$(date +%s)
echo "image: building ${image} on ${base} (buildah, ${BUILDAH_STORAGE_DRIVER}, ${BUILDAH_ISOLATION})" >&2
buildah bud --isolation "$BUILDAH_ISOLATION" --layers=false --pull="$pull" \
  --build-arg "BASE_IMAGE=${base}" "${builder_arg[@]}" --label "${label}=${inputs}" \
  --file "$repo/Dockerfile" --tag "$image" "$repo" >&2 \
  || die "buildah bud failed (see above)"
if [ -n "$previous" ] && [ "$previous" != "$(image_id "$image")" ]; then
  buildah rmi "$previous" >/dev/null 2>&1 || true # the image this one replaces, now untagged
fi
report "built in $(( $(date +%s) - start ))s"
