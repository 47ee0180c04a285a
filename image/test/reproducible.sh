#!/usr/bin/env bash
# Reproducibility check: build the image twice from scratch (separate work/out dirs, shared .deb
# cache, same SOURCE_DATE_EPOCH and binaries) and compare. Asserts the same root hash and the same
# root.squashfs; reports every other artefact as identical or not. On a squashfs mismatch the two
# root trees are compared file by file.
# With REPRO_REFERENCE=1 (make image-test) the image already built in image/out (work/build) is
# build 1, and only one more build is made.
set -Eeuo pipefail
IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$IMAGE_DIR/lib/common.sh"
R=$IMAGE_DIR/work/repro
export SOURCE_DATE_EPOCH; SOURCE_DATE_EPOCH=$(source_date_epoch)
rm -rf "$R"; mkdir -p "$R"

# build N: one retry, because a build that fails on the network (a mirror mid-sync, a dropped
# connection) says nothing about reproducibility. Exit 2 if it fails twice.
build() {
    local n=$1 try skip=0
    [ "$n" = 2 ] && [ -x "$REPO_DIR/target/release/vaultd" ] && skip=1     # the second build reuses the binaries of the first
    for try in 1 2; do
        log "reproducible: build $n (try $try)"
        if IMAGE_WORK=$R/work$n IMAGE_OUT=$R/out$n IMAGE_SKIP_CARGO=${IMAGE_SKIP_CARGO:-$skip} \
            bash "$IMAGE_DIR/build.sh" > "$R/build$n.log" 2>&1; then return 0; fi
        echo "── build $n failed (try $try); its last lines:"
        tail -30 "$R/build$n.log"
        cp "$R/build$n.log" "$R/build$n.try$try.log"
        [ "$try" = 2 ] || sleep 20
    done
    echo "REPRO: build $n failed twice (logs: $R/build$n.try*.log); this is a build failure, not a root-hash difference"
    exit 2
}
# package versions installed in a build's root (a mirror update between two builds changes them)
packages() { dpkg-query --admindir="$R/work$1/rootfs/var/lib/dpkg" -W -f='${Package} ${Version}\n' 2>/dev/null | sort; }

builds="1 2"
if [ "${REPRO_REFERENCE:-0}" = 1 ]; then
    [ -f "$OUT_DIR/roothash" ] || die "REPRO_REFERENCE=1 needs a built image in $OUT_DIR"
    ln -sfn "$OUT_DIR" "$R/out1"
    ln -sfn "$WORK_DIR" "$R/work1"
    builds=2
fi
for n in $builds; do build "$n"; done
if [ "$(cat "$R/out1/roothash")" != "$(cat "$R/out2/roothash")" ] && ! cmp -s <(packages 1) <(packages 2); then
    # Not the same inputs: the Debian mirror published new versions between the two builds.
    # Say which, then build twice more back to back, so that both builds see one mirror state.
    echo "── the mirror changed between the builds (package versions differ):"
    diff <(packages 1) <(packages 2) | head -20 || true
    rm -rf "$R/out1" "$R/work1" "$R/out2" "$R/work2"     # out1/work1 may be symlinks to the reference: only the links go
    build 1; build 2
fi

fail=0
same() { cmp -s "$1" "$2"; }
echo "── reproducibility (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
h1=$(cat "$R/out1/roothash"); h2=$(cat "$R/out2/roothash")
printf '  %-26s %s\n' "root hash build 1" "$h1" "root hash build 2" "$h2"
[ "$h1" = "$h2" ] || fail=1
for f in root.squashfs root.verity uki-a.efi uki-b.efi pcr11-a pcr11-b pcrsig-a.json pcrsig-b.json disk.raw disk.raw.zst; do
    [ -e "$R/out1/$f" ] || continue
    if same "$R/out1/$f" "$R/out2/$f"; then r=identical; else r=DIFFERENT; fi
    printf '  %-26s %s  %s\n' "$f" "$r" "$(sha256sum "$R/out1/$f" | cut -c1-16)…"
    if [ "$f" = root.squashfs ] && [ $r = DIFFERENT ]; then fail=1; fi
done
for f in initrd.img vmlinuz esp.img; do
    if same "$R/work1/stage/$f" "$R/work2/stage/$f"; then r=identical; else r=DIFFERENT; fi
    printf '  %-26s %s\n' "$f" "$r"
done
if [ $fail -ne 0 ]; then
    echo "── root trees differ in:"
    (cd "$R/work1/rootfs" && find . -xdev ! -path './boot*' -printf '%p %m %U:%G %l\n' | sort) > "$R/meta1"
    (cd "$R/work2/rootfs" && find . -xdev ! -path './boot*' -printf '%p %m %U:%G %l\n' | sort) > "$R/meta2"
    diff "$R/meta1" "$R/meta2" | head -20 || true
    diff -rq --no-dereference "$R/work1/rootfs" "$R/work2/rootfs" 2>/dev/null | grep -v '/boot/' | head -40 || true
    echo "REPRO: root hash differs between two builds of the same inputs"
    echo "0 passed, 1 failed"
    exit 1
fi
echo "root hash and root.squashfs reproducible"
echo "1 passed, 0 failed"
