#!/usr/bin/env bash
# Packages vaultctl for admins', custodians' and auditors' workstations as a
# Debian package (`make package`): the binary, its man pages and shell
# completions, all generated from the command definitions.
#
#   scripts/package-vaultctl.sh [--profile release|debug] [--no-build] [--out DIR]
#
# Writes DIR/vaultctl_<version>_<arch>.deb (default DIR: target/dist) and
# prints its path. Built with dpkg-deb alone, so it needs nothing beyond
# Debian's dpkg. The binary links libpcsclite (the YubiKey, through pcscd):
# the package depends on libpcsclite1 and recommends pcscd.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

profile=release
build=1
out="$ROOT/target/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs release or debug}; shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "package-vaultctl: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$profile" in release|debug) ;; *) echo "package-vaultctl: --profile is release or debug" >&2; exit 2 ;; esac

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$build" = 1 ]; then
  if [ "$profile" = release ]; then cargo build -q --release -p vaultctl; else cargo build -q -p vaultctl; fi
fi
bin="$target_dir/$profile/vaultctl"
[ -x "$bin" ] || { echo "package-vaultctl: $bin is missing (build it, or drop --no-build)" >&2; exit 1; }

version=$("$bin" --version | awk '{print $2}')
[ -n "$version" ] || { echo "package-vaultctl: cannot read the version of $bin" >&2; exit 1; }
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/vaultctl"

install -D -m 0755 "$bin" "$pkg/usr/bin/vaultctl"
if [ "$profile" = release ]; then strip --strip-unneeded "$pkg/usr/bin/vaultctl" 2>/dev/null || true; fi
mkdir -p "$pkg/usr/share/man/man1" "$stage/man"
"$bin" man --out-dir "$stage/man" >/dev/null
for page in "$stage/man"/*.1; do
  gzip -9n < "$page" > "$pkg/usr/share/man/man1/$(basename "$page").gz"
done
install -d "$pkg/usr/share/bash-completion/completions" \
  "$pkg/usr/share/zsh/vendor-completions" "$pkg/usr/share/fish/vendor_completions.d"
"$bin" completions bash > "$pkg/usr/share/bash-completion/completions/vaultctl"
"$bin" completions zsh > "$pkg/usr/share/zsh/vendor-completions/_vaultctl"
"$bin" completions fish > "$pkg/usr/share/fish/vendor_completions.d/vaultctl.fish"
install -d "$pkg/usr/share/doc/vaultctl"
gzip -9n < docs/QUICKSTART.md > "$pkg/usr/share/doc/vaultctl/QUICKSTART.md.gz"
gzip -9n < docs/CUSTODIANS.md > "$pkg/usr/share/doc/vaultctl/CUSTODIANS.md.gz"
gzip -9n < docs/TROUBLESHOOTING.md > "$pkg/usr/share/doc/vaultctl/TROUBLESHOOTING.md.gz"

installed_kb=$(du -sk "$pkg/usr" | cut -f1)
install -d "$pkg/DEBIAN"
cat > "$pkg/DEBIAN/control" <<EOF
Package: vaultctl
Version: $version
Architecture: $arch
Maintainer: vault appliance team <vault@appliance.invalid>
Section: admin
Priority: optional
Installed-Size: $installed_kb
Depends: libc6 (>= 2.36), libgcc-s1, libpcsclite1
Recommends: pcscd
Description: command-line client of the hardware-backed vault appliance
 vaultctl talks to vaultd over mutual TLS: status and doctor, certificates
 (issue, renew, revoke), secrets, checkouts, custodian approvals with a
 YubiKey (through pcscd), governance, recovery shares and offline
 verification of the signed audit log.
EOF
# Files owned by root whoever builds the package.
find "$pkg" -type d -exec chmod 0755 {} +
mkdir -p "$out"
deb="$out/vaultctl_${version}_${arch}.deb"
# xz for a release package; a debug one (the tests') is large and only
# needs to be quick.
if [ "$profile" = release ]; then z=(-Zxz); else z=(-Zgzip -z1); fi
dpkg-deb --root-owner-group "${z[@]}" --build "$pkg" "$deb" >/dev/null
echo "$deb"
