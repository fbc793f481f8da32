#!/usr/bin/env bash
# A local stand-in for python:3.11-slim-bookworm, made from Debian's own packages, for machines
# that cannot pull from Docker Hub: debootstrap bookworm (minbase), bookworm's security and
# point-release updates, Python 3.11 with venv support, slimmed like Debian's -slim images.
# Prints the image's name on stdout; `make image` builds the Dockerfile on it.
#
# Cached outside git, like hack/control-plane/build.sh: the root filesystem as a tarball under
# ${XDG_CACHE_HOME:-~/.cache}/agenttask-operator/image-base/<key>/, keyed on a hash of this
# script and debootstrap's version, and imported into buildah's storage as
# localhost/agenttask-operator-base:<key>. A second call finds the image and returns at once;
# a fresh clone on the same machine too. The packages are whatever bookworm serves on the day
# of the cold build: delete the cache directory to pick up newer security updates.
# Needs root (debootstrap, chroot), buildah and debootstrap (installed if missing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
# python3.11-venv brings ensurepip's pip and setuptools wheels (python -m venv with pip);
# python-is-python3: `python`, as in the official image.
PACKAGES="python3.11 python3.11-venv python-is-python3"

ensure_tools
arch=$(dpkg --print-architecture)
key=$( { cat "$here/base.sh"; debootstrap --version; echo "$arch"; } | sha256sum | cut -c1-16)
image="localhost/agenttask-operator-base:${SUITE}-py311-${key}"
dir="${cache_root}/image-base/${SUITE}-py311-${key}"
tarball="$dir/rootfs.tar"
log="${dir}.log" # what debootstrap and apt-get said, kept next to the cache

if buildah inspect --type image "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi

[ "$(id -u)" = 0 ] || die "building the base image needs root (debootstrap, chroot)"

# Run a command with its output in $log; on failure show the end of it and stop.
logged() {
  "$@" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; die "$1 failed; its whole output: ${log}"; }
}

# Run a shell snippet inside the root filesystem $1, with /proc, /dev and the host's DNS, in a
# mount namespace of its own (the mounts vanish with it, also when something fails).
in_root() {
  unshare --mount --propagation private -- bash -euo pipefail -c '
    root=$1
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    rm -f "$root/etc/resolv.conf"; touch "$root/etc/resolv.conf"
    mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
    exec chroot "$root" /usr/bin/env -i DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -euxc "$2"
  ' in_root "$1" "$2"
}

make_rootfs() {
  local root="$1"
  echo "image: debootstrap ${SUITE} (minbase) from ${MIRROR}; output in ${log}" >&2
  logged debootstrap --variant=minbase --arch="$arch" --components=main \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    "$SUITE" "$root" "$MIRROR"

  # What Debian's -slim images leave out (dpkg keeps it out of later installs too), no service
  # starts during installs, no apt caches kept in layers, no translations.
  cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
CFG
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  cat >"$root/etc/apt/sources.list" <<LIST
deb ${MIRROR} ${SUITE} main
deb ${MIRROR} ${SUITE}-updates main
deb ${SECURITY_MIRROR} ${SUITE}-security main
LIST

  echo "image: ${SUITE}'s updates and ${PACKAGES}" >&2
  logged in_root "$root" "
    apt-get update -q
    apt-get upgrade -y -q
    apt-get install -y -q --no-install-recommends ${PACKAGES}
    apt-get clean
    python3.11 --version
  "

  # What dpkg installed before the excludes were in place; apt's lists, logs, the host's
  # resolver config (a runtime supplies its own).
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,info,groff,linda}/* "$root/usr/share/lintian/overrides"
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
    -exec rm -rf {} +
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*
  rm -f "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
  rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
}

if [ ! -s "$tarball" ]; then
  start=$(date +%s)
  mkdir -p "$(dirname "$dir")"
  : >"$log"
  tmp="${dir}.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  make_rootfs "$tmp/rootfs"
  tar --numeric-owner --xattrs --xattrs-include='security.capability' \
    -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
  rm -rf "$tmp/rootfs"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  trap - EXIT
  echo "image: base root filesystem made in $(( $(date +%s) - start ))s" \
    "($(du -m "$tarball" | cut -f1) MB, ${tarball})" >&2
fi

# Import: one layer, the configuration of the official image (PATH, LANG, CMD).
ctr=$(buildah from --name "agenttask-operator-base-import-$$" scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah add --quiet "$ctr" "$tarball" / >/dev/null
buildah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --cmd '["python3"]' \
  --label "org.opencontainers.image.description=Debian ${SUITE} (minbase) with Python 3.11, made by hack/image/base.sh" \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$image" >/dev/null
trap - EXIT
echo "image: imported ${image}" >&2
# Base images of earlier versions of this script: nothing uses them any more.
remove_others localhost/agenttask-operator-base "$image"
echo "$image"
