#!/usr/bin/env bash
# `make test`: everything, against real SoftHSM2 tokens, swtpm processes and
# the real vaultd binary over mTLS.
#
# Env: VAULT_TEST_FREE_DISK=1 (set by .ci/run) removes target/debug and the
#      virtual card's target/ once the stages that need them have passed, so
#      the image build and its boots start with that disk back.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# stage NAME: a header with the free disk, so a run that fills the disk says
# where it did.
stage() {
  local free
  free=$(df -h --output=avail . 2>/dev/null | tail -1 | tr -d ' ') || free="?"
  echo "==> $1 (disk free: $free)"
}

bash scripts/install-deps.sh
stage "cargo fmt --check"
cargo fmt --all -- --check
stage "cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
stage "build binaries (the end-to-end tests run target/debug/vaultd)"
cargo build --workspace --bins -q
stage "cargo test"
cargo test --workspace 2>&1 | tee target/test-output.txt
stage "the YubiKey custodian token against a virtual PIV card (pcscd + vpcd + tests/piv-card)"
bash vaultd/piv/run-card-tests.sh 2>&1 | tee -a target/test-output.txt
if [[ "${VAULT_TEST_FREE_DISK:-0}" == 1 ]]; then
  stage "freeing target/debug and tests/piv-card/target (VAULT_TEST_FREE_DISK=1)"
  rm -rf target/debug tests/piv-card/target
fi
stage "the appliance image: build it and an update, boot them under QEMU + swtpm (make image-test)"
bash image/test/image-test.sh 2>&1 | tee -a target/test-output.txt
stage "all tests passed"
