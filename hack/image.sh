#!/usr/bin/env bash
# Build the webhook's container image with podman, on a machine that cannot reach an image registry.
#
#   bash hack/install-podman.sh      # once: podman, runc, debootstrap, our containers.conf
#   bash hack/image.sh               # progress on stderr, the image tag on stdout
#
# 1. The base image localhost/bookworm-base (Debian bookworm minbase + python3, python3-venv,
#    ca-certificates) is made with debootstrap from the machine's own Debian mirror and imported, once;
#    the podman image store is the cache (delete it with `podman rmi localhost/bookworm-base`).
# 2. `podman build` of ./Dockerfile with --build-arg BASE=localhost/bookworm-base --pull=never. pip in
#    the build stage reaches PyPI over --network=host and trusts the host's CA bundle (outbound TLS is
#    re-signed here), which is mounted for the build only, never copied into the image.
#
# Environment: IMAGE (default localhost/ray-ft-webhook:test), BASE_IMAGE (default
# localhost/bookworm-base), RAY_FT_WEBHOOK_CACHE (where install-podman.sh put containers.conf),
# CONTAINERS_CONF (default: that file).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
CACHE="${RAY_FT_WEBHOOK_CACHE:-$HOME/.cache/ray-ft-webhook}"
IMAGE="${IMAGE:-localhost/ray-ft-webhook:test}"
BASE_IMAGE="${BASE_IMAGE:-localhost/bookworm-base}"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
export CONTAINERS_CONF="${CONTAINERS_CONF:-$CACHE/containers.conf}"

log() { printf '[image] %s\n' "$*" >&2; }

if ! command -v podman >/dev/null 2>&1 || [[ ! -f $CONTAINERS_CONF ]]; then
    log "podman or $CONTAINERS_CONF missing: run bash hack/install-podman.sh first"
    exit 1
fi

# One build at a time (two test sessions, or a developer and a test): they share the base and the tag.
mkdir -p "$CACHE"
exec 9>"$CACHE/image.lock"
if ! flock -w 900 9; then
    log "another hack/image.sh has held $CACHE/image.lock for 15 minutes"
    exit 1
fi

# The first Debian URI of the machine's apt sources (deb822 first, then the one-line format).
debian_mirror() {
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        uri="$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [[ -z $uri && -r /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
            /etc/apt/sources.list)"
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

build_base() {
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "debootstrap missing: run bash hack/install-podman.sh first"
        exit 1
    fi
    local mirror rootfs started
    mirror="$(debian_mirror)"
    rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: the trap must remove this very folder
    trap "rm -rf '$rootfs'" EXIT
    started=$SECONDS
    log "debootstrap bookworm from $mirror (once; about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >&2
    # What a container never needs: downloaded packages, package lists, docs, man pages, locales.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
    log "podman import $BASE_IMAGE"
    tar -C "$rootfs" --numeric-owner -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap bookworm minbase from $mirror by hack/image.sh" \
        - "$BASE_IMAGE" >&2
    rm -rf "$rootfs"
    trap - EXIT
    log "$BASE_IMAGE made in $((SECONDS - started)) s"
}

if podman image exists "$BASE_IMAGE"; then
    log "$BASE_IMAGE: present"
else
    build_base
fi

# Every image a build makes or reuses (its final image and each cached step of both stages) is
# recorded; the next build removes, by ID, the recorded ones it no longer uses, so code changes do
# not pile up ~150 MB of dangling layers each while the layer cache stays warm. Only images this
# script recorded are ever removed.
state="$CACHE/image-ids.$(printf '%s' "$IMAGE" | tr -c 'A-Za-z0-9._-' '_')"
build_log="$(mktemp)"
trap 'rm -f "$build_log"' EXIT

started=$SECONDS
log "podman build $IMAGE (FROM $BASE_IMAGE)"
podman build \
    --file "$ROOT/Dockerfile" \
    --tag "$IMAGE" \
    --build-arg "BASE=$BASE_IMAGE" \
    --pull=never \
    --network=host \
    --volume "$CA_BUNDLE:$CA_BUNDLE:ro" \
    --layers \
    "$ROOT" 2>&1 | tee "$build_log" >&2

# Step lines are "--> Using cache <64 hex>" or "--> <short id>"; resolved to full IDs in one call.
mapfile -t step_ids < <(awk '$1 == "-->" { print $NF }' "$build_log" | grep -E '^[0-9a-f]{11,64}$' || true)
mapfile -t current < <(podman image inspect --format '{{.Id}}' "$IMAGE" "${step_ids[@]}" | sort -u)
if [[ -f $state ]]; then
    mapfile -t stale < <(sort -u "$state" | comm -23 - <(printf '%s\n' "${current[@]}"))
    if ((${#stale[@]})); then
        podman rmi "${stale[@]}" >/dev/null 2>&1 || true
        kept=0
        for id in "${stale[@]}"; do
            if podman image exists "$id"; then
                current+=("$id")  # still used (a container, another tag): try again next time
                kept=$((kept + 1))
            fi
        done
        log "removed $((${#stale[@]} - kept)) image(s) of earlier builds no longer used"
    fi
fi
printf '%s\n' "${current[@]}" | sort -u >"$state"

new_id="$(podman image inspect --format '{{.Id}}' "$IMAGE")"
log "$IMAGE built in $((SECONDS - started)) s: $(podman image inspect --format '{{.Size}}' "$IMAGE" |
    awk '{ printf "%.0f MB", $1 / 1e6 }'), id ${new_id:0:12}"
printf '%s\n' "$IMAGE"
