#!/usr/bin/env bash
# Build krew (the kubectl plugin manager) from its Go module into a cache outside git and print
# the binary's path, like hack/helm/build.sh: keyed on the krew and Go versions, so a second
# call (or a fresh clone on the same machine) returns at once. tests/test_krew.py installs the
# plugin's manifest with it.
#   KREW_VERSION  krew release to build (default below)
set -euo pipefail
KREW_VERSION="${KREW_VERSION:-v0.4.3}"

die() { echo "krew: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.24 on PATH to build krew ${KREW_VERSION} from its Go module)"
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

key=$( { echo "${KREW_VERSION}"; go version; } | sha256sum | cut -c1-16)
cache_root="${AGENTTASK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agenttask-operator}"
dir="${cache_root}/krew/${KREW_VERSION}-${key}"
if [ -x "$dir/krew" ]; then echo "$dir/krew"; exit 0; fi

# Fail fast, in one line, when the module proxy cannot be reached.
err="${TMPDIR:-/tmp}/agenttask-krew-gomod.$$.err"
if ! go mod download "sigs.k8s.io/krew@${KREW_VERSION}" >/dev/null 2>"$err"; then
  msg=$(grep -m1 -v '^go: downloading' "$err" || true); rm -f "$err"
  die "cannot download sigs.k8s.io/krew@${KREW_VERSION} (GOPROXY=$(go env GOPROXY)): ${msg}"
fi
rm -f "$err"

tmp="${dir}.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "krew: building krew ${KREW_VERSION} from its Go module into ${dir}; a cold build takes a minute or two" >&2
start=$(date +%s)
GOBIN="$tmp" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/krew/internal/version.gitTag=${KREW_VERSION}" "sigs.k8s.io/krew/cmd/krew@${KREW_VERSION}" >&2
echo "krew: built in $(( $(date +%s) - start ))s" >&2
rm -rf "$dir"; mv "$tmp" "$dir"
echo "$dir/krew"
