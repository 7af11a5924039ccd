#!/usr/bin/env bash
# promtool, Prometheus's rule checker and rule unit-test runner, for the tests of the chart's PrometheusRule.
#
#   hack/promtool.sh        print the folder holding the promtool binary
#
# Debian's `prometheus` package ships promtool as usr/bin/promtool (a static Go binary). It is downloaded
# with `apt-get download` (no root needed once the package lists are there) and only that file is taken
# out of the package with `dpkg-deb -x`: nothing is installed and no Prometheus server runs. The fallback,
# building github.com/prometheus/prometheus/cmd/promtool from the Go module proxy, costs far more.
# Output goes to a cache folder beside hack/testbin.sh's, keyed by the package version:
#   ${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}/testbin/promtool-<version>/promtool
# The pinned version is tried first; when Debian no longer serves it, the candidate version is taken (and
# said on stderr). Progress goes to stderr; stdout carries only that folder's path. When the binary is
# there this is a no-op that does not start apt. Measured: the package is ~28 MB, taken in a few seconds.
#
# Environment: RAY_FT_WEBHOOK_CACHE (cache root).
set -euo pipefail

pinned=2.42.0+ds-5+deb12u1

log() { echo "promtool.sh: $*" >&2; }
die() { echo "promtool.sh: error: $*" >&2; exit 1; }

case ${1:-} in
  "") ;;
  -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unknown argument '$1' (see --help)" ;;
esac

cache_root=${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}
folder() { echo "$cache_root/testbin/promtool-${1//[^A-Za-z0-9.+_-]/_}"; }

if [[ -x $(folder "$pinned")/promtool ]]; then
  folder "$pinned"
  exit 0
fi

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
  || die "apt-get and dpkg-deb are needed to take promtool out of Debian's prometheus package"
tmp=$(mktemp -d)
chmod 755 "$tmp"  # apt downloads as its own user (_apt) where it can
trap 'rm -rf "$tmp"' EXIT

download() {  # download VERSION: the .deb into $tmp; 1 when apt cannot
  (cd "$tmp" && apt-get download -q "prometheus=$1" >&2)
}
version=$pinned
if ! download "$version"; then
  if [[ $(id -u) -eq 0 ]]; then
    log "refreshing the package lists (apt-get update) ..."
    apt-get update -q >&2 || true
  fi
  if ! download "$version"; then
    version=$(apt-cache policy prometheus | awk '$1 == "Candidate:" { print $2 }')
    [[ -n $version && $version != "(none)" ]] || die "Debian's prometheus package is not available (apt-get update?)"
    log "prometheus $pinned is not served any more; taking the candidate $version"
    [[ -x $(folder "$version")/promtool ]] && { folder "$version"; exit 0; }
    download "$version" || die "apt-get download prometheus=$version failed (see the messages above)"
  fi
fi

deb=$(ls "$tmp"/prometheus_*.deb)
dpkg-deb -x "$deb" "$tmp/root"
[[ -x $tmp/root/usr/bin/promtool ]] || die "$(basename "$deb") has no usr/bin/promtool"
out=$(folder "$version")
mkdir -p "$out"
# Under a temporary name, renamed into place: an interrupted copy never leaves a truncated binary.
cp "$tmp/root/usr/bin/promtool" "$out/.promtool.tmp.$$"
mv -f "$out/.promtool.tmp.$$" "$out/promtool"
log "promtool $("$out/promtool" --version 2>&1 | head -1 | awk '{print $3}') from prometheus_${version} in ${out}"
echo "$out"
