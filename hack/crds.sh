#!/usr/bin/env bash
# CustomResourceDefinitions of other projects, taken from their Go modules, for the tests that check our
# objects against the real schemas:
#
#   hack/crds.sh cert-manager          cert-manager's (the e2e check of manifests/overlays/cert-manager)
#   hack/crds.sh prometheus-operator   prometheus-operator's ServiceMonitor and PrometheusRule (the chart's)
#
# prints the folder holding the CRD files. Each module comes from the Go module proxy (`go mod download -json
# MODULE@VERSION`, GOPROXY and GOSUMDB as the environment sets them; the zip's hash must be the one pinned
# below) and ships its CRDs in a folder of its own. The files are copied to a cache folder outside the work
# tree, beside hack/testbin.sh's:
#   ${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}/<name>/<version>/
# Progress goes to stderr; stdout carries only that folder's path. When the files are there this is a no-op
# that does not start Go. Measured: cert-manager's zip is 4 MB and prometheus-operator's module 27 MB
# unpacked; each downloaded in under a second here.
#
# To move to another release: set its version, run `go mod download -json MODULE@NEW` and copy its "Sum".
set -euo pipefail

log() { echo "crds: $*" >&2; }
die() { echo "crds: error: $*" >&2; exit 1; }

case ${1:-} in
  cert-manager)
    module=github.com/cert-manager/cert-manager version=v1.21.2 sum="h1:UWgoYM+KLNtRlqmoWOKjKBOBUPVHeepQ6/ac3ERJW68="
    folder=deploy/crds
    files=(cert-manager.io_issuers.yaml cert-manager.io_clusterissuers.yaml cert-manager.io_certificates.yaml
      cert-manager.io_certificaterequests.yaml acme.cert-manager.io_orders.yaml acme.cert-manager.io_challenges.yaml) ;;
  prometheus-operator)
    module=github.com/prometheus-operator/prometheus-operator version=v0.85.0
    sum="h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s=" folder=example/prometheus-operator-crd
    files=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml) ;;
  -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "expected cert-manager or prometheus-operator, got '${1:-}' (see --help)" ;;
esac

out="${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}/$1/$version"

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
  [[ -s $dir/$folder/$f ]] || die "${module}@${version} has no $folder/$f"
  # Under a temporary name, renamed into place: an interrupted copy never leaves a partial CRD.
  cp "$dir/$folder/$f" "$out/.$f.tmp.$$"
  chmod u+w "$out/.$f.tmp.$$"
  mv -f "$out/.$f.tmp.$$" "$out/$f"
done
log "$1 ${version} CRDs in ${out}"
echo "$out"
