#!/usr/bin/env bash
# Install what the real-Ray test tier (tests/realray, pytest -m realray) needs, idempotently.
#
#   bash hack/install-realray.sh [VENV]      # VENV defaults to the repo's .venv
#
# - Debian packages: redis-server (the tier starts its own redis-server processes, in a network
#   namespace of its own; the system service is not used), iproute2 (`ip netns`), util-linux
#   (`unshare`, `nsenter`: one PID+mount namespace per Ray node, like one pod per node).
# - Python: ray[default] at the pinned version, into VENV. `default` brings the dashboard agent and
#   its dependencies, which `ray start` runs on every node as a KubeRay image does.
#
# A second run with everything in place only checks and exits (well under a second or two).
set -euo pipefail

# Pinned: the version the tier was proven with (GCS tables in Redis as RAY<ns>@<TABLE> hashes).
RAY_VERSION="${RAY_VERSION:-2.60.0}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-$(dirname "$HERE")/.venv}"
PY="$VENV/bin/python"

log() { printf '[install-realray] %s\n' "$*"; }

# --- Debian packages ------------------------------------------------------------------------------
missing_debs=()
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || missing_debs+=(redis-server)
command -v ip >/dev/null 2>&1 || missing_debs+=(iproute2)
{ command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1; } || missing_debs+=(util-linux)

if ((${#missing_debs[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "need root to apt-get install: ${missing_debs[*]}" >&2
        exit 1
    fi
    log "apt-get install ${missing_debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d exit 101 keeps the package's postinst from starting the system redis service:
    # the tests start their own servers on their own ports. Only created (and removed) if absent.
    made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    trap '[[ $made_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
    # Refresh the index only when an install from the current one fails (a fresh image has none).
    if ! apt-get install -y --no-install-recommends "${missing_debs[@]}"; then
        log "apt-get update"
        apt-get update
        apt-get install -y --no-install-recommends "${missing_debs[@]}"
    fi
else
    log "redis-server, ip, unshare, nsenter: present"
fi
log "$(redis-server --version | cut -d' ' -f1-3)"

# --- Ray into the venv ----------------------------------------------------------------------------
if [[ ! -x $PY ]]; then
    log "no python at $PY (create the venv first: python3 -m venv $VENV)" >&2
    exit 1
fi

# Satisfied when ray has the pinned version and every requirement of its `default` extra is installed.
# Reads package metadata only (no `import ray`), so the no-op path stays fast.
ray_ok() {
    "$PY" - "$RAY_VERSION" <<'EOF'
import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:  # a venv without packaging still has pip's copy
    from pip._vendor.packaging.requirements import Requirement

want = sys.argv[1]
try:
    dist = metadata.distribution("ray")
except metadata.PackageNotFoundError:
    sys.exit(1)
if dist.version != want:
    print(f"ray {dist.version} installed, {want} wanted")
    sys.exit(1)
for line in dist.requires or []:
    req = Requirement(line)
    if req.marker is None or not req.marker.evaluate({"extra": "default"}):
        continue
    try:
        metadata.version(req.name)
    except metadata.PackageNotFoundError:
        print(f"ray[default] needs {req.name}")
        sys.exit(1)
EOF
}

if ray_ok; then
    log "ray[default]==$RAY_VERSION: present in $VENV"
else
    log "pip install ray[default]==$RAY_VERSION into $VENV (a few hundred MB; takes minutes)"
    "$PY" -m pip install --progress-bar off "ray[default]==$RAY_VERSION"
    ray_ok
    log "ray[default]==$RAY_VERSION: installed"
fi
log "ready: run  $VENV/bin/python -m pytest -m realray tests/realray"
