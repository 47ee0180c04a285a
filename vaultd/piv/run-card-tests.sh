#!/usr/bin/env bash
# Runs vault-piv's tests against a virtual YubiKey (tests/piv-card), end to end:
#
#   1. installs the Debian 12 packages it needs if missing (as root):
#      pcscd libpcsclite-dev vsmartcard-vpcd libclang-dev opensc
#   2. builds tests/piv-card (its own workspace; target dir $PIV_CARD_TARGET_DIR,
#      default tests/piv-card/target) and makes a throw-away attestation CA;
#   3. starts a private pcscd (tests/piv-card/run-pcscd.sh, nothing in /etc changes)
#      and one card with that CA and a state directory;
#   4. runs `cargo test` for vault-piv with VAULT_PIV_CARD_SERIAL and
#      VAULT_PIV_ATTESTATION_ROOT set (extra arguments go to `cargo test`);
#   5. restarts the card on the same state and runs the `after_card_restart` test
#      (keys and attestation records survive), then piv-smoke with attestation;
#   6. starts two more cards and runs vaultctl's custodian commands with the
#      three of them against the real vaultd (tests/tests/vaultctl_custodian.rs);
#   7. always stops the card and pcscd (trap), and removes the temp dir.
#
# Usage: vaultd/piv/run-card-tests.sh [cargo test args...]
# Only one pcscd can run per host: don't run two of these at once. If a system pcscd
# (socket-activated by systemd) is active it is stopped for the run and started again.
# Honours CARGO_TARGET_DIR / CARGO_BUILD_JOBS for vault-piv as cargo does.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CARD_DIR=$ROOT/tests/piv-card
SERIAL=${VAULT_PIV_TEST_SERIAL:-31415926}
PKGS=(pcscd libpcsclite-dev vsmartcard-vpcd libclang-dev opensc)

log() { printf '[run-card-tests] %s\n' "$*" >&2; }
t0=$SECONDS

# --- 1. packages --------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        log "missing packages: ${missing[*]} (run as root, or: apt-get install -y ${missing[*]})"
        exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- temp dir and cleanup -------------------------------------------------------
WORK=$(mktemp -d /tmp/vault-piv-cards.XXXXXX)
export PIV_PCSCD_DIR=$WORK/pcscd
CARD_PID=
EXTRA_PIDS=()
STOPPED_SYSTEM_PCSCD=
cleanup() {
    rc=$?
    set +e
    if [ -n "$CARD_PID" ]; then kill "$CARD_PID" 2>/dev/null; wait "$CARD_PID" 2>/dev/null; fi
    for p in "${EXTRA_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    "$CARD_DIR/run-pcscd.sh" stop >/dev/null 2>&1
    if [ $rc -ne 0 ]; then
        for f in "$WORK"/card*.log "$PIV_PCSCD_DIR/pcscd.log"; do
            [ -s "$f" ] && { log "--- tail of $f"; tail -n 30 "$f" >&2; }
        done
    fi
    if [ -n "$STOPPED_SYSTEM_PCSCD" ]; then systemctl start pcscd.socket >/dev/null 2>&1; fi
    rm -rf "$WORK"
    log "done in $((SECONDS - t0)) s, exit $rc"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pcscd.socket 2>/dev/null; then
    log "stopping the system pcscd for this run (only one pcscd per host)"
    systemctl stop pcscd.socket pcscd.service
    STOPPED_SYSTEM_PCSCD=1
fi

# --- 2. build the card ---------------------------------------------------------
PIV_CARD_TARGET_DIR=${PIV_CARD_TARGET_DIR:-$CARD_DIR/target}
log "building tests/piv-card"
tb=$SECONDS
(cd "$CARD_DIR" && CARGO_TARGET_DIR=$PIV_CARD_TARGET_DIR cargo build --locked --bins)
log "piv-card built in $((SECONDS - tb)) s"
CARD_BIN=$PIV_CARD_TARGET_DIR/debug/piv-card
"$CARD_BIN" make-attestation-ca "$WORK/ca"

# Build the tests before any card runs (a cold build takes minutes).
log "building vault-piv tests"
tb=$SECONDS
(cd "$HERE" && cargo test --no-run)
log "vault-piv built in $((SECONDS - tb)) s"

# --- 3. pcscd + card -----------------------------------------------------------
start_card() { # $1: log file
    "$CARD_BIN" --port 35963 --serial "$SERIAL" --attestation-ca "$WORK/ca" \
        --state-dir "$WORK/card" >"$1" 2>&1 &
    CARD_PID=$!
    "$CARD_DIR/run-pcscd.sh" wait-card 1 15
}
stop_card() {
    kill "$CARD_PID" 2>/dev/null || true
    wait "$CARD_PID" 2>/dev/null || true
    CARD_PID=
}
# Two readers = four card ports: the card under test, and two more for the
# three-custodian vaultctl flows (step 6).
"$CARD_DIR/run-pcscd.sh" start 2 >&2
start_card "$WORK/card1.log"
log "card $SERIAL up (attestation CA $WORK/ca)"

# --- 4. the tests --------------------------------------------------------------
export VAULT_PIV_CARD_SERIAL=$SERIAL
export VAULT_PIV_ATTESTATION_ROOT=$WORK/ca/root.pem
tt=$SECONDS
(cd "$HERE" && cargo test "$@")
log "vault-piv tests passed in $((SECONDS - tt)) s"

# --- 5. restart: state survives ------------------------------------------------
stop_card
# vpcd must notice the card is gone before the new one attaches.
sleep 0.5
start_card "$WORK/card2.log"
(cd "$HERE" && VAULT_PIV_AFTER_RESTART=1 cargo test --test card after_card_restart)
log "after_card_restart passed"
"$PIV_CARD_TARGET_DIR/debug/piv-smoke" --attestation-ca "$WORK/ca" "$SERIAL"

# --- 6. vaultctl's custodian commands with the card, against the real vaultd -----
for i in 1 2; do
    "$CARD_BIN" --port $((35963 + i)) --serial $((SERIAL + i)) --attestation-ca "$WORK/ca" \
        --state-dir "$WORK/card-$i" >"$WORK/card-extra$i.log" 2>&1 &
    EXTRA_PIDS+=($!)
done
"$CARD_DIR/run-pcscd.sh" wait-card 3 20
export VAULT_PIV_CARD_SERIALS="$SERIAL,$((SERIAL + 1)),$((SERIAL + 2))"
log "vaultctl custodian flows with three cards ($VAULT_PIV_CARD_SERIALS)"
(cd "$ROOT" && cargo build -q -p vaultd -p vaultctl --bins \
    && cargo test -q -p vault-e2e --test vaultctl_custodian)
log "vaultctl custodian flows passed"
