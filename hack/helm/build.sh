#!/usr/bin/env bash
# Build helm from its Go module into a cache outside git and print the binary's path.
# Keyed on the helm version and the Go version, like hack/control-plane/build.sh: a second call
# (or a fresh clone on the same machine) finds the binary and returns at once.
#   HELM_VERSION  helm release to build (default below; v3.19.x is built against k8s.io v0.34,
#                 the same minor as our control plane)
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
# The Kubernetes minor helm assumes when it has no cluster (helm template, helm lint): ours.
K8S_MAJOR=1 K8S_MINOR=34

die() { echo "helm: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.24 on PATH to build helm ${HELM_VERSION} from its Go module)"
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

key=$( { echo "${HELM_VERSION} ${K8S_MAJOR}.${K8S_MINOR}"; go version; } | sha256sum | cut -c1-16)
cache_root="${AGENTTASK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agenttask-operator}"
dir="${cache_root}/helm/${HELM_VERSION}-${key}"
if [ -x "$dir/helm" ]; then echo "$dir/helm"; exit 0; fi

# Fail fast, in one line, when the module proxy cannot be reached.
err="${TMPDIR:-/tmp}/agenttask-helm-gomod.$$.err"
if ! go mod download "helm.sh/helm/v3@${HELM_VERSION}" >/dev/null 2>"$err"; then
  msg=$(grep -m1 -v '^go: downloading' "$err" || true); rm -f "$err"
  die "cannot download helm.sh/helm/v3@${HELM_VERSION} (GOPROXY=$(go env GOPROXY)): ${msg}"
fi
rm -f "$err"

x="-X helm.sh/helm/v3"
ldflags="-s -w ${x}/internal/version.version=${HELM_VERSION} ${x}/internal/version.gitTreeState=clean"
for p in pkg/chartutil pkg/lint/rules; do
  ldflags="${ldflags} ${x}/${p}.k8sVersionMajor=${K8S_MAJOR} ${x}/${p}.k8sVersionMinor=${K8S_MINOR}"
done

tmp="${dir}.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "helm: building helm ${HELM_VERSION} from its Go module into ${dir}; a cold build takes a few minutes" >&2
start=$(date +%s)
GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
echo "helm: built in $(( $(date +%s) - start ))s" >&2
rm -rf "$dir"; mv "$tmp" "$dir"
echo "$dir/helm"
