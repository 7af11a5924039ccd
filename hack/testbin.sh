#!/usr/bin/env bash
# Build the local control plane (kube-apiserver, etcd, kube-controller-manager) and kubectl for the tests.
#
#   hack/testbin.sh [kube-apiserver|etcd|kube-controller-manager|kubectl ...]   (default: all four)
#
# No registry we can reach ships these binaries, so they are built from the Go module proxy with the
# wrapper modules in hack/testbin/ (which pin the versions; regenerate them with hack/testbin/update.sh).
# Output goes to a cache folder outside the work tree, keyed by version, so a fresh clone or another
# branch reuses it:
#   ${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}/testbin/k8s-<version>-etcd-<version>/
# Progress goes to stderr; stdout carries only that folder's path, e.g.
#   TESTBIN=$(hack/testbin.sh)
# When every binary is present this is a no-op that does not start Go (~10 ms). Each binary is linked
# under a temporary name and renamed into place, so an interrupted build never leaves a truncated binary.
#
# Measured with v1.35.4 / etcd v3.6.5, Go 1.26, 2 CPUs: a cold build takes ~6 min (kube-apiserver 267 s,
# etcd 31 s, then kube-controller-manager 72 s as it reuses most packages); the largest process (the
# linker) peaks at ~1.9 GB RSS; it adds ~0.95 GB to the Go module cache, ~2.8 GB to the Go build cache
# and 214 MB of binaries. With a warm build cache, relinking one binary takes ~6 s.
#
# Environment: RAY_FT_WEBHOOK_CACHE (cache root), RAY_FT_WEBHOOK_BUILD_JOBS (go build -p; default the
# number of CPUs, at most 4: one k8s compile step can take ~1 GB, and the binaries are built one after
# another so that two links never overlap).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wrappers="$here/testbin"
all_binaries=(kube-apiserver etcd kube-controller-manager kubectl)

log() { echo "testbin: $*" >&2; }
die() { echo "testbin: error: $*" >&2; exit 1; }

# The version a wrapper go.mod requires (plain text parsing, so the no-op path never starts Go).
required_version() {
  local gomod=$1 module=$2 version
  version=$(awk -v m="$module" '($1 == m || ($1 == "require" && $2 == m)) { print ($1 == m ? $2 : $3); exit }' "$gomod")
  [[ -n $version ]] || die "$gomod does not require $module"
  echo "$version"
}

k8s_version=$(required_version "$wrappers/kube/go.mod" k8s.io/kubernetes)
etcd_version=$(required_version "$wrappers/etcd/go.mod" go.etcd.io/etcd/server/v3)
[[ $k8s_version =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || die "unexpected Kubernetes version $k8s_version"
k8s_major=${BASH_REMATCH[1]}
k8s_minor=${BASH_REMATCH[2]}

cache_root=${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}
out="$cache_root/testbin/k8s-${k8s_version}-etcd-${etcd_version}"

# Which binaries to make sure of.
if [[ $# -eq 0 ]]; then
  wanted=("${all_binaries[@]}")
else
  wanted=()
  for name in "$@"; do
    case $name in
      kube-apiserver | etcd | kube-controller-manager | kubectl) wanted+=("$name") ;;
      -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
      *) die "unknown binary '$name' (choose from: ${all_binaries[*]})" ;;
    esac
  done
fi

missing() {
  local name
  for name in "${wanted[@]}"; do
    [[ -x $out/$name ]] || echo "$name"
  done
}

if [[ -z $(missing) ]]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || die "go is not on PATH (a Go toolchain able to build Kubernetes ${k8s_version} is needed)"
mkdir -p "$out"

# One build at a time per cache folder: a second caller waits, then finds the binaries there.
exec 9>"$out/.lock"
if command -v flock >/dev/null; then
  flock 9
  if [[ -z $(missing) ]]; then
    echo "$out"
    exit 0
  fi
fi

# shellcheck source=SCRIPTDIR/lib/gobuild.sh
source "$here/lib/gobuild.sh"

kube_ldflags="-s -w"
kube_ldflags+=" -X k8s.io/component-base/version.gitVersion=${k8s_version}"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=${k8s_major}"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=${k8s_minor}"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"

log "Go $(go env GOVERSION), go build -p ${GOBUILD_JOBS}, output ${out}"
for name in $(missing); do
  case $name in
    kube-apiserver | kube-controller-manager | kubectl)
      module_dir="$wrappers/kube" package="k8s.io/kubernetes/cmd/$name" ldflags=$kube_ldflags
      version=$k8s_version ;;
    etcd)
      module_dir="$wrappers/etcd" package="." ldflags="-s -w" version=$etcd_version ;;
  esac
  log "building $name $version (a cold build takes several minutes) ..."
  start=$SECONDS
  gobuild "$out/$name" "$module_dir" "$package" "$ldflags" \
    || die "building $name failed (Go $(go env GOVERSION); see the messages above)"
  log "built $name in $((SECONDS - start)) s"
done

still_missing=$(missing)
[[ -z $still_missing ]] || die "not built: $still_missing"
echo "$out"
