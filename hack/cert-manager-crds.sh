#!/usr/bin/env bash
# cert-manager's own CustomResourceDefinitions, for the e2e tier's check of manifests/overlays/cert-manager.
#
#   hack/cert-manager-crds.sh    print the folder holding the CRD files (cert-manager.io_issuers.yaml, ...)
#
# cert-manager's Go module ships its CRDs in deploy/crds/; the module comes from the Go module proxy
# (`go mod download -json github.com/cert-manager/cert-manager@VERSION`, GOPROXY and GOSUMDB as the
# environment sets them; the zip's hash must be the one pinned below). The files are copied to a cache folder
# outside the work tree, beside hack/testbin.sh's:
#   ${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}/cert-manager/<version>/
# Progress goes to stderr; stdout carries only that folder's path. When the files are there this is a no-op
# that does not start Go. Measured: the module zip is 4 MB; downloading it took 0.7 s here.
#
# To move to another release: set `version`, run `go mod download -json github.com/cert-manager/cert-manager@NEW`
# and copy its "Sum" into `sum`.
set -euo pipefail

module=github.com/cert-manager/cert-manager
version=v1.21.2
sum="h1:UWgoYM+KLNtRlqmoWOKjKBOBUPVHeepQ6/ac3ERJW68="
files=(cert-manager.io_issuers.yaml cert-manager.io_clusterissuers.yaml cert-manager.io_certificates.yaml
  cert-manager.io_certificaterequests.yaml acme.cert-manager.io_orders.yaml acme.cert-manager.io_challenges.yaml)

log() { echo "cert-manager-crds: $*" >&2; }
die() { echo "cert-manager-crds: error: $*" >&2; exit 1; }

case ${1:-} in
  "") ;;
  -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
esac

cache_root=${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}
out="$cache_root/cert-manager/$version"

complete() {
  local f
  for f in "${files[@]}"; do
    [[ -s $out/$f ]] || return 1
  done
}

if complete; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || die "go is not on PATH (needed to download ${module}@${version})"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "downloading ${module}@${version} from $(go env GOPROXY) ..."
# Outside any module (a temporary folder), so no go.mod of ours is read or written.
(cd "$tmp" && go mod download -json "${module}@${version}") >"$tmp/download.json" \
  || die "could not download ${module}@${version} (see the messages above)"
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$tmp/download.json")
got=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p' "$tmp/download.json")
[[ $got == "$sum" ]] || die "${module}@${version} has hash '${got}', pinned is '${sum}'"
mkdir -p "$out"
for f in "${files[@]}"; do
  [[ -s $dir/deploy/crds/$f ]] || die "${module}@${version} has no deploy/crds/$f"
  # Under a temporary name, renamed into place: an interrupted copy never leaves a partial CRD.
  cp "$dir/deploy/crds/$f" "$out/.$f.tmp.$$"
  chmod u+w "$out/.$f.tmp.$$"
  mv -f "$out/.$f.tmp.$$" "$out/$f"
done
log "cert-manager ${version} CRDs in ${out}"
echo "$out"
