#!/usr/bin/env bash
# Installs the system packages the build and the tests need, if missing.
# Debian 12; needs root (or sudo) only when something is missing.
set -euo pipefail

pkgs=()
need() { # need COMMAND-OR-FILE PACKAGE
  if [[ "$1" == /* ]]; then [[ -e "$1" ]] || pkgs+=("$2"); else command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); fi
}
need swtpm swtpm
need swtpm_ioctl swtpm-tools
need tpm2_pcrread tpm2-tools
need softhsm2-util softhsm2
need /usr/lib/softhsm/libsofthsm2.so softhsm2
need pkg-config pkg-config
need curl curl
need openssl openssl
pkg-config --exists tss2-esys 2>/dev/null || pkgs+=(libtss2-dev)
# the yubikey crate (custodian tokens) links libpcsclite
pkg-config --exists libpcsclite 2>/dev/null || pkgs+=(libpcsclite-dev)

if ((${#pkgs[@]})); then
  echo "installing: ${pkgs[*]}" >&2
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
