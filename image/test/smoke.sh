#!/usr/bin/env bash
# Boot smoke test of the appliance image under QEMU (TCG) + swtpm, asserted from the serial console:
#   1. first boot: UKI + dm-verity root, data partition created (LUKS2, TPM2) and mounted,
#      SoftHSM token initialised, vaultd.service started, no login prompt anywhere
#   2. reboot, same TPM: the data volume unlocks again, nothing re-created
#   3. same disk, foreign (fresh) TPM: no unlock, no password prompt, the boot goes on, vaultd starts
#   4. root-a tampered: dm-verity reports corruption, vaultd never starts
# Uses image/out/disk.raw (built first if missing; SMOKE_REBUILD=1 forces a build).
# Env: SMOKE_TIMEOUT (per boot, default 420 s), SMOKE_PORT (host port, default 18443), SMOKE_ONLY="1 2 3 4".
set -Eeuo pipefail
IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$IMAGE_DIR/lib/common.sh"
. "$IMAGE_DIR/test/lib.sh"

TIMEOUT=${SMOKE_TIMEOUT:-420}
PORT=${SMOKE_PORT:-18443}
ONLY=${SMOKE_ONLY:-1 2 3 4}
T=$IMAGE_DIR/work/smoke
PASS=0 FAIL=0
RESULTS=()

need=()
for p in qemu-system-x86 ovmf swtpm swtpm-tools socat fdisk; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y -q --no-install-recommends "${need[@]}" || { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; }
fi
if [ "${SMOKE_REBUILD:-0}" = 1 ] || [ ! -f "$OUT_DIR/disk.raw" ]; then
    bash "$IMAGE_DIR/build.sh"
fi

ok()   { PASS=$((PASS + 1)); RESULTS+=("PASS  $*"); printf '\033[32mPASS\033[0m %s\n' "$*"; }
bad()  { FAIL=$((FAIL + 1)); RESULTS+=("FAIL  $*"); printf '\033[31mFAIL\033[0m %s\n' "$*"; }
# expect DESC PATTERN LOG / expect_not DESC PATTERN LOG (already in the log)
expect()     { if serial_has "$2" "$3"; then ok "$1"; else bad "$1 (no /$2/)"; fi; }
expect_not() { if serial_has "$2" "$3"; then bad "$1 (found /$2/: $(sed 's/\x1b\[[0-9;]*m//g' "$3" | grep -aEm1 -- "$2"))"; else ok "$1"; fi; }
# await DESC PATTERN LOG [TIMEOUT]
await() { if wait_serial "$2" "$3" "${4:-$TIMEOUT}"; then ok "$1 (t+${WAIT_ELAPSED}s)"; else bad "$1 (timeout)"; fi; }
on() { [[ " $ONLY " == *" $1 "* ]]; }

# console lines (ANSI stripped; systemd shortens unit names on the status console)
P_UKI='Command line: roothash=[0-9a-f]{64} .*vault\.slot=a'
P_VERITY_OK='Finished systemd-verityset.*Verity Protection Setup for root'
P_SYSROOT='Mounted sysroot\.mount'
P_REPART_NEW='Successfully encrypted future partition'
P_UNLOCKED='vault-data: data volume unlocked \(LUKS2 [0-9a-f-]+, tpm2 tokens: 1\)'
P_TOKEN_NEW="vault-data: SoftHSM token 'vaultd' initialised"
P_TOKEN_OLD='vault-data: SoftHSM token present'
P_VAULTD='Started vaultd\.service'
P_ESP='Mounted efi\.mount'
P_MULTIUSER='Reached target multi-user\.target'
P_LOGIN='login:|Login incorrect|Password:'
P_PASSPHRASE='Please enter passphrase|Enter passphrase|[Pp]assword for'
P_CRYPT_FAIL='Failed to start systemd-cryptsetu.*vaultdata|Dependency failed for .*/var/lib/vault|Failed to activate with TPM2|failed to unseal|Failed to unseal'
P_VAULTD_STATUS='^vaultd: (NOT INITIALISED|SEALED|UNSEALED)'
P_VAULTD_FPR='^vaultd: [a-z -]*TLS certificate sha256 [0-9a-f]{64}'
P_EMERGENCY='emergency mode|Emergency Shell|You are in emergency'
P_CORRUPT='device-mapper: verity: .*is corrupted|Kernel panic - not syncing: dm-verity device corrupted'

# check_listener TAG LOG: vaultd's TLS listener answers on the forwarded port with the
# certificate whose fingerprint it printed on the console
check_listener() {
    local tag=$1 log=$2 fpr got=
    if ! wait_serial "$P_VAULTD_FPR" "$log" 30; then bad "$tag: vaultd printed no TLS fingerprint"; return; fi
    fpr=$(sed 's/\x1b\[[0-9;]*m//g; s/\r//g' "$log" | grep -aEo 'TLS certificate sha256 [0-9a-f]{64}' | tail -1 | awk '{print $4}')
    local i
    for i in $(seq 20); do
        got=$(timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -servername vault.appliance.internal </dev/null 2>/dev/null \
              | openssl x509 -outform DER 2>/dev/null | sha256sum | cut -d' ' -f1) || true
        [ "$got" = "$fpr" ] && break
        sleep 3
    done
    if [ "$got" = "$fpr" ]; then ok "$tag: :8443 reachable via virtio-net + hostfwd, TLS certificate = console fingerprint"
    else bad "$tag: TLS on 127.0.0.1:$PORT gave ${got:-nothing}, console fingerprint $fpr"; fi
}

rm -rf "$T"; mkdir -p "$T"
log "smoke: image $(cat "$OUT_DIR/roothash" 2>/dev/null || echo '?') in $T"
BOOT_TIMES=()

boot_and_settle() { # DISK TPM LOG: boot, wait for vaultd (or failure), give it a few seconds, stop
    boot_vm "$1" "$2" "$3" "$PORT" noreboot
}

# ── 1. first boot ───────────────────────────────────────────────────────────────────────────
if on 1 || on 2 || on 3; then
    cp --sparse=always "$OUT_DIR/disk.raw" "$T/a.raw"
    L=$T/a-boot1.log
    log "smoke 1: first boot (machine A, fresh TPM A)"
    boot_and_settle "$T/a.raw" "$T/tpm-a" "$L"
    await "boot1: vaultd.service started" "$P_VAULTD" "$L"
    BOOT_TIMES+=("first boot -> vaultd started: ${WAIT_ELAPSED:-?}s")
    await "boot1: vaultd printed its status on the serial console" "$P_VAULTD_STATUS" "$L" 60
    check_listener boot1 "$L"
    stop_vm 90
    expect "boot1: UKI booted with the slot-a command line (roothash=)" "$P_UKI" "$L"
    expect "boot1: root is dm-verity (veritysetup finished, dm-verity active)" "$P_VERITY_OK" "$L"
    expect "boot1: dm-verity target loaded" 'device-mapper: verity' "$L"
    expect "boot1: /sysroot mounted from /dev/mapper/root" "$P_SYSROOT" "$L"
    expect "boot1: data partition created + LUKS2-encrypted by systemd-repart" "$P_REPART_NEW" "$L"
    expect "boot1: data volume unlocked via TPM2 and mounted" "$P_UNLOCKED" "$L"
    expect "boot1: SoftHSM token initialised" "$P_TOKEN_NEW" "$L"
    expect "boot1: ESP mounted (read-only) at /efi" "$P_ESP" "$L"
    expect "boot1: reached multi-user.target" "$P_MULTIUSER" "$L"
    expect_not "boot1: no login prompt" "$P_LOGIN" "$L"
    expect_not "boot1: no emergency mode" "$P_EMERGENCY" "$L"
fi

# ── 2. reboot, same TPM ─────────────────────────────────────────────────────────────────────
if on 2; then
    L=$T/a-boot2.log
    log "smoke 2: reboot machine A (same disk, same TPM)"
    boot_and_settle "$T/a.raw" "$T/tpm-a" "$L"
    await "boot2: data volume unlocked again via TPM2" "$P_UNLOCKED" "$L"
    await "boot2: vaultd.service started" "$P_VAULTD" "$L" 120
    BOOT_TIMES+=("reboot -> vaultd started: ${WAIT_ELAPSED:-?}s")
    await "boot2: vaultd printed its status on the serial console" "$P_VAULTD_STATUS" "$L" 60
    stop_vm 90
    expect "boot2: SoftHSM token kept" "$P_TOKEN_OLD" "$L"
    expect "boot2: ESP mounted (read-only) at /efi" "$P_ESP" "$L"
    expect_not "boot2: nothing re-created by repart" "$P_REPART_NEW" "$L"
    expect_not "boot2: no login prompt" "$P_LOGIN" "$L"
fi

# ── 3. foreign TPM ──────────────────────────────────────────────────────────────────────────
if on 3; then
    cp --sparse=always "$T/a.raw" "$T/c.raw"
    L=$T/c-boot.log
    log "smoke 3: copy of machine A's disk with a fresh TPM"
    boot_and_settle "$T/c.raw" "$T/tpm-c" "$L"
    await "foreign TPM: boot goes on, vaultd.service started (sealed)" "$P_VAULTD" "$L"
    BOOT_TIMES+=("foreign TPM -> vaultd started: ${WAIT_ELAPSED:-?}s")
    await "foreign TPM: vaultd reports SEALED on the console" '^vaultd: SEALED' "$L" 60
    stop_vm 90
    expect "foreign TPM: data volume unlock failed" "$P_CRYPT_FAIL" "$L"
    expect_not "foreign TPM: data volume NOT unlocked" "$P_UNLOCKED" "$L"
    expect_not "foreign TPM: no passphrase prompt" "$P_PASSPHRASE" "$L"
    expect_not "foreign TPM: no login prompt" "$P_LOGIN" "$L"
    expect_not "foreign TPM: no emergency mode" "$P_EMERGENCY" "$L"
    expect_not "foreign TPM: no new data partition" "$P_REPART_NEW" "$L"
fi

# ── 4. tampered root ────────────────────────────────────────────────────────────────────────
if on 4; then
    cp --sparse=always "$OUT_DIR/disk.raw" "$T/t.raw"
    sfdisk --json "$T/t.raw" > "$T/t.json"
    start=$(part_start "$T/t.json" root-a)
    # flip one byte of the squashfs superblock (data block 0, read at mount)
    off=$((start * 512 + 100))
    orig=$(od -An -tu1 -j "$off" -N1 "$T/t.raw" | tr -d ' ')
    printf "$(printf '\\%03o' $(( (orig ^ 0xff) & 0xff )))" | dd of="$T/t.raw" bs=1 seek="$off" conv=notrunc status=none
    log "smoke 4: root-a byte at offset $off flipped ($orig -> $(od -An -tu1 -j "$off" -N1 "$T/t.raw" | tr -d ' '))"
    L=$T/t-boot.log
    boot_vm "$T/t.raw" "$T/tpm-t" "$L" "$PORT" noreboot
    await "tampered: dm-verity reports corruption" "$P_CORRUPT" "$L" 300
    wait_vm_exit 60 || true       # panic-on-corruption + panic=10 -> reboot -> -no-reboot exits
    sleep 1
    stop_vm 10
    expect_not "tampered: vaultd never started" "$P_VAULTD" "$L"
    expect_not "tampered: no login prompt" "$P_LOGIN" "$L"
fi

echo
echo "── smoke summary ($(date -u '+%Y-%m-%dT%H:%M:%SZ'), logs in $T)"
printf '  %s\n' "${RESULTS[@]}"
printf '  %s\n' "${BOOT_TIMES[@]}"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
