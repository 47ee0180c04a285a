# shellcheck shell=bash
# Boot harness for the appliance image (sourced): private swtpm per "machine", QEMU (TCG) with
# OVMF + a per-VM copy of the UEFI variables, serial console to a file, host port -> guest :8443.
#
#   . image/test/lib.sh
#   tpm_start STATEDIR                 # swtpm with its state in STATEDIR (kept across reboots)
#   boot_vm DISK TPMSTATEDIR SERIALLOG HOSTPORT [reboot|noreboot]
#   wait_serial 'PATTERN' SERIALLOG TIMEOUT    # extended regex; prints the tail on failure
#   stop_vm [TIMEOUT]                  # ACPI power button via QMP, then kill
#   vm_cleanup                         # (installed as an EXIT trap) kills everything started here
#
# Globals after boot_vm: VM_PID, VM_QMP, VM_DIR. One VM at a time per shell.

HARNESS_TMP=${HARNESS_TMP:-$(mktemp -d /tmp/vt.XXXXXX)}   # short: unix socket paths <= 108 chars
OVMF_CODE=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
OVMF_VARS=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
QEMU=${QEMU:-qemu-system-x86_64}
VM_MEM=${VM_MEM:-1024}
_HARNESS_PIDS=()

hlog() { printf '\033[1m[vm %(%H:%M:%S)T]\033[0m %s\n' -1 "$*" >&2; }

# socket dir for a TPM state dir: short and stable per state dir
_tpm_sockdir() { echo "$HARNESS_TMP/t$(printf '%s' "$(readlink -f "$1")" | sha256sum | cut -c1-8)"; }

tpm_start() { # STATEDIR
    local state=$1 sd
    mkdir -p "$state"; state=$(readlink -f "$state")   # swtpm --daemon chdirs to /
    sd=$(_tpm_sockdir "$state"); mkdir -p "$sd"
    if [ -f "$sd/pid" ] && kill -0 "$(cat "$sd/pid")" 2>/dev/null; then
        kill "$(cat "$sd/pid")" 2>/dev/null || true; sleep 0.5
    fi
    rm -f "$sd/sock"
    swtpm socket --tpm2 --tpmstate dir="$state" --ctrl type=unixio,path="$sd/sock" \
        --flags startup-clear --log file="$state/swtpm.log",level=1 --pid file="$sd/pid" --daemon \
        || { echo "swtpm failed to start" >&2; return 1; }
    local i; for i in $(seq 50); do [ -S "$sd/sock" ] && break; sleep 0.1; done
    [ -S "$sd/sock" ] || { echo "swtpm socket did not appear" >&2; return 1; }
    _HARNESS_PIDS+=("$(cat "$sd/pid")")
    TPM_SOCK=$sd/sock
}

tpm_stop() { # STATEDIR
    local sd; sd=$(_tpm_sockdir "$1")
    [ -f "$sd/pid" ] && kill "$(cat "$sd/pid")" 2>/dev/null || true
    rm -f "$sd/pid"
}

# boot_vm DISK TPMSTATEDIR SERIALLOG HOSTPORT [reboot|noreboot]
# The UEFI variable store lives next to the disk (DISK.vars) so boot entries persist per machine.
# swtpm exits when QEMU disconnects: it is (re)started here for every boot, same state dir.
boot_vm() {
    local disk=$1 state=$2 serial=$3 port=$4 mode=${5:-noreboot}
    local vars=$disk.vars
    [ -f "$vars" ] || cp "$OVMF_VARS" "$vars"
    tpm_start "$state"
    VM_DIR=$(mktemp -d "$HARNESS_TMP/q.XXXX")
    VM_QMP=$VM_DIR/qmp
    : > "$serial"
    local extra=()
    [ "$mode" = noreboot ] && extra+=(-no-reboot)
    "$QEMU" -machine q35,accel=tcg -cpu max -smp 2 -m "$VM_MEM" -display none -nodefaults "${extra[@]}" \
        -name vault-test -serial "file:$serial" \
        -qmp "unix:$VM_QMP,server=on,wait=off" \
        -drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" \
        -drive if=pflash,format=raw,file="$vars" \
        -drive if=virtio,format=raw,file="$disk",cache=unsafe \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:8443" -device virtio-net-pci,netdev=n0 \
        -chardev socket,id=chrtpm,path="$TPM_SOCK" -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0 \
        -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 \
        > "$VM_DIR/qemu.log" 2>&1 &
    VM_PID=$!
    _HARNESS_PIDS+=("$VM_PID")
    VM_T0=$SECONDS
    hlog "booting $disk (pid $VM_PID, tpm $state, serial $serial, 127.0.0.1:$port -> :8443, $mode)"
}

vm_running() { [ -n "${VM_PID:-}" ] && kill -0 "$VM_PID" 2>/dev/null; }

# wait_serial PATTERN LOG TIMEOUT: grep -E on the serial log (ANSI colours stripped)
wait_serial() {
    local pat=$1 log=$2 timeout=$3 t0=$SECONDS
    while :; do
        if sed 's/\x1b\[[0-9;]*m//g' "$log" 2>/dev/null | grep -aE -- "$pat" >/dev/null; then
            WAIT_ELAPSED=$((SECONDS - ${VM_T0:-t0}))
            hlog "seen after $((SECONDS - t0))s (t+${WAIT_ELAPSED}s since boot): /$pat/"
            return 0
        fi
        if [ $((SECONDS - t0)) -ge "$timeout" ]; then
            hlog "TIMEOUT after ${timeout}s waiting for /$pat/ in $log; last lines:"
            serial_tail "$log" 40 >&2
            return 1
        fi
        if ! vm_running && [ $((SECONDS - t0)) -gt 0 ]; then
            # VM gone: one last look, then fail
            if sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -aE -- "$pat" >/dev/null; then return 0; fi
            hlog "VM exited while waiting for /$pat/; last lines:"
            serial_tail "$log" 40 >&2
            [ -s "$VM_DIR/qemu.log" ] && sed 's/^/    qemu| /' "$VM_DIR/qemu.log" >&2
            return 1
        fi
        sleep 1
    done
}

# serial_has PATTERN LOG: already in the log?
serial_has() { sed 's/\x1b\[[0-9;]*m//g' "$2" 2>/dev/null | grep -aE -- "$1" >/dev/null; }
serial_tail() { sed 's/\x1b\[[0-9;]*m//g; s/\r//g' "$1" | tail -n "${2:-30}" | sed 's/^/    | /'; }

_qmp() { # send one QMP command
    local cmd=$1
    command -v socat >/dev/null && {
        printf '{"execute":"qmp_capabilities"}\n{"execute":"%s"}\n' "$cmd" | socat - "UNIX-CONNECT:$VM_QMP" >/dev/null 2>&1
        return
    }
    python3 - "$VM_QMP" "$cmd" <<'PY' >/dev/null 2>&1
import socket, sys, json, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for c in ("qmp_capabilities", sys.argv[2]):
    f.write(json.dumps({"execute": c}) + "\n"); f.flush(); f.readline()
PY
}

# stop_vm [TIMEOUT]: ACPI power button (logind powers off), then kill
stop_vm() {
    local timeout=${1:-60} i
    vm_running || { VM_PID=; return 0; }
    _qmp system_powerdown || true
    for i in $(seq "$timeout"); do vm_running || break; sleep 1; done
    if vm_running; then
        hlog "VM did not power off in ${timeout}s: killing it"
        _qmp quit || true; sleep 2
        vm_running && kill -9 "$VM_PID" 2>/dev/null || true
    else
        hlog "VM powered off cleanly"
    fi
    wait "$VM_PID" 2>/dev/null || true
    VM_PID=
}

# wait until the VM exits by itself (e.g. -no-reboot + a reboot/panic)
wait_vm_exit() { # TIMEOUT
    local i; for i in $(seq "$1"); do vm_running || return 0; sleep 1; done; return 1
}

vm_cleanup() {
    local p
    for p in "${_HARNESS_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${_HARNESS_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    _HARNESS_PIDS=()
    [ -n "${HARNESS_TMP:-}" ] && [ -d "$HARNESS_TMP" ] && rm -rf "$HARNESS_TMP"
}
trap vm_cleanup EXIT
trap 'exit 130' INT TERM
