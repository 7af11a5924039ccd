#!/usr/bin/env bash
# prometheus-operator's own CustomResourceDefinitions of ServiceMonitor and PrometheusRule, for the e2e test
# that installs the chart with its monitoring objects on (tests/e2e/test_helm_e2e.py).
#
#   hack/prometheus-operator-crds.sh    print the folder holding the CRD files
#
# prometheus-operator's Go module ships its CRDs in example/prometheus-operator-crd/; the module comes from the
# Go module proxy (`go mod download -json github.com/prometheus-operator/prometheus-operator@VERSION`, GOPROXY
# and GOSUMDB as the environment sets them; the zip's hash must be the one pinned below). The files are copied
# to a cache folder beside hack/testbin.sh's:
#   ${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}/prometheus-operator/<version>/
# Progress goes to stderr; stdout carries only that folder's path. When the files are there this is a no-op
# that does not start Go. Measured: the module is 27 MB unpacked; downloading it took under a second here.
#
# To move to another release: set `version`, run `go mod download -json
# github.com/prometheus-operator/prometheus-operator@NEW` and copy its "Sum" into `sum`.
set -euo pipefail

module=github.com/prometheus-operator/prometheus-operator
version=v0.85.0
sum="h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="
files=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)

log() { echo "prometheus-operator-crds: $*" >&2; }
die() { echo "prometheus-operator-crds: error: $*" >&2; exit 1; }

case ${1:-} in
  "") ;;
  -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
esac

cache_root=${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}
out="$cache_root/prometheus-operator/$version"

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
  [[ -s $dir/example/prometheus-operator-crd/$f ]] || die "${module}@${version} has no example/prometheus-operator-crd/$f"
  # Under a temporary name, renamed into place: an interrupted copy never leaves a partial CRD.
  cp "$dir/example/prometheus-operator-crd/$f" "$out/.$f.tmp.$$"
  chmod u+w "$out/.$f.tmp.$$"
  mv -f "$out/.$f.tmp.$$" "$out/$f"
done
log "prometheus-operator ${version} CRDs in ${out}"
echo "$out"
