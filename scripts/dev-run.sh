#!/usr/bin/env bash
# `make run`: a local appliance with real (software) hardware.
#   SoftHSM2 token + swtpm + SQLite under ./.vault-dev, vault initialised in
#   mode tpm+pkcs11 on first run, vaultd in the foreground on
#   https://127.0.0.1:8443, demo certificates and secrets, ./.vault-dev/env.
# Ctrl-C / SIGTERM stops vaultd and swtpm. A second run reuses the state.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEV="$ROOT/.vault-dev"
PORT=${VAULT_DEV_PORT:-8443}
TPM_PORT=${VAULT_DEV_TPM_PORT:-2321}

bash "$ROOT/scripts/install-deps.sh"
echo "==> building vaultd and vaultctl"
(cd "$ROOT" && cargo build --release --bins -q)
BIN="$ROOT/target/release"

umask 077
mkdir -p "$DEV"/{softhsm/tokens,tpm,data,certs}
export SOFTHSM2_CONF="$DEV/softhsm/softhsm2.conf"

if [[ ! -f "$DEV/pin" ]]; then
  echo "==> creating SoftHSM token 'vaultd-dev'"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$DEV/softhsm/tokens" > "$SOFTHSM2_CONF"
  PIN=$(openssl rand -hex 8); SO=$(openssl rand -hex 8)
  softhsm2-util --init-token --free --label vaultd-dev --so-pin "$SO" --pin "$PIN" >/dev/null
  printf '%s\n' "$PIN" > "$DEV/pin"; printf '%s\n' "$SO" > "$DEV/so-pin"
fi

cat > "$DEV/vaultd.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$DEV/data"

[seal]
mode = "tpm+pkcs11"

[seal.tpm]
tcti = "swtpm:host=127.0.0.1,port=$TPM_PORT"
pcrs = [7]

[seal.pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "vaultd-dev"
pin_file = "$DEV/pin"

[log]
level = "info"
TOML

SWTPM_PID=""; VAULTD_PID=""
cleanup() {
  trap - INT TERM EXIT
  if [[ -n "$VAULTD_PID" ]] && kill -0 "$VAULTD_PID" 2>/dev/null; then
    kill -TERM "$VAULTD_PID" 2>/dev/null || true; wait "$VAULTD_PID" 2>/dev/null || true
  fi
  if [[ -n "$SWTPM_PID" ]]; then
    swtpm_ioctl --tcp "127.0.0.1:$((TPM_PORT + 1))" -s >/dev/null 2>&1 || kill "$SWTPM_PID" 2>/dev/null || true
    wait "$SWTPM_PID" 2>/dev/null || true
  fi
  echo "==> stopped vaultd and swtpm"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

echo "==> starting swtpm on 127.0.0.1:$TPM_PORT"
swtpm socket --tpm2 --tpmstate dir="$DEV/tpm" \
  --server type=tcp,port="$TPM_PORT",bindaddr=127.0.0.1 --ctrl type=tcp,port=$((TPM_PORT + 1)),bindaddr=127.0.0.1 \
  --flags not-need-init,startup-clear --log file="$DEV/tpm/log" &
SWTPM_PID=$!
for _ in $(seq 100); do swtpm_ioctl --tcp "127.0.0.1:$((TPM_PORT + 1))" -g >/dev/null 2>&1 && break; sleep 0.1; done
swtpm_ioctl --tcp "127.0.0.1:$((TPM_PORT + 1))" -g >/dev/null || { echo "swtpm did not start; see $DEV/tpm/log"; exit 1; }

if [[ ! -f "$DEV/certs/admin.pem" ]]; then
  echo "==> init ceremony (root key sealed by swtpm PCR 7 AND the SoftHSM token)"
  "$BIN/vaultd" --config "$DEV/vaultd.toml" init --out "$DEV/certs"
fi

echo "==> starting vaultd on https://127.0.0.1:$PORT"
"$BIN/vaultd" --config "$DEV/vaultd.toml" &
VAULTD_PID=$!

export VAULT_ADDR="https://127.0.0.1:$PORT" VAULT_CACERT="$DEV/certs/ca.pem"
admin=(--cert "$DEV/certs/admin.pem" --key "$DEV/certs/admin-key.pem")
for _ in $(seq 100); do
  "$BIN/vaultctl" "${admin[@]}" status >/dev/null 2>&1 && break
  kill -0 "$VAULTD_PID" 2>/dev/null || { echo "vaultd exited"; exit 1; }
  sleep 0.1
done
"$BIN/vaultctl" "${admin[@]}" status

for role in writer pam auditor; do
  name="demo-$role"
  if [[ ! -f "$DEV/certs/$name.pem" ]]; then
    # The demo PAM server may check out what is under demo/ (access grants:
    # default deny).
    grant=(); [[ $role == pam ]] && grant=(--grant demo/)
    "$BIN/vaultctl" "${admin[@]}" cert issue --role "$role" --name "$name" "${grant[@]}" --out-dir "$DEV/certs" >/dev/null
  fi
done
writer=(--cert "$DEV/certs/demo-writer.pem" --key "$DEV/certs/demo-writer-key.pem")
if ! "$BIN/vaultctl" "${writer[@]}" secret get demo/db-root >/dev/null 2>&1; then
  printf 'db-root-%s' "$(openssl rand -hex 12)" | "$BIN/vaultctl" "${writer[@]}" secret put demo/db-root --metadata '{"system":"postgres","account":"postgres"}' >/dev/null
  printf 'break-glass-%s' "$(openssl rand -hex 12)" | "$BIN/vaultctl" "${writer[@]}" secret put demo/exclusive --exclusive --metadata '{"system":"cloud","account":"root"}' >/dev/null
fi

cat > "$DEV/env" <<ENV
VAULT_ADDR=$VAULT_ADDR
VAULT_CACERT=$DEV/certs/ca.pem
VAULT_ADMIN_CERT=$DEV/certs/admin.pem
VAULT_ADMIN_KEY=$DEV/certs/admin-key.pem
VAULT_WRITER_CERT=$DEV/certs/demo-writer.pem
VAULT_WRITER_KEY=$DEV/certs/demo-writer-key.pem
VAULT_PAM_CERT=$DEV/certs/demo-pam.pem
VAULT_PAM_KEY=$DEV/certs/demo-pam-key.pem
VAULT_AUDITOR_CERT=$DEV/certs/demo-auditor.pem
VAULT_AUDITOR_KEY=$DEV/certs/demo-auditor-key.pem
ENV

cat <<MSG

==> vaultd is running (pid $VAULTD_PID). In another shell:

  set -a; . $DEV/env; set +a
  curl --cacert "\$VAULT_CACERT" --cert "\$VAULT_PAM_CERT" --key "\$VAULT_PAM_KEY" \\
       -H 'content-type: application/json' -d '{"reason":"demo","ttl_seconds":300}' \\
       "\$VAULT_ADDR/v1/secrets/demo/db-root/checkout"
  $BIN/vaultctl --cert "\$VAULT_PAM_CERT" --key "\$VAULT_PAM_KEY" checkout demo/db-root --reason demo

  # auditor: pin the checkpoint key, export the signed log, verify it offline
  A=(--cert "\$VAULT_AUDITOR_CERT" --key "\$VAULT_AUDITOR_KEY")
  $BIN/vaultctl "\${A[@]}" audit public-key > audit.pub
  $BIN/vaultctl "\${A[@]}" audit export --out ./audit-export
  $BIN/vaultctl audit verify ./audit-export --key audit.pub
  $BIN/vaultctl "\${A[@]}" audit tail -n 10

Ctrl-C stops vaultd and swtpm.
MSG

wait "$VAULTD_PID"
