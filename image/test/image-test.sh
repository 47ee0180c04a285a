#!/usr/bin/env bash
# make image-test: build the appliance image and an update bundle, boot them under QEMU (TCG, OVMF,
# swtpm) and drive them from the host through a forwarded port, reading verdicts from the serial
# console and the API. Every boot has a hard time limit.
#
#   1. first boot: ceremony over the pinned one-time identity (vaultctl init), secret stored and
#      checked out over mTLS
#   2. reboot, same swtpm: unseals by itself, same value
#   3. same disk, fresh swtpm: stays sealed, tpm_data_volume_locked (status over the pinned identity)
#   4. same disk and TPM, a kernel image whose command line was changed (not signed): sealed,
#      tpm_pcr_mismatch
#   5. a byte flipped in root-a: dm-verity corruption, vaultd never serves
#   6. vaultctl update apply (bundle of the next build): slot B boots, unseals without a re-seal,
#      same value, boot blessed, update audited
#   7. two builds of the same commit give the same root hash (image/test/reproducible.sh; skipped
#      with IMAGE_TEST_REPRO=0)
#
# Env: IMAGE_TEST_TIMEOUT (per boot, default 480 s), IMAGE_TEST_PORT (default 18543),
#      IMAGE_TEST_REBUILD=0 to reuse image/out and work/out-next.
set -Eeuo pipefail
IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$IMAGE_DIR/lib/common.sh"
. "$IMAGE_DIR/test/lib.sh"

TIMEOUT=${IMAGE_TEST_TIMEOUT:-480}
PORT=${IMAGE_TEST_PORT:-18543}
ADDR=https://127.0.0.1:$PORT
T=$IMAGE_DIR/work/image-test
NEXT_OUT=$IMAGE_DIR/work/out-next
VAULTCTL=$REPO_DIR/target/release/vaultctl
T_START=$SECONDS
PASS=0 FAIL=0
RESULTS=()
TIMES=()

ok()  { PASS=$((PASS + 1)); RESULTS+=("PASS  $*"); printf '\033[32mPASS\033[0m %s\n' "$*"; }
bad() { FAIL=$((FAIL + 1)); RESULTS+=("FAIL  $*"); printf '\033[31mFAIL\033[0m %s\n' "$*"; }
not() { ! "$@"; }
check() { # DESC COMMAND...
    local d=$1; shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}
# await DESC PATTERN LOG [TIMEOUT]: records the elapsed time
await() {
    if wait_serial "$2" "$3" "${4:-$TIMEOUT}"; then
        ok "$1 (t+${WAIT_ELAPSED}s)"
        TIMES+=("$1: ${WAIT_ELAPSED}s")
    else
        bad "$1 (timeout)"
        return 1
    fi
}
# the last field of the last serial line matching PATTERN
serial_field() { sed 's/\x1b\[[0-9;]*m//g; s/\r//g' "$2" | grep -aE -- "$1" | tail -1 | awk '{print $NF}'; }
# count PATTERN LOG
serial_count() { sed 's/\x1b\[[0-9;]*m//g' "$2" 2>/dev/null | grep -acE -- "$1" || true; }
# await_count DESC PATTERN LOG N TIMEOUT: the N-th occurrence
await_count() {
    local i
    for i in $(seq "$5"); do
        if [ "$(serial_count "$2" "$3")" -ge "$4" ]; then
            ok "$1 (t+${i}s)"; TIMES+=("$1: ${i}s"); return 0
        fi
        sleep 1
    done
    bad "$1 (timeout)"; serial_tail "$3" 40; return 1
}
admin() { "$VAULTCTL" --addr "$ADDR" --cacert "$T/admin/ca.pem" --cert "$T/admin/admin.pem" --key "$T/admin/admin-key.pem" "$@"; }
as() { local who=$1; shift; "$VAULTCTL" --addr "$ADDR" --cacert "$T/admin/ca.pem" --cert "$T/certs/$who.pem" --key "$T/certs/$who-key.pem" "$@"; }
# wait until the mTLS API answers (sealed or not) for up to $1 s
await_api() {
    local i
    for i in $(seq "$1"); do
        admin --json status >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}
finish() {
    echo
    echo "== image-test: $PASS passed, $FAIL failed, $((SECONDS - T_START)) s"
    printf '  %s\n' "${RESULTS[@]}"
    echo "timings:"
    printf '  %s\n' "${TIMES[@]}"
    [ "$FAIL" -eq 0 ]
}

# ---------------------------------------------------------------- build
if [ "${IMAGE_TEST_REBUILD:-1}" = 1 ] || [ ! -f "$OUT_DIR/disk.raw" ]; then
    t0=$SECONDS
    bash "$IMAGE_DIR/build.sh"
    TIMES+=("build (image A): $((SECONDS - t0))s")
fi
BUILD_A=$(sed -n 's/.*"build": *\([0-9]*\).*/\1/p' "$OUT_DIR/manifest.json" | head -1)
[ -n "$BUILD_A" ] || die "no build number in $OUT_DIR/manifest.json"
if [ "${IMAGE_TEST_REBUILD:-1}" = 1 ] || ! ls "$NEXT_OUT"/update-*.vupd >/dev/null 2>&1; then
    t0=$SECONDS
    IMAGE_BUILD=$((BUILD_A + 1)) IMAGE_OUT=$NEXT_OUT IMAGE_WORK=$IMAGE_DIR/work/build-next bash "$IMAGE_DIR/build.sh"
    TIMES+=("build (update B): $((SECONDS - t0))s")
fi
BUNDLE=$(ls "$NEXT_OUT"/update-*.vupd | head -1)
[ -x "$VAULTCTL" ] || die "$VAULTCTL missing (make image builds it)"
for p in qemu-system-x86 ovmf swtpm swtpm-tools mtools binutils fdisk; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends "$p"; }
done

rm -rf "$T"
mkdir -p "$T/admin" "$T/certs"
cp --sparse=always "$OUT_DIR/disk.raw" "$T/a.raw"

# ---------------------------------------------------------------- 1. first boot
echo "== 1. first boot: remote init over the pinned one-time identity"
boot_vm "$T/a.raw" "$T/tpm-a" "$T/boot1.log" "$PORT" noreboot
if await "first boot: ceremony offered on the console" 'vaultd: one-time init code ' "$T/boot1.log"; then
    FP=$(serial_field 'bootstrap TLS certificate sha256 ' "$T/boot1.log")
    CODE=$(serial_field 'one-time init code ' "$T/boot1.log")
    t0=$SECONDS
    if "$VAULTCTL" --addr "$ADDR" init --pin-fingerprint "$FP" --code "$CODE" --out "$T/admin" > "$T/init.out" 2>&1; then
        ok "vaultctl init over the pinned identity ($((SECONDS - t0)) s)"
        TIMES+=("remote init (seal, CA, certificates): $((SECONDS - t0))s")
    else
        bad "vaultctl init: $(cat "$T/init.out")"
    fi
    cat "$T/init.out"
    check "init reported the API unsealed" grep -q "answering with the new credentials, unsealed" "$T/init.out"
    check "console: bootstrap identity destroyed" serial_has 'bootstrap identity destroyed' "$T/boot1.log"
    admin cert issue --role writer --name writer --out-dir "$T/certs" >/dev/null
    admin cert issue --role pam --name pam --grant cloud/ --out-dir "$T/certs" >/dev/null
    admin cert issue --role auditor --name auditor --out-dir "$T/certs" >/dev/null
    printf 'Root-Pa55-%s' "$BUILD_A" > "$T/value"
    check "writer stores cloud/root" as writer secret put cloud/root --value-file "$T/value"
    VALUE=$(as pam checkout cloud/root --reason image-test | tail -1)
    check "pam checks out the same value over mTLS" test "$VALUE" = "$(cat "$T/value")"
fi
stop_vm 90

# ---------------------------------------------------------------- 2. reboot, same TPM
echo "== 2. reboot with the same swtpm: unseals by itself"
boot_vm "$T/a.raw" "$T/tpm-a" "$T/boot2.log" "$PORT" noreboot
if await "reboot: vaultd unsealed by itself" 'vaultd: UNSEALED' "$T/boot2.log"; then
    check "no ceremony on an initialised box" not grep -aq 'one-time init code' "$T/boot2.log"
    VALUE=$(as pam checkout cloud/root --reason after-reboot | tail -1)
    check "same value after the reboot" test "$VALUE" = "$(cat "$T/value")"
fi
stop_vm 90

# ---------------------------------------------------------------- 3. fresh TPM
echo "== 3. the same disk with a fresh swtpm"
cp --sparse=always "$T/a.raw" "$T/c.raw"
boot_vm "$T/c.raw" "$T/tpm-c" "$T/boot3.log" "$PORT" noreboot
if await "fresh TPM: sealed, data volume locked" 'vaultd: SEALED \[tpm_data_volume_locked\]' "$T/boot3.log"; then
    FP3=$(serial_field 'status-only TLS certificate sha256 ' "$T/boot3.log")
    check "fresh TPM: no ceremony offered" not grep -aq 'one-time init code' "$T/boot3.log"
    # curl -k with the fingerprint checked by hand: what an operator would do.
    if openssl s_client -connect "127.0.0.1:$PORT" </dev/null 2>/dev/null | openssl x509 -outform DER 2>/dev/null |
        sha256sum | grep -q "^$FP3"; then
        ok "fresh TPM: status served under the printed fingerprint"
    else
        bad "fresh TPM: status identity does not match the console"
    fi
    H=$(curl -sk "$ADDR/v1/sys/health" || true)
    check "fresh TPM: API reason tpm_data_volume_locked ($H)" grep -q '"code":"tpm_data_volume_locked"' <<< "$H"
    check "fresh TPM: the admin's mTLS credentials are refused (no vault here)" not admin status
fi
stop_vm 60
rm -f "$T/c.raw" "$T/c.raw.vars"

# ---------------------------------------------------------------- 4. unsigned kernel image
echo "== 4. the same disk and TPM, kernel command line changed (not signed)"
cp --sparse=always "$T/a.raw" "$T/d.raw"
cp "$T/a.raw.vars" "$T/d.raw.vars"
cp -a "$T/tpm-a" "$T/tpm-d"
ESP_START=$(sfdisk --json "$T/d.raw" | python3 -c 'import json,sys; p=[x for x in json.load(sys.stdin)["partitiontable"]["partitions"] if x.get("name")=="esp"][0]; print(p["start"]*512)')
objcopy -O binary --only-section=.cmdline "$OUT_DIR/uki-a.efi" "$T/cmdline"
printf '%s vault.test=unsigned' "$(tr -d '\0' < "$T/cmdline")" > "$T/cmdline.mod"
objcopy --remove-section .cmdline --add-section .cmdline="$T/cmdline.mod" --change-section-vma .cmdline=0x30000 \
    "$OUT_DIR/uki-a.efi" "$T/uki-mod.efi"
mcopy -o -i "$T/d.raw@@$ESP_START" "$T/uki-mod.efi" "::/EFI/Linux/vault_${BUILD_A}_a.efi"
boot_vm "$T/d.raw" "$T/tpm-d" "$T/boot4.log" "$PORT" noreboot
if await "unsigned kernel image: vaultd sealed, tpm_pcr_mismatch" 'vaultd: SEALED \[tpm_pcr_mismatch\]' "$T/boot4.log"; then
    check "unsigned kernel image booted (its command line is in the log)" serial_has 'vault.test=unsigned' "$T/boot4.log"
    S=$(admin --json status 2>&1 || true)
    check "unsigned kernel image: API sealed with tpm_pcr_mismatch" grep -q 'tpm_pcr_mismatch' <<< "$S"
    check "unsigned kernel image: checkout refused" not as pam checkout cloud/root --reason x
fi
stop_vm 60
rm -rf "$T/d.raw" "$T/d.raw.vars" "$T/tpm-d"

# ---------------------------------------------------------------- 5. tampered root
echo "== 5. a byte flipped in root-a"
cp --sparse=always "$OUT_DIR/disk.raw" "$T/e.raw"
ROOT_START=$(sfdisk --json "$T/e.raw" | python3 -c 'import json,sys; p=[x for x in json.load(sys.stdin)["partitiontable"]["partitions"] if x.get("name")=="root-a"][0]; print(p["start"]*512)')
# a byte in data block 0 after the squashfs superblock (which every mount reads): only dm-verity
# can tell. (dm-verity checks a block when it is read: a flipped byte in a block nothing reads is
# found when something first reads it, and that read panics the box.)
OFF=$((ROOT_START + 2048))
python3 - "$T/e.raw" "$OFF" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xFF]))
PY
boot_vm "$T/e.raw" "$T/tpm-e" "$T/boot5.log" "$PORT" noreboot
await "tampered root: dm-verity reports corruption" 'data block [0-9]+ is corrupted' "$T/boot5.log" || true
await "tampered root: kernel panic" 'Kernel panic' "$T/boot5.log" 60 || true
# it must never serve: give it the time a good boot needs to reach vaultd
wait_vm_exit 120 || true
check "tampered root: vaultd never started" not grep -aq 'vaultd:' "$T/boot5.log"
check "tampered root: the API never answered" not curl -sk --max-time 3 -o /dev/null "$ADDR/v1/sys/health"
stop_vm 10
rm -f "$T/e.raw" "$T/e.raw.vars"

# ---------------------------------------------------------------- 6. A/B update
echo "== 6. update to build $((BUILD_A + 1)) through vaultctl update apply"
boot_vm "$T/a.raw" "$T/tpm-a" "$T/boot6.log" "$PORT" reboot
if await "update: slot A unsealed" 'vaultd: UNSEALED' "$T/boot6.log"; then
    await_api 60 || true
    t0=$SECONDS
    if admin update apply "$BUNDLE" > "$T/apply.out" 2>&1; then
        ok "update apply: bundle staged ($(stat -c %s "$BUNDLE") bytes in $((SECONDS - t0)) s)"
        TIMES+=("update upload + verify: $((SECONDS - t0))s")
    else
        bad "update apply: $(cat "$T/apply.out")"
    fi
    cat "$T/apply.out"
    await "update: installer wrote slot B" 'update .* installed in slot b' "$T/boot6.log" 300 || true
    await_count "update: slot B booted and unsealed (no re-seal)" 'vaultd: UNSEALED' "$T/boot6.log" 2 "$TIMEOUT" || true
    check "update: booted with vault.slot=b" serial_has 'vault.slot=b' "$T/boot6.log"
    await_api 60 || true
    ST=$(admin --json update status 2>&1 || true)
    echo "$ST"
    check "update: running build $((BUILD_A + 1)) on slot b" python3 -c '
import json, sys
v = json.loads(sys.argv[1]); ok = v["slot"] == "b" and v["version"].endswith("+" + sys.argv[2])
sys.exit(0 if ok else 1)' "$ST" "$((BUILD_A + 1))"
    VALUE=$(as pam checkout cloud/root --reason after-update | tail -1)
    check "update: same value after the update (data intact)" test "$VALUE" = "$(cat "$T/value")"
    await "update: new slot blessed" 'vault-healthy: vaultd ready' "$T/boot6.log" 120 || true
    sleep 3
    AUD=$(as auditor --json audit tail -n 200 2>&1 || true)
    check "update: no false rollback" not serial_has 'UPDATE ROLLED BACK' "$T/boot6.log"
    for a in sys.update.stage sys.boot sys.update.complete; do
        check "update: audited $a" grep -q "\"$a\"" <<< "$AUD"
    done
fi
stop_vm 90

# ---------------------------------------------------------------- 7. reproducibility
if [ "${IMAGE_TEST_REPRO:-1}" = 1 ] && [ -f "$IMAGE_DIR/test/reproducible.sh" ]; then
    echo "== 7. reproducible root"
    t0=$SECONDS
    rc=0; REPRO_REFERENCE=1 bash "$IMAGE_DIR/test/reproducible.sh" || rc=$?
    case $rc in
        0) ok "two builds give the same root hash" ;;
        2) bad "reproducibility: the second build failed twice (image/work/repro/build2.try*.log): $(grep -a 'ERROR\|E:' "$IMAGE_DIR/work/repro/build2.log" | tail -1 | cut -c1-160)" ;;
        *) bad "root hash differs between two builds of the same inputs (exit $rc)" ;;
    esac
    TIMES+=("reproducibility check: $((SECONDS - t0))s")
fi

finish
