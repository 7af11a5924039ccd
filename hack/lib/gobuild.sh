# shellcheck shell=bash
# One `go build` for hack/testbin.sh, hack/kuberay.sh and bench/build.sh: interruptible at once, and never
# leaving a half-written binary. Source it after defining log(); then `gobuild OUT DIR PACKAGE [LDFLAGS]`.
#
# go build runs in the background, in its own process group where setsid(1) exists, so that a signal is
# handled at once: the whole group (go and its compile/link children) is terminated, then the temporary
# binary and go's work folder (GOTMPDIR) are deleted. A plain `go build` has no signal handler of its own.
# Each binary is linked under a temporary name and renamed into place.

# readonly: a stale go.sum fails loudly instead of being rewritten; buildvcs=false: the work tree's git state
# has nothing to do with these binaries.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

_gobuild_cpus=$(nproc 2>/dev/null || echo 2)
# One k8s compile step can take ~1 GB; binaries are built one after another so that two links never overlap.
GOBUILD_JOBS=${RAY_FT_WEBHOOK_BUILD_JOBS:-$((_gobuild_cpus < 4 ? _gobuild_cpus : 4))}
_gobuild_group=()
if command -v setsid >/dev/null; then
  _gobuild_group=(setsid)
fi
_gobuild_leftovers=()
_gobuild_pid=""

_gobuild_cleanup() {
  [[ ${#_gobuild_leftovers[@]} -eq 0 ]] || rm -rf "${_gobuild_leftovers[@]}"
}
_gobuild_on_signal() {
  if [[ -n $_gobuild_pid ]]; then
    kill -TERM -- "-$_gobuild_pid" 2>/dev/null || kill -TERM "$_gobuild_pid" 2>/dev/null || true
    wait "$_gobuild_pid" 2>/dev/null || true
  fi
  log "interrupted"
  exit "$1"
}
trap _gobuild_cleanup EXIT
trap '_gobuild_on_signal 130' INT
trap '_gobuild_on_signal 143' TERM

# gobuild OUT DIR PACKAGE [LDFLAGS]: build PACKAGE of the module in DIR into the file OUT; 1 on failure.
gobuild() {
  local out=$1 dir=$2 package=$3 ldflags=${4:-"-s -w"}
  local tmp gotmp
  tmp="$(dirname "$out")/.$(basename "$out").tmp.$$"
  gotmp="$(dirname "$out")/.gotmp.$$"
  _gobuild_leftovers+=("$tmp" "$gotmp")
  mkdir -p "$gotmp"
  (cd "$dir" && GOTMPDIR="$gotmp" exec "${_gobuild_group[@]}" go build -p "$GOBUILD_JOBS" -trimpath \
    -ldflags "$ldflags" -o "$tmp" "$package") &
  _gobuild_pid=$!
  if ! wait "$_gobuild_pid"; then
    _gobuild_pid=""
    return 1
  fi
  _gobuild_pid=""
  mv -f "$tmp" "$out"
  rm -rf "$gotmp"
}
