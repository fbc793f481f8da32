#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager and kubectl from this Go module into a
# cache outside git, keyed on a hash of go.mod, go.sum, the main.go files and the Go version.
# Prints the bin directory on stdout. A second call (or a fresh clone on the same machine)
# finds the binaries and returns in well under a second.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
# shellcheck source=versions.env
source ./versions.env

die() { echo "control-plane: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.24 on PATH to build kube-apiserver and etcd from Go modules)"
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

key=$( { cat go.mod go.sum cmd/*/main.go; go version; } | sha256sum | cut -c1-16)
cache_root="${AGENTTASK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agenttask-operator}"
bin="${cache_root}/control-plane/${KUBERNETES_VERSION}-${key}/bin"
tools="etcd kube-apiserver kube-controller-manager kubectl"

complete=1
for t in $tools; do [ -x "$bin/$t" ] || complete=0; done
if [ "$complete" = 1 ]; then echo "$bin"; exit 0; fi

# Fail fast, in one line, when the module proxy cannot be reached.
if ! go mod download k8s.io/kubernetes >/dev/null 2>"${TMPDIR:-/tmp}/agenttask-gomod.err"; then
  die "cannot download Go modules (GOPROXY=$(go env GOPROXY)): $(grep -m1 -v '^go: downloading' "${TMPDIR:-/tmp}/agenttask-gomod.err" || true)"
fi

minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X ${pkg}.gitVersion=${KUBERNETES_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
ldflags="${ldflags} -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
ldflags="${ldflags} -X k8s.io/client-go/pkg/version.gitVersion=${KUBERNETES_VERSION}"
ldflags="${ldflags} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor}"

tmp="${bin}.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
echo "control-plane: building ${tools} (Kubernetes ${KUBERNETES_VERSION}, etcd ${ETCD_VERSION}) into ${bin}; a cold build takes many minutes" >&2
start=$(date +%s)
go build -trimpath -ldflags "$ldflags" -o "$tmp/" ./cmd/... >&2
echo "control-plane: built in $(( $(date +%s) - start ))s" >&2
rm -rf "$bin"; mv "$tmp" "$bin"
echo "$bin"
