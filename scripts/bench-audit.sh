#!/usr/bin/env bash
# `make bench-audit`: the audit log's benchmarks.
#  1. durable appends/s through the group-commit writer (1, 8, 64 writers);
#  2. offline verification of a 1,000,000-entry signed export on one core
#     (`vaultctl audit verify`, pinned with taskset to CPU 0).
# Checkout throughput with audit on is `make bench` (vaultd vs OpenBao).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
N=${BENCH_AUDIT_ENTRIES:-1000000}
echo "==> appends"
cargo bench -q -p vault-store --bench audit_append -- "${BENCH_SECONDS:-5}"
echo "==> building"
cargo build -q --release -p vaultctl -p vault-e2e --bins
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
./target/release/vault-audit-gen --entries "$N" --out "$D/export"
echo "==> vaultctl audit verify ($N entries, one core), 3 runs"
for _ in 1 2 3; do
  /usr/bin/time -f "   wall %e s, max RSS %M KB" taskset -c 0 \
    ./target/release/vaultctl --json audit verify "$D/export" --key "$D/export/audit.pub"
done
