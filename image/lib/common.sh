# shellcheck shell=bash
# Shared settings and helpers for image/build.sh and image/test/*.sh (sourced).

IMAGE_DIR=${IMAGE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
REPO_DIR=$(cd "$IMAGE_DIR/.." && pwd)
CONFIG_DIR=$IMAGE_DIR/config
OVERLAY_DIR=$IMAGE_DIR/overlay
WORK_DIR=${IMAGE_WORK:-$IMAGE_DIR/work/build}
OUT_DIR=${IMAGE_OUT:-$IMAGE_DIR/out}
DEB_CACHE=${IMAGE_DEB_CACHE:-$IMAGE_DIR/work/debs}
KEYS_DIR=$IMAGE_DIR/keys
SUITE=${IMAGE_SUITE:-bookworm}

# shellcheck source=../config/image.conf
. "$CONFIG_DIR/image.conf"

log()  { printf '\033[1m[image %(%H:%M:%S)T]\033[0m %s\n' -1 "$*" >&2; }
warn() { printf '\033[33m[image] WARNING:\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[31m[image] ERROR:\033[0m %s\n' "$*" >&2; exit 1; }

# step NAME FUNC...: run a build step and record its duration in $WORK_DIR/timings
step() {
    local name=$1; shift
    local t0=$SECONDS
    log "── $name"
    "$@"
    local dt=$((SECONDS - t0))
    printf '%-12s %4ss\n' "$name" "$dt" >> "$WORK_DIR/timings"
    log "   $name done in ${dt}s"
}

# fixed, reproducible timestamps: the last commit's time
source_date_epoch() {
    if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
        echo "$SOURCE_DATE_EPOCH"
    elif git -C "$REPO_DIR" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$REPO_DIR" log -1 --format=%ct
    else
        echo 1700000000
    fi
}

workspace_version() {
    sed -n '/^\[workspace.package\]/,/^\[/{s/^version *= *"\(.*\)"/\1/p}' "$REPO_DIR/Cargo.toml" | head -1
}

ceil_mib() { echo $(( ($1 + 1048575) / 1048576 )); }

# vault-image is available once the image crate is a workspace member
vault_image_bin() { echo "${VAULT_IMAGE_BIN:-$REPO_DIR/target/release/vault-image}"; }
have_vault_image() { [ -x "$(vault_image_bin)" ]; }

# part_start|part_size SFDISK_JSON PARTLABEL: start/size (512-byte sectors) of a partition
_part_field() {
    tr -d '\n' < "$1" | grep -o '{[^{}]*"name": *"'"$2"'"[^{}]*}' | grep -o '"'"$3"'": *[0-9]*' | grep -o '[0-9]*$'
}
part_start() { _part_field "$1" "$2" start; }
part_size() { _part_field "$1" "$2" size; }
