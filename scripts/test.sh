#!/usr/bin/env bash
# `make test`: everything, against real SoftHSM2 tokens, swtpm processes and
# the real vaultd binary over mTLS.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash scripts/install-deps.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "==> build binaries (the end-to-end tests run target/debug/vaultd)"
cargo build --workspace --bins -q
echo "==> cargo test"
cargo test --workspace 2>&1 | tee target/test-output.txt
echo "==> the YubiKey custodian token against a virtual PIV card (pcscd + vpcd + tests/piv-card)"
bash vaultd/piv/run-card-tests.sh 2>&1 | tee -a target/test-output.txt
echo "==> the appliance image: build it and an update, boot them under QEMU + swtpm (make image-test)"
bash image/test/image-test.sh 2>&1 | tee -a target/test-output.txt
