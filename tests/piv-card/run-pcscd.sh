#!/usr/bin/env bash
# Start a private pcscd with vsmartcard's vpcd reader driver, without touching /etc.
#
#   run-pcscd.sh start [READERS]   start pcscd in the background (default 1 reader).
#                                  Reader i (0-based) has 2 slots listening on
#                                  127.0.0.1:$((35963 + 2*i)) and $((35964 + 2*i)),
#                                  so READERS=1 gives 2 virtual-card ports.
#   run-pcscd.sh stop              stop the pcscd started here.
#   run-pcscd.sh wait-card [N] [T] wait until `opensc-tool -l` shows N cards (default 1,
#                                  timeout T s, default 10).
#
# State lives in ${PIV_PCSCD_DIR:-/tmp/piv-pcscd}: reader.conf.d/, pcscd.pid, pcscd.log.
# Only one pcscd can run per host (fixed socket /run/pcscd/pcscd.comm): run such tests serially.
set -euo pipefail

DIR=${PIV_PCSCD_DIR:-/tmp/piv-pcscd}
LIBPATH=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
SOCK=/run/pcscd/pcscd.comm

cmd=${1:-start}
case "$cmd" in
start)
    readers=${2:-1}
    [ -e "$LIBPATH" ] || { echo "missing $LIBPATH (apt-get install vsmartcard-vpcd)" >&2; exit 1; }
    if [ -f "$DIR/pcscd.pid" ] && kill -0 "$(cat "$DIR/pcscd.pid")" 2>/dev/null; then
        echo "pcscd already running (pid $(cat "$DIR/pcscd.pid"))" >&2; exit 1
    fi
    if [ -S "$SOCK" ] && pgrep -x pcscd >/dev/null; then
        echo "another pcscd is running; stop it first (only one pcscd per host)" >&2; exit 1
    fi
    rm -rf "$DIR/reader.conf.d"; mkdir -p "$DIR/reader.conf.d"
    for i in $(seq 0 $((readers - 1))); do
        port=$((35963 + 2 * i))
        # One copy of the driver per reader: vpcd keeps global state, and two readers
        # sharing one loaded copy hang pcscd (verified). Separate paths = separate dlopen.
        lib=$LIBPATH
        if [ "$readers" -gt 1 ]; then lib="$DIR/libifdvpcd-$i.so"; cp "$LIBPATH" "$lib"; fi
        # The reader name must start with "Yubico" for ykcs11; the yubikey crate doesn't care.
        printf 'FRIENDLYNAME "Yubico YubiKey Virtual PIV %d"\nDEVICENAME /dev/null:0x%X\nLIBPATH %s\nCHANNELID 0x%X\n' \
            "$i" "$port" "$lib" "$port" > "$DIR/reader.conf.d/vpcd$i"
    done
    mkdir -p /run/pcscd
    pcscd -f -c "$DIR/reader.conf.d" > "$DIR/pcscd.log" 2>&1 &
    echo $! > "$DIR/pcscd.pid"
    for _ in $(seq 100); do
        [ -S "$SOCK" ] && ss -ltn 2>/dev/null | grep -q ":35963 " && break
        kill -0 "$(cat "$DIR/pcscd.pid")" 2>/dev/null || { cat "$DIR/pcscd.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "pcscd pid $(cat "$DIR/pcscd.pid"), config $DIR/reader.conf.d, log $DIR/pcscd.log"
    ;;
stop)
    if [ -f "$DIR/pcscd.pid" ]; then
        pid=$(cat "$DIR/pcscd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$DIR/pcscd.pid"
    fi
    ;;
wait-card)
    n=${2:-1}; t=${3:-10}
    deadline=$((SECONDS + t))
    while :; do
        have=$(timeout 5 opensc-tool -l 2>/dev/null | grep -c ' Yes ' || true)
        [ "$have" -ge "$n" ] && exit 0
        [ $SECONDS -ge $deadline ] && { echo "timeout: $have/$n cards present" >&2; timeout 5 opensc-tool -l >&2 || true; exit 1; }
        sleep 0.1
    done
    ;;
*) echo "usage: $0 start [READERS] | stop | wait-card [N] [TIMEOUT]" >&2; exit 2 ;;
esac
