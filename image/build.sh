#!/usr/bin/env bash
# Build the vault appliance disk image (Debian 12, dm-verity root, A/B slots, UKIs,
# TPM-bound data volume made at first boot) and its signed update bundle.
#
#   bash image/build.sh                  # full build -> image/out/
#   bash image/build.sh --until=verity   # root filesystem + root hash only (test/reproducible.sh)
#   bash image/build.sh --until=uki      # ... + initrd/UKIs
#
# Env: IMAGE_BUILD=N (build number, default SOURCE_DATE_EPOCH), IMAGE_OUT=dir, IMAGE_WORK=dir,
#      IMAGE_SIGNING_KEY=PEM (PKCS#8 P-256; default image/keys/image-signing.key, made on first use),
#      IMAGE_DEB_CACHE=dir (reused .debs), IMAGE_MIRROR (mmdebstrap mirror/sources file),
#      IMAGE_SKIP_CARGO=1 (use the existing target/release binaries),
#      IMAGE_CMDLINE_EXTRA="…" (debug only, e.g. systemd.journald.forward_to_console=1; changes PCR 11),
#      IMAGE_REUSE_ROOTFS=1 (development: keep the last rootfs/initrd, redo squashfs onwards).
# Needs root (mmdebstrap, chroot for dracut/useradd/depmod). Everything else is rootless:
# no loop devices, no mounts of the ESP/verity/LUKS on the build host.
set -Eeuo pipefail
IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$IMAGE_DIR/lib/common.sh"

UNTIL=all
for a in "$@"; do
    case $a in
        --until=*) UNTIL=${a#--until=} ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown argument: $a" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap and the dracut chroot need it)"

export SOURCE_DATE_EPOCH; SOURCE_DATE_EPOCH=$(source_date_epoch)
IMAGE_BUILD=${IMAGE_BUILD:-$SOURCE_DATE_EPOCH}
[[ $IMAGE_BUILD =~ ^[0-9]+$ ]] || die "IMAGE_BUILD must be a number"
VERSION="$(workspace_version)+$IMAGE_BUILD"
STAGE_DIR=$WORK_DIR/stage
ROOTFS=$WORK_DIR/rootfs
export IMAGE_DIR STAGE_DIR SOURCE_DATE_EPOCH
T_START=$SECONDS

HOST_PACKAGES=(mmdebstrap systemd-boot-efi ovmf qemu-system-x86 swtpm swtpm-tools squashfs-tools
               cryptsetup-bin mtools dosfstools fdisk binutils zstd openssl faketime git ca-certificates)
HOST_OPTIONAL=(bmap-tools)

# ── 1. host packages ────────────────────────────────────────────────────────────────────────
host_deps() {
    local missing=() p
    for p in "${HOST_PACKAGES[@]}" "${HOST_OPTIONAL[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then log "host packages: all present"; return; fi
    log "host packages: installing ${missing[*]}"
    local need_update=0
    for p in "${missing[@]}"; do
        apt-cache show "$p" >/dev/null 2>&1 || need_update=1
    done
    [ $need_update -eq 0 ] || apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }
    command -v cargo >/dev/null || die "cargo not found (install the Rust toolchain of rust-toolchain.toml)"
}

# ── 2. binaries ─────────────────────────────────────────────────────────────────────────────
build_binaries() {
    cd "$REPO_DIR"
    if [ "${IMAGE_SKIP_CARGO:-0}" != 1 ]; then
        # one invocation: one feature resolution, one set of dependency builds
        local pkgs=(-p vaultd -p vaultctl)
        if cargo metadata --no-deps --format-version 1 --locked 2>/dev/null | grep -q '"name":"vault-image"'; then
            pkgs+=(-p vault-image)
        else
            warn "vault-image is not a workspace member yet: PCR policies and the update bundle are NOT signed (TODO)"
        fi
        cargo build --release --locked "${pkgs[@]}"
    fi
    mkdir -p "$STAGE_DIR"
    local b
    for b in vaultd vaultctl; do
        [ -x "target/release/$b" ] || die "target/release/$b missing"
        # release profile has debug=1: keep symbols, drop DWARF (93 MB -> ~15 MB)
        objcopy --strip-debug "target/release/$b" "$STAGE_DIR/$b"
    done
    echo "$VERSION" > "$STAGE_DIR/version"
}

# ── 3. image signing key ────────────────────────────────────────────────────────────────────
signing_key() {
    if [ -n "${IMAGE_SIGNING_KEY:-}" ]; then
        [ -r "$IMAGE_SIGNING_KEY" ] || die "IMAGE_SIGNING_KEY=$IMAGE_SIGNING_KEY is not readable"
        SIGNING_KEY=$IMAGE_SIGNING_KEY
    else
        SIGNING_KEY=$KEYS_DIR/image-signing.key
        if [ ! -s "$SIGNING_KEY" ]; then
            install -d -m 0700 "$KEYS_DIR"
            if have_vault_image; then
                "$(vault_image_bin)" keygen --key "$SIGNING_KEY" --pub "$KEYS_DIR/image-signing.pem"
            else
                (umask 077; openssl ecparam -genkey -name prime256v1 -noout | openssl pkcs8 -topk8 -nocrypt -out "$SIGNING_KEY")
            fi
            log "generated a new image signing key: $SIGNING_KEY"
        fi
    fi
    mkdir -p "$STAGE_DIR"
    openssl pkey -in "$SIGNING_KEY" -pubout -out "$STAGE_DIR/image-signing.pem"
    [ -n "${IMAGE_SIGNING_KEY:-}" ] || cp "$STAGE_DIR/image-signing.pem" "$KEYS_DIR/image-signing.pem"
    log "image signing key: $SIGNING_KEY (public key sha256 $(openssl pkey -pubin -in "$STAGE_DIR/image-signing.pem" -outform DER | sha256sum | cut -c1-16)…)"
}

# ── 4–6. root filesystem, customisation, initrd ─────────────────────────────────────────────
mirror_args() {
    if [ -n "${IMAGE_MIRROR:-}" ]; then echo "$IMAGE_MIRROR"
    elif [ -f /etc/apt/sources.list.d/debian.sources ]; then echo /etc/apt/sources.list.d/debian.sources
    else echo "deb http://deb.debian.org/debian $SUITE main"; echo "deb http://deb.debian.org/debian $SUITE-updates main"; echo "deb http://deb.debian.org/debian-security $SUITE-security main"
    fi
}

rootfs() {
    if [ "${IMAGE_REUSE_ROOTFS:-0}" = 1 ] && [ -s "$STAGE_DIR/initrd.img" ] && [ -d "$ROOTFS/usr" ]; then
        warn "IMAGE_REUSE_ROOTFS=1: reusing $ROOTFS, re-applying the overlay (development only)"
        tar -C "$OVERLAY_DIR" --owner=0 --group=0 --numeric-owner -cf - . | tar -C "$ROOTFS" -xpf - --no-overwrite-dir
        return
    fi
    if [ -e "$ROOTFS" ]; then
        if findmnt -rn -o TARGET | grep -q "^$ROOTFS"; then die "something is still mounted below $ROOTFS"; fi
        rm -rf "$ROOTFS"
    fi
    mkdir -p "$DEB_CACHE"
    local pkgs mirrors=()
    pkgs=$(grep -vE '^\s*(#|$)' "$CONFIG_DIR/packages.txt" | awk '{print $1}' | paste -sd, -)
    mapfile -t mirrors < <(mirror_args)
    INITRD=No mmdebstrap --mode=root --variant=minbase --include="$pkgs" \
        --aptopt='Acquire::Retries "3"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --skip=essential/unlink \
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
        --setup-hook="sync-in $DEB_CACHE /var/cache/apt/archives/" \
        --customize-hook="sync-out /var/cache/apt/archives $DEB_CACHE" \
        --customize-hook="$IMAGE_DIR/lib/customise.sh \"\$1\"" \
        "$SUITE" "$ROOTFS" "${mirrors[@]}"
    # mmdebstrap's own leftovers after the hooks
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
           "$ROOTFS"/var/log/* "$ROOTFS"/var/cache/ldconfig/aux-cache "$ROOTFS"/var/lib/dpkg/*-old
    log "rootfs: $(du -sm --exclude=boot "$ROOTFS" | cut -f1) MiB (without /boot), kernel $(cat "$STAGE_DIR/kver")"
}

# ── 7. squashfs + dm-verity ─────────────────────────────────────────────────────────────────
squashfs() {
    rm -f "$STAGE_DIR/root.squashfs"
    env -u SOURCE_DATE_EPOCH mksquashfs "$ROOTFS" "$STAGE_DIR/root.squashfs" -noappend -quiet -no-progress \
        -comp zstd -Xcompression-level 15 -b 256K \
        -all-time "$SOURCE_DATE_EPOCH" -mkfs-time "$SOURCE_DATE_EPOCH" -e boot
    log "root.squashfs: $(ceil_mib "$(stat -c %s "$STAGE_DIR/root.squashfs")") MiB"
}

verity() {
    rm -f "$STAGE_DIR/root.verity"
    veritysetup format --salt="$VERITY_SALT" --uuid="$VERITY_UUID" \
        "$STAGE_DIR/root.squashfs" "$STAGE_DIR/root.verity" > "$STAGE_DIR/verity.txt"
    ROOTHASH=$(sed -n 's/^Root hash:[[:space:]]*//p' "$STAGE_DIR/verity.txt")
    [[ $ROOTHASH =~ ^[0-9a-f]{64}$ ]] || die "could not read the root hash"
    echo "$ROOTHASH" > "$STAGE_DIR/roothash"
    log "root hash: $ROOTHASH"
}

# ── 8. UKIs (one per slot) + PCR 11 prediction + signed PCR policies ────────────────────────
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
MEASURE=/lib/systemd/systemd-measure

cmdline_for() { # SLOT -> file
    local f=$STAGE_DIR/cmdline-$1
    printf '%s' "$(grep -vE '^\s*(#|$)' "$CONFIG_DIR/cmdline" | tr '\n' ' ' | sed "s/@ROOTHASH@/$ROOTHASH/g; s/@SLOT@/$1/g; s/  */ /g; s/ *\$//")${IMAGE_CMDLINE_EXTRA:+ $IMAGE_CMDLINE_EXTRA}" > "$f"
    echo "$f"
}

uki_for() { # SLOT
    local slot=$1 cmd; cmd=$(cmdline_for "$slot")
    local uki=$STAGE_DIR/uki-$slot.efi
    rm -f "$uki"
    # No .pcrpkey section: systemd 252 (repart Encrypt=tpm2, cryptsetup) picks it up from
    # /.extra/tpm2-pcr-public-key.pem and only supports RSA keys; ours is P-256 and is
    # used by vaultd alone (/usr/lib/vault/image-signing.pem).
    objcopy \
        --add-section .osrel="$STAGE_DIR/os-release" --change-section-vma .osrel=0x20000 \
        --add-section .cmdline="$cmd"                --change-section-vma .cmdline=0x30000 \
        --add-section .linux="$STAGE_DIR/vmlinuz"     --change-section-vma .linux=0x2000000 \
        --add-section .initrd="$STAGE_DIR/initrd.img" --change-section-vma .initrd=0x3000000 \
        "$STUB" "$uki"
    pe_deterministic "$uki"
    # PCR 11 as systemd-stub + systemd-pcrphase will leave it once the system is up
    # (enter-initrd, leave-initrd, sysinit, ready): what vaultd reads after systemd-pcrphase.service
    "$MEASURE" calculate --linux="$STAGE_DIR/vmlinuz" --osrel="$STAGE_DIR/os-release" --cmdline="$cmd" \
        --initrd="$STAGE_DIR/initrd.img" \
        --bank=sha256 --phase=enter-initrd:leave-initrd:sysinit:ready --json=short > "$STAGE_DIR/pcr11-$slot.json"
    local h; h=$(grep -o '"hash":"[0-9a-f]\{64\}"' "$STAGE_DIR/pcr11-$slot.json" | head -1 | cut -d'"' -f4)
    [[ $h =~ ^[0-9a-f]{64}$ ]] || die "systemd-measure gave no sha256 PCR 11 value: $(cat "$STAGE_DIR/pcr11-$slot.json")"
    echo "$h" > "$STAGE_DIR/pcr11-$slot"
    log "uki-$slot.efi: $(ceil_mib "$(stat -c %s "$uki")") MiB, predicted PCR 11 (sha256) $h"
    sign_pcr_policy "$slot" "$h"
}

# objcopy stamps the PE/COFF header with the current time and a checksum over it: set the
# timestamp to SOURCE_DATE_EPOCH and zero the checksum (UEFI does not check it).
le32() { local v=$1; printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((v & 255)) $(((v >> 8) & 255)) $(((v >> 16) & 255)) $(((v >> 24) & 255)))"; }
pe_deterministic() { # FILE
    local pe; pe=$(od -An -tu4 -j 60 -N4 "$1" | tr -d ' ')
    [ "$(od -An -c -j "$pe" -N2 "$1" | tr -d ' ')" = PE ] || die "$1: not a PE file"
    le32 "$SOURCE_DATE_EPOCH" | dd of="$1" bs=1 seek=$((pe + 8)) conv=notrunc status=none
    le32 0 | dd of="$1" bs=1 seek=$((pe + 24 + 64)) conv=notrunc status=none
}

# Signed PCR 11 policy for vaultd's TPM seal (PolicyAuthorize by the image key).
sign_pcr_policy() { # SLOT PCR11HEX
    local out=$STAGE_DIR/pcrsig-$1.json
    rm -f "$out"
    if have_vault_image; then
        "$(vault_image_bin)" sign-policy --key "$SIGNING_KEY" --version "$VERSION" --pcr "11=$2" --out "$out"
    else
        # TODO(vault-image): remove this branch once `vault-image sign-policy` is built.
        warn "TODO sign_pcr_policy: vault-image missing, writing an UNSIGNED placeholder $out"
        printf '{"unsigned_placeholder":true,"version":"%s","pcrs":{"11":"%s"}}\n' "$VERSION" "$2" > "$out"
    fi
}

ukis() { uki_for a; uki_for b; }

# ── 9. ESP (FAT32, rootless) ───────────────────────────────────────────────────────────────
esp() {
    local img=$STAGE_DIR/esp.img
    rm -f "$img"
    mkfs.vfat -C --invariant -F 32 -S 512 -s 1 -i "$ESP_VOLUME_ID" -n "$ESP_LABEL" "$img" $((ESP_SIZE_MIB * 1024)) >/dev/null
    local files=$STAGE_DIR/esp-files
    rm -rf "$files"; mkdir -p "$files"
    cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$files/BOOTX64.EFI"
    cp "$STAGE_DIR/uki-a.efi" "$files/vault_${IMAGE_BUILD}_a.efi"
    cp "$STAGE_DIR/pcrsig-a.json" "$files/vault_${IMAGE_BUILD}_a.json"
    cp "$CONFIG_DIR/loader.conf" "$files/loader.conf"
    touch -h -d "@$SOURCE_DATE_EPOCH" "$files"/*
    # mtools stamps directories with the current time: pin the clock when faketime is there
    local ft=()
    command -v faketime >/dev/null && ft=(faketime -f "$(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%d %H:%M:%S')")   # no "@": frozen clock
    export MTOOLS_SKIP_CHECK=1 TZ=UTC
    "${ft[@]}" mmd -i "$img" ::/EFI ::/EFI/BOOT ::/EFI/Linux ::/loader ::/loader/entries ::/vault ::/vault/pcrsig
    "${ft[@]}" mcopy -m -i "$img" "$files/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
    "${ft[@]}" mcopy -m -i "$img" "$files/vault_${IMAGE_BUILD}_a.efi" "::/EFI/Linux/vault_${IMAGE_BUILD}_a.efi"
    "${ft[@]}" mcopy -m -i "$img" "$files/loader.conf" ::/loader/loader.conf
    "${ft[@]}" mcopy -m -i "$img" "$files/vault_${IMAGE_BUILD}_a.json" "::/vault/pcrsig/vault_${IMAGE_BUILD}_a.json"
    mdir -/ -i "$img" :: > "$STAGE_DIR/esp.list"
}

# ── 10. GPT disk ────────────────────────────────────────────────────────────────────────────
disk() {
    local sq_mib root_mib raw=$STAGE_DIR/disk.raw
    sq_mib=$(ceil_mib "$(stat -c %s "$STAGE_DIR/root.squashfs")")
    root_mib=$((2 * sq_mib)); [ $root_mib -ge "$ROOT_MIN_MIB" ] || root_mib=$ROOT_MIN_MIB
    [ "$(stat -c %s "$STAGE_DIR/root.verity")" -le $((VERITY_MIB * 1048576)) ] || die "verity tree larger than the verity slot"
    local used=$((1 + ESP_SIZE_MIB + 2 * root_mib + 2 * VERITY_MIB + 1))
    [ "$DISK_SIZE_MIB" -gt $((used + 64)) ] || die "DISK_SIZE_MIB=$DISK_SIZE_MIB too small (need > $((used + 64)))"
    rm -f "$raw"; truncate -s "${DISK_SIZE_MIB}M" "$raw"
    grep -vE '^\s*#' "$CONFIG_DIR/partitions.sfdisk" \
        | sed "s/@ESP_SECTORS@/$((ESP_SIZE_MIB * 2048))/; s/@ROOT_SECTORS@/$((root_mib * 2048))/g; s/@VERITY_SECTORS@/$((VERITY_MIB * 2048))/g" \
        > "$STAGE_DIR/partitions.sfdisk"
    sfdisk --quiet --no-reread --no-tell-kernel "$raw" < "$STAGE_DIR/partitions.sfdisk"
    sfdisk --json "$raw" > "$STAGE_DIR/partitions.json"
    put() { # PARTLABEL FILE
        local start
        start=$(part_start "$STAGE_DIR/partitions.json" "$1")
        dd if="$2" of="$raw" bs=1M seek=$((start / 2048)) conv=notrunc,sparse status=none
    }
    put esp "$STAGE_DIR/esp.img"
    put root-a "$STAGE_DIR/root.squashfs"
    put root-a-verity "$STAGE_DIR/root.verity"
    ROOT_SLOT_MIB=$root_mib
    log "disk.raw: ${DISK_SIZE_MIB} MiB (sparse, $(du -m "$raw" | cut -f1) MiB used), root slots ${root_mib} MiB, verity slots ${VERITY_MIB} MiB"
}

# ── 13. outputs ─────────────────────────────────────────────────────────────────────────────
make_bundle() {
    local out=$OUT_DIR/update-$VERSION.vupd
    rm -f "$out"
    if have_vault_image; then
        "$(vault_image_bin)" bundle --key "$SIGNING_KEY" --version "$VERSION" --build "$IMAGE_BUILD" --roothash "$ROOTHASH" \
            --part root="$STAGE_DIR/root.squashfs" --part root.verity="$STAGE_DIR/root.verity" \
            --part uki-a="$STAGE_DIR/uki-a.efi" --part uki-b="$STAGE_DIR/uki-b.efi" \
            --part pcrsig-a="$STAGE_DIR/pcrsig-a.json" --part pcrsig-b="$STAGE_DIR/pcrsig-b.json" \
            --out "$out"
        "$(vault_image_bin)" verify-bundle --pub "$STAGE_DIR/image-signing.pem" "$out"
    else
        # TODO(vault-image): remove once `vault-image bundle` exists.
        warn "TODO make_bundle: vault-image missing, no update bundle written"
    fi
}

outputs() {
    mkdir -p "$OUT_DIR"
    rm -f "$OUT_DIR"/disk.raw "$OUT_DIR"/disk.raw.zst "$OUT_DIR"/disk.bmap "$OUT_DIR"/update-*.vupd
    mv "$STAGE_DIR/disk.raw" "$OUT_DIR/disk.raw"
    zstd -q -T0 -10 --sparse -f "$OUT_DIR/disk.raw" -o "$OUT_DIR/disk.raw.zst"
    if command -v bmaptool >/dev/null; then bmaptool -q create "$OUT_DIR/disk.raw" -o "$OUT_DIR/disk.bmap"; fi
    for f in root.squashfs root.verity uki-a.efi uki-b.efi pcrsig-a.json pcrsig-b.json pcr11-a pcr11-b; do
        cp "$STAGE_DIR/$f" "$OUT_DIR/$f"
    done
    cp "$STAGE_DIR/image-signing.pem" "$OUT_DIR/image-signing.pem"
    echo "$ROOTHASH" > "$OUT_DIR/roothash"
    make_bundle
    manifest > "$OUT_DIR/manifest.json"
    (cd "$OUT_DIR" && sha256sum -- $(ls | grep -vxE 'SHA256SUMS|build-info.txt') > SHA256SUMS)
    build_info > "$OUT_DIR/build-info.txt"
}

json_file() { # name path
    printf '    "%s": {"size": %s, "sha256": "%s"}' "$1" "$(stat -c %s "$2")" "$(sha256sum "$2" | cut -d' ' -f1)"
}

manifest() {
    cat <<JSON
{
  "version": "$VERSION",
  "build": $IMAGE_BUILD,
  "source_date_epoch": $SOURCE_DATE_EPOCH,
  "git_commit": "$(git -C "$REPO_DIR" rev-parse HEAD 2>/dev/null || echo unknown)",
  "kernel": "$(cat "$STAGE_DIR/kver")",
  "roothash": "$ROOTHASH",
  "pcr11": {"a": "$(cat "$STAGE_DIR/pcr11-a")", "b": "$(cat "$STAGE_DIR/pcr11-b")"},
  "cmdline": {"a": "$(cat "$STAGE_DIR/cmdline-a")", "b": "$(cat "$STAGE_DIR/cmdline-b")"},
  "esp": {"uki": "/EFI/Linux/vault_${IMAGE_BUILD}_a.efi", "pcrsig": "/vault/pcrsig/vault_${IMAGE_BUILD}_a.json"},
  "disk": {"size_mib": $DISK_SIZE_MIB, "esp_mib": $ESP_SIZE_MIB, "root_slot_mib": $ROOT_SLOT_MIB, "verity_slot_mib": $VERITY_MIB},
  "signed": $(have_vault_image && echo true || echo false),
  "files": {
$(json_file root.squashfs "$STAGE_DIR/root.squashfs"),
$(json_file root.verity "$STAGE_DIR/root.verity"),
$(json_file uki-a.efi "$STAGE_DIR/uki-a.efi"),
$(json_file uki-b.efi "$STAGE_DIR/uki-b.efi"),
$(json_file disk.raw.zst "$OUT_DIR/disk.raw.zst")
  }
}
JSON
}

build_info() {
    echo "vault appliance image $VERSION"
    echo "built:        $(date -u '+%Y-%m-%dT%H:%M:%SZ') on $(hostname) in $((SECONDS - T_START)) s"
    echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH ($(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%dT%H:%M:%SZ'))"
    echo "kernel:       $(cat "$STAGE_DIR/kver")"
    echo "root hash:    $ROOTHASH"
    echo "PCR 11 a/b:   $(cat "$STAGE_DIR/pcr11-a") / $(cat "$STAGE_DIR/pcr11-b")"
    echo "signing key:  $SIGNING_KEY"
    echo
    echo "sizes:"
    (cd "$OUT_DIR" && ls -l --block-size=1 | awk 'NR>1{printf "  %-28s %12d bytes (%d MiB)\n", $9, $5, ($5+1048575)/1048576}')
    echo "  disk.raw allocated: $(du -m "$OUT_DIR/disk.raw" | cut -f1) MiB"
    echo "  initrd: $(ceil_mib "$(stat -c %s "$STAGE_DIR/initrd.img")") MiB, kernel: $(ceil_mib "$(stat -c %s "$STAGE_DIR/vmlinuz")") MiB"
    echo
    echo "step timings:"
    sed 's/^/  /' "$WORK_DIR/timings"
}

# ── main ───────────────────────────────────────────────────────────────────────────────────
mkdir -p "$WORK_DIR" "$STAGE_DIR"
: > "$WORK_DIR/timings"
log "vault appliance image $VERSION (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH) work=$WORK_DIR out=$OUT_DIR"
step host-deps host_deps
step binaries build_binaries
step key signing_key
step rootfs rootfs
step squashfs squashfs
step verity verity
if [ "$UNTIL" = verity ]; then log "stopping after verity: root hash $ROOTHASH"; exit 0; fi
step uki ukis
if [ "$UNTIL" = uki ]; then log "stopping after uki: root hash $ROOTHASH"; exit 0; fi
step esp esp
step disk disk
step outputs outputs
log "done in $((SECONDS - T_START)) s: $OUT_DIR"
log "version   $VERSION"
log "root hash $ROOTHASH"
