#!/usr/bin/env bash
# mmdebstrap --customize-hook: turn the minbase chroot into the appliance root.
# Usage: customise.sh ROOTFS   (env: IMAGE_DIR, STAGE_DIR, SOURCE_DATE_EPOCH, VAULTD_UID)
# Runs as root on the build host; /proc, /sys and /dev are mounted in ROOTFS by mmdebstrap.
set -Eeuo pipefail
R=$1
. "$IMAGE_DIR/lib/common.sh"
: "${STAGE_DIR:?}" "${SOURCE_DATE_EPOCH:?}"
VAULTD_UID=${VAULTD_UID:-990}
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$@"; }

log "customise: overlay"
tar -C "$OVERLAY_DIR" --owner=0 --group=0 --numeric-owner --exclude=.gitkeep -cf - . | tar -C "$R" -xpf - --no-overwrite-dir
install -D -m 0644 "$CONFIG_DIR/dracut.conf" "$R/etc/dracut.conf.d/10-vault.conf"
# softhsm2-common ships /etc/softhsm 0750 root:softhsm; our config holds no secret and vaultd reads it
chmod 0755 "$R/etc/softhsm"; chmod 0644 "$R/etc/softhsm/softhsm2.conf"
chmod 0755 "$R/usr/lib/vault"/vault-*

log "customise: vaultd, vaultctl, image key, version"
install -m 0755 "$STAGE_DIR/vaultd" "$R/usr/bin/vaultd"
install -m 0755 "$STAGE_DIR/vaultctl" "$R/usr/bin/vaultctl"
install -D -m 0644 "$STAGE_DIR/image-signing.pem" "$R/usr/lib/vault/image-signing.pem"
install -D -m 0644 "$STAGE_DIR/version" "$R/usr/lib/vault/version"
# every library vaultd/vaultctl link must resolve inside the image
for b in vaultd vaultctl; do
    if in_root ldd "/usr/bin/$b" | grep 'not found'; then die "$b: missing libraries in the image"; fi
done

log "customise: os-release, hostname, machine-id"
version=$(cat "$STAGE_DIR/version")
# os-release is a symlink to ../usr/lib/os-release; append the image identity (measured in the UKI .osrel)
sed -i '/^IMAGE_ID=/d;/^IMAGE_VERSION=/d;/^VARIANT/d' "$R/usr/lib/os-release"
printf 'VARIANT="vault appliance"\nVARIANT_ID=vault\nIMAGE_ID=vault\nIMAGE_VERSION=%s\n' "$version" >> "$R/usr/lib/os-release"
: > "$R/etc/machine-id"           # empty: systemd makes a transient one at each boot (read-only root)
rm -f "$R/var/lib/dbus/machine-id"
rm -f "$R/etc/resolv.conf"
printf '127.0.0.1 localhost\n127.0.1.1 vault\n::1 localhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
ln -sf /usr/share/zoneinfo/Etc/UTC "$R/etc/localtime"; echo Etc/UTC > "$R/etc/timezone"
echo 'LANG=C.UTF-8' > "$R/etc/locale.conf"
# the root account stays locked (no password, no shell login anywhere)
in_root usermod -L -s /usr/sbin/nologin root

log "customise: user vaultd ($VAULTD_UID)"
getent_root() { grep -q "^$2:" "$R/etc/$1"; }
getent_root group tss || die "group tss missing (tpm-udev not installed?)"
getent_root group vaultd || in_root groupadd --system --gid "$VAULTD_UID" vaultd
getent_root passwd vaultd || in_root useradd --system --uid "$VAULTD_UID" --gid vaultd --groups tss \
    --home-dir /var/lib/vault --no-create-home --shell /usr/sbin/nologin --comment "vault daemon" vaultd
# mount points on the read-only root (/var/lib/vault itself lives on the /var tmpfs, see tmpfiles.d)
install -d -m 0755 "$R/efi" "$R/var/lib/vault"

log "customise: units"
mask() { for u in "$@"; do ln -sfn /dev/null "$R/etc/systemd/system/$u"; done; }
mask getty@.service serial-getty@.service console-getty.service container-getty@.service autovt@.service \
     getty.target getty-static.service \
     apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
     e2scrub_all.timer e2scrub_reap.service e2scrub_all.service fstrim.timer fstrim.service \
     systemd-firstboot.service systemd-boot-system-token.service systemd-boot-update.service \
     dpkg-db-backup.timer \
     rescue.service emergency.service debug-shell.service

enable_in() { local target=$1; shift; mkdir -p "$R/etc/systemd/system/$target"; for u in "$@"; do ln -sfn "../$u" "$R/etc/systemd/system/$target/$u"; done; }
enable_in multi-user.target.wants vaultd.service vault-update.path
enable_in boot-complete.target.requires vault-healthy.service
# networkd (DHCP on wired NICs) for the listener on :8443
mkdir -p "$R/etc/systemd/system/multi-user.target.wants" "$R/etc/systemd/system/sockets.target.wants" "$R/etc/systemd/system/sysinit.target.wants"
ln -sfn /lib/systemd/system/systemd-networkd.service "$R/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
ln -sfn /lib/systemd/system/systemd-networkd.socket "$R/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
# no SSH, no swap, no gettys: check
[ ! -e "$R/usr/sbin/sshd" ] || die "sshd must not be in the image"
# systemd-boot's kernel hooks would run bootctl/kernel-install on kernel upgrades: not used (UKIs are built outside)
rm -f "$R/etc/kernel/postinst.d/zz-systemd-boot" "$R/etc/kernel/postrm.d/zz-systemd-boot" "$R/etc/initramfs/post-update.d/systemd-boot"

log "customise: kernel modules"
kver=$(cd "$R/lib/modules" && ls | head -1)
[ -n "$kver" ] || die "no kernel in the rootfs"
echo "$kver" > "$STAGE_DIR/kver"
mdir=$R/lib/modules/$kver
before=$(du -sm "$mdir" | cut -f1)
keep=$(mktemp); trap 'rm -f "$keep" "$keep.all"' EXIT
# modules.dep: "kernel/path/a.ko: kernel/path/dep.ko ..." (possibly compressed .ko.xz)
sed -n 's|^kernel/\([^:]*\):.*|\1|p' "$mdir/modules.dep" | grep -E -f <(grep -vE '^\s*(#|$)' "$CONFIG_DIR/modules.keep") > "$keep" || true
# dependency closure
cp "$keep" "$keep.all"
while :; do
    n=$(wc -l < "$keep.all")
    grep -F -f <(sed 's|^|kernel/|; s|$|:|' "$keep.all") "$mdir/modules.dep" \
        | cut -d: -f2 | tr ' ' '\n' | sed -n 's|^kernel/||p' >> "$keep.all"
    sort -u -o "$keep.all" "$keep.all"
    [ "$(wc -l < "$keep.all")" -eq "$n" ] && break
done
(cd "$mdir/kernel" && find . -name '*.ko*' | sed 's|^\./||' | grep -vxF -f "$keep.all" | xargs -r rm -f)
find "$mdir/kernel" -type d -empty -delete
in_root depmod -a "$kver"
log "   modules: $(wc -l < "$keep.all") kept, ${before} MiB -> $(du -sm "$mdir" | cut -f1) MiB"
rm -rf "$R/usr/lib/firmware" "$R/lib/firmware" 2>/dev/null || true

log "customise: initrd (dracut)"
in_root dracut --force --quiet --reproducible --no-hostonly --kver "$kver" "/boot/initrd.img-$kver"
cp "$R/boot/vmlinuz-$kver" "$STAGE_DIR/vmlinuz"
cp "$R/boot/initrd.img-$kver" "$STAGE_DIR/initrd.img"
cp "$R/usr/lib/os-release" "$STAGE_DIR/os-release"
in_root lsinitrd "/boot/initrd.img-$kver" > "$STAGE_DIR/initrd.list" 2>&1 || true

log "customise: cleanup for reproducibility"
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb \
       "$R"/var/cache/debconf/*-old "$R"/var/lib/dpkg/*-old "$R"/var/cache/ldconfig/aux-cache \
       "$R"/var/log/* "$R"/var/cache/man "$R"/tmp/* "$R"/var/tmp/* \
       "$R"/etc/ssh "$R"/var/lib/systemd/random-seed "$R"/etc/.pwd.lock "$R"/etc/*- \
       "$R"/var/lib/systemd/catalog/database \
       "$R"/var/lib/tpm2-tss   # recreated by tmpfiles.d on the /var tmpfs; its default ACL does not fit in squashfs
find "$R" -xdev -name '__pycache__' -prune -exec rm -rf {} +
