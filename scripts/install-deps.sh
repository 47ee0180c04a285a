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
# the PAM integration guide's Python example is run by the tests
need python3 python3
need openssl openssl
pkg-config --exists tss2-esys 2>/dev/null || pkgs+=(libtss2-dev)
# the yubikey crate (custodian tokens) links libpcsclite
pkg-config --exists libpcsclite 2>/dev/null || pkgs+=(libpcsclite-dev)

# PostgreSQL for the rotation connector tests. They run their own server
# (initdb into a temp dir, a free port); the system cluster the package
# creates is never used, and is stopped below.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || pkgs+=(postgresql)
need psql postgresql-client
# runuser: the tests run initdb and postgres as an unprivileged user
need runuser util-linux

SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
if ((${#pkgs[@]})); then
  echo "installing: ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # No package may start a service here (the PostgreSQL cluster on 5432):
  # policy-rc.d answering 101 stops invoke-rc.d from starting it.
  added_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  # The downloaded .debs are installed now: their cache is disk the builds need.
  $SUDO apt-get clean
  [[ -z "$added_policy" ]] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

# A system PostgreSQL cluster (installed now or before) is stopped and kept
# from starting at boot: nothing may depend on it.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | awk '$4 == "online" {print $1, $2}' |
    while read -r ver name; do $SUDO pg_ctlcluster "$ver" "$name" stop || true; done
fi
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
fi
