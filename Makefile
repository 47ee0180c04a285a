.PHONY: run test bench bench-audit bench-custodians fuzz fmt lint assets package

# Start a local appliance (SoftHSM token, swtpm, SQLite) on https://127.0.0.1:8443.
run:
	bash scripts/dev-run.sh

# Every test: formatting, lints, unit, conformance (SoftHSM, swtpm) and end-to-end.
test:
	bash scripts/test.sh

# Checkout throughput over mTLS: vaultd vs OpenBao 2.7.2 in the same run.
bench:
	bash scripts/bench.sh

# Audit log: durable appends/s, offline verification of 1M entries.
bench-audit:
	bash scripts/bench-audit.sh

# Server-side time of a 2-of-3 approval and a 2-of-3 break-glass retrieval
# (HTTP round trips only), against a plain checkout in the same run.
bench-custodians:
	bash scripts/install-deps.sh
	cargo build --release --bins -q
	VAULTD_BIN=target/release/vaultd ./target/release/vault-custodian-bench

# Fuzz every parser of untrusted input for FUZZ_SECONDS each (nightly + cargo-fuzz).
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd vaultd/core && for t in $$(cargo +nightly fuzz list); do \
	  cargo +nightly fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096 || exit 1; done

fmt:
	cargo fmt --all

# vaultctl's shell completions and man pages, from its command definitions -> target/assets/
assets:
	cargo build -q -p vaultctl
	mkdir -p target/assets/completions target/assets/man
	for sh in bash zsh fish; do ./target/debug/vaultctl completions $$sh > target/assets/completions/vaultctl.$$sh; done
	./target/debug/vaultctl man --out-dir target/assets/man

# Appliance disk image (Debian 12, dm-verity root, A/B UKIs, TPM-bound data volume) -> image/out/
# (.PHONY: image/ is also a directory)
.PHONY: image image-smoke image-test
image:
	bash image/build.sh

# Build the image and an update bundle, boot them under QEMU + swtpm and drive them over the API:
# first-boot ceremony, automatic unseal, foreign TPM, unsigned kernel image, tampered root, A/B
# update, reproducibility (docs/OPERATORS.md). Part of `make test`.
image-test:
	bash image/test/image-test.sh

# Boot image/out/disk.raw under QEMU + swtpm: first boot, reboot, foreign TPM, tampered root.
image-smoke:
	bash image/test/smoke.sh

# vaultctl for workstations: a Debian package with its man pages and completions -> target/dist/
package:
	bash scripts/package-vaultctl.sh
