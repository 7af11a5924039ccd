#!/usr/bin/env bash
# Build KubeRay's operator at the versions pinned in hack/kuberay/, for the KubeRay tier and `make demo`.
#
#   hack/kuberay.sh [VERSION ...]            build (default: every pinned version), print each binary's folder
#   hack/kuberay.sh --source [VERSION ...]   print each version's module source folder (CRDs, RBAC, samples)
#   hack/kuberay.sh --versions               print the pinned versions, oldest first
#
# KubeRay ships no operator binary we can reach, so it is built from the Go module proxy
# (github.com/ray-project/kuberay/ray-operator) through the wrapper module hack/kuberay/<version>/ (go.mod +
# go.sum, a `tool` directive; regenerate or add one with hack/kuberay/update.sh). The binary goes to a cache
# folder outside the work tree, beside hack/testbin.sh's:
#   ${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}/kuberay/<version>/ray-operator
# Progress goes to stderr; stdout carries only the folder paths, one per version, in the order asked, e.g.
#   OPERATOR=$(hack/kuberay.sh v1.6.2)/ray-operator
# When the binary is present the build is a no-op that does not start Go. The binary is linked under a
# temporary name and renamed into place, so an interrupted build never leaves a truncated binary.
#
# The source folder is the module as the proxy serves it (`go mod download -json` -> .Dir, checked against
# the wrapper's go.sum); tests read config/crd/bases/, config/rbac/role.yaml and config/samples/ from it.
# Nothing of KubeRay is copied into this repository.
#
# Measured with Go 1.26, 2 CPUs (modules already downloaded, other builds sharing the CPUs): a cold build takes
# 416 s for v1.6.2 and 162 s for v1.2.2; the largest process peaks at ~0.8 GB RSS; the binaries are 45 and 42
# MB. With a warm Go build cache, relinking one takes ~5 s.
#
# Environment: RAY_FT_WEBHOOK_CACHE (cache root), RAY_FT_WEBHOOK_BUILD_JOBS (go build -p; default the
# number of CPUs, at most 4).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wrappers="$here/kuberay"
module=github.com/ray-project/kuberay/ray-operator

log() { echo "kuberay: $*" >&2; }
die() { echo "kuberay: error: $*" >&2; exit 1; }

pinned() {
  local d
  for d in "$wrappers"/v*/; do
    [[ -f $d/go.mod ]] && basename "$d"
  done | sort -V
}

mode=build
versions=()
for arg in "$@"; do
  case $arg in
    --source) mode=source ;;
    --versions) pinned; exit 0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    v*) versions+=("$arg") ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done
if [[ ${#versions[@]} -eq 0 ]]; then
  mapfile -t versions < <(pinned)
  [[ ${#versions[@]} -gt 0 ]] || die "no wrapper modules in $wrappers (add one with hack/kuberay/update.sh)"
fi

# Each version must be pinned by its own wrapper, and the wrapper must require exactly that version (plain
# text parsing, so the no-op path never starts Go).
for version in "${versions[@]}"; do
  gomod="$wrappers/$version/go.mod"
  [[ -f $gomod ]] || die "$version is not pinned (no $gomod; pinned: $(pinned | xargs)); see hack/kuberay/update.sh"
  required=$(awk -v m="$module" '($1 == m || ($1 == "require" && $2 == m)) { print ($1 == m ? $2 : $3); exit }' "$gomod")
  [[ $required == "$version" ]] || die "$gomod requires $module ${required:-(nothing)}, not $version"
done

# shellcheck source=SCRIPTDIR/lib/gobuild.sh
source "$here/lib/gobuild.sh"

if [[ $mode == source ]]; then
  command -v go >/dev/null || die "go is not on PATH (needed to download ${module})"
  for version in "${versions[@]}"; do
    # Inside the wrapper, so the zip is verified against its go.sum; a no-op when already in the module cache.
    dir=$(cd "$wrappers/$version" && go mod download -json "${module}@${version}" \
      | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -n $dir && -f $dir/config/crd/bases/ray.io_rayclusters.yaml ]] \
      || die "could not download ${module}@${version} (see the messages above)"
    echo "$dir"
  done
  exit 0
fi

cache_root=${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}
out_dir() { echo "$cache_root/kuberay/$1"; }

missing=()
for version in "${versions[@]}"; do
  [[ -x $(out_dir "$version")/ray-operator ]] || missing+=("$version")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  for version in "${versions[@]}"; do out_dir "$version"; done
  exit 0
fi

command -v go >/dev/null || die "go is not on PATH (a Go toolchain able to build ${module} is needed)"

log "Go $(go env GOVERSION), go build -p ${GOBUILD_JOBS}"

for version in "${missing[@]}"; do
  out=$(out_dir "$version")
  mkdir -p "$out"
  # One build at a time per version: a second caller waits, then finds the binary there.
  exec 9>"$out/.lock"
  if command -v flock >/dev/null; then
    flock 9
    if [[ -x $out/ray-operator ]]; then
      exec 9>&-
      continue
    fi
  fi
  log "building ray-operator ${version} into ${out} (a cold build takes a few minutes) ..."
  start=$SECONDS
  gobuild "$out/ray-operator" "$wrappers/$version" "$module" "-s -w -X main._commitId_=${version}" \
    || die "building ray-operator ${version} failed (Go $(go env GOVERSION); see the messages above)"
  exec 9>&-
  log "built ray-operator ${version} in $((SECONDS - start)) s"
done

for version in "${versions[@]}"; do
  [[ -x $(out_dir "$version")/ray-operator ]] || die "not built: ray-operator ${version}"
  out_dir "$version"
done
