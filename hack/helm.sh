#!/usr/bin/env bash
# Build helm (v3) for the tests of the chart in manifests/chart/.
#
#   hack/helm.sh        print the folder holding the helm binary
#
# No registry we can reach ships helm, so it is built from the Go module proxy with the wrapper module in
# hack/helm/ (its go.mod pins the helm.sh/helm/v3 release, its go.sum every dependency; to move to another
# release change the version there and run `GOFLAGS=-mod=mod go mod tidy` in that folder). The ldflags are
# those of helm's own Makefile, so `helm version` and the Kubernetes version `helm lint` and `helm template`
# assume are the release's. Output goes beside hack/testbin.sh's binaries, keyed by version:
#   ${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}/testbin/helm-<version>/helm
# Progress goes to stderr; stdout carries only that folder's path, e.g.  HELM=$(hack/helm.sh)/helm
# When the binary is present this is a no-op that does not start Go.
#
# Measured with helm v3.22.0, Go 1.26, 2 busy CPUs: a cold build took 5.5 min (2.5 min of CPU; module downloads
# included);
# with a warm build cache, relinking takes a few seconds. The binary is ~60 MB.
#
# Environment: RAY_FT_WEBHOOK_CACHE (cache root), RAY_FT_WEBHOOK_BUILD_JOBS (go build -p).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wrapper="$here/helm"

log() { echo "helm.sh: $*" >&2; }
die() { echo "helm.sh: error: $*" >&2; exit 1; }

case ${1:-} in
  "") ;;
  -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
esac

# The versions the wrapper's go.mod requires (plain text parsing, so the no-op path never starts Go).
required_version() {
  local module=$1 version
  version=$(awk -v m="$module" '($1 == m || ($1 == "require" && $2 == m)) { print ($1 == m ? $2 : $3); exit }' \
    "$wrapper/go.mod")
  [[ -n $version ]] || die "$wrapper/go.mod does not require $module"
  echo "$version"
}
helm_version=$(required_version helm.sh/helm/v3)
client_go=$(required_version k8s.io/client-go)
[[ $client_go =~ ^v0\.([0-9]+)\.[0-9]+$ ]] || die "unexpected k8s.io/client-go version $client_go"
k8s_minor=${BASH_REMATCH[1]}

cache_root=${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}
out="$cache_root/testbin/helm-${helm_version}"

if [[ -x $out/helm ]]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || die "go is not on PATH (a Go toolchain able to build helm ${helm_version} is needed)"
mkdir -p "$out"
# One build at a time per cache folder: a second caller waits, then finds the binary there.
exec 9>"$out/.lock"
if command -v flock >/dev/null; then
  flock 9
  if [[ -x $out/helm ]]; then
    echo "$out"
    exit 0
  fi
fi

# shellcheck source=SCRIPTDIR/lib/gobuild.sh
source "$here/lib/gobuild.sh"

ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=${helm_version}"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${k8s_minor}"
ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s_minor}"

log "building helm ${helm_version} with Go $(go env GOVERSION), go build -p ${GOBUILD_JOBS} (a cold build takes minutes) ..."
start=$SECONDS
gobuild "$out/helm" "$wrapper" helm.sh/helm/v3/cmd/helm "$ldflags" \
  || die "building helm failed (Go $(go env GOVERSION); see the messages above)"
log "built helm ${helm_version} in $((SECONDS - start)) s"
echo "$out"
