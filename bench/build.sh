#!/usr/bin/env bash
# Build the benchmark's Go programs (bench/loadgen, bench/crwebhook) into a cache outside the work tree.
#
#   bench/build.sh        prints the folder holding `loadgen` and `crwebhook` on stdout, progress on stderr
#
# Like hack/testbin.sh: modules from the Go module proxy (versions pinned by each go.mod/go.sum, read-only),
# output under ${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}/bench/<hash of the sources>/, so an
# unchanged source is a no-op that does not start Go, and a changed one gets a fresh folder. Each binary is
# linked under a temporary name and renamed into place. Measured on 2 busy CPUs: crwebhook ~5 min cold
# (controller-runtime and k8s.io/api), loadgen a few seconds; then a no-op.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "bench/build: $*" >&2; }
die() { echo "bench/build: error: $*" >&2; exit 1; }

programs=(loadgen crwebhook)
hash=$(cd "$here" && cat loadgen/go.mod loadgen/*.go crwebhook/go.mod crwebhook/go.sum crwebhook/*.go \
  | sha256sum | cut -c1-16)
out="${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}/bench/$hash"

missing() {
  local name
  for name in "${programs[@]}"; do
    [[ -x $out/$name ]] || echo "$name"
  done
}

if [[ -z $(missing) ]]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || die "go is not on PATH"
mkdir -p "$out"
exec 9>"$out/.lock"
command -v flock >/dev/null && flock 9

# shellcheck source=SCRIPTDIR/../hack/lib/gobuild.sh
source "$here/../hack/lib/gobuild.sh"
for name in $(missing); do
  log "building $name with $(go env GOVERSION) ..."
  start=$SECONDS
  gobuild "$out/$name" "$here/$name" . || die "building $name failed (see above)"
  log "built $name in $((SECONDS - start)) s"
done
echo "$out"
