//! `scripts/package-vaultctl.sh` builds a Debian package that a workstation
//! can install: the binary runs, the man pages and completions are there,
//! and the package says what it needs (libpcsclite1, pcscd).

use std::path::Path;
use std::process::Command;
use vault_e2e::{ok, vaultctl_bin};

#[test]
fn vaultctl_deb_installs_a_working_client() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = vaultctl_bin();
    // target/debug/vaultctl → target
    let target = bin.parent().and_then(Path::parent).expect("target dir");
    let out = tempfile::tempdir().unwrap();
    let made = Command::new("bash")
        .arg(root.join("scripts/package-vaultctl.sh"))
        .args(["--profile", "debug", "--no-build", "--out"])
        .arg(out.path())
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    let deb = ok(&made).trim().to_owned();
    assert!(deb.ends_with(".deb") && Path::new(&deb).exists(), "{deb}");

    let info = ok(&Command::new("dpkg-deb")
        .args([
            "--field",
            &deb,
            "Package",
            "Version",
            "Depends",
            "Recommends",
        ])
        .output()
        .unwrap());
    let version = ok(&Command::new(&bin).arg("--version").output().unwrap());
    let version = version.split_whitespace().nth(1).unwrap().to_owned();
    assert!(info.contains("Package: vaultctl"), "{info}");
    assert!(info.contains(&format!("Version: {version}")), "{info}");
    assert!(info.contains("libpcsclite1"), "{info}");
    assert!(info.contains("Recommends: pcscd"), "{info}");

    // Everything is root's, whoever built it.
    let contents = ok(&Command::new("dpkg-deb")
        .args(["--contents", &deb])
        .output()
        .unwrap());
    for line in contents.lines() {
        assert!(line.contains(" root/root "), "not root's: {line}");
    }

    let x = tempfile::tempdir().unwrap();
    ok(&Command::new("dpkg-deb")
        .args(["-x", &deb])
        .arg(x.path())
        .output()
        .unwrap());
    let p = x.path();
    let installed = p.join("usr/bin/vaultctl");
    let v = ok(&Command::new(&installed).arg("--version").output().unwrap());
    assert_eq!(v.trim(), format!("vaultctl {version}"));
    // The packaged binary is the one that was built.
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&bin).unwrap()
    );
    for f in [
        "usr/share/man/man1/vaultctl.1.gz",
        "usr/share/man/man1/vaultctl-cert.1.gz",
        "usr/share/bash-completion/completions/vaultctl",
        "usr/share/zsh/vendor-completions/_vaultctl",
        "usr/share/fish/vendor_completions.d/vaultctl.fish",
        "usr/share/doc/vaultctl/TROUBLESHOOTING.md.gz",
    ] {
        let m = std::fs::metadata(p.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(m.len() > 0, "{f} is empty");
    }
    let bash =
        std::fs::read_to_string(p.join("usr/share/bash-completion/completions/vaultctl")).unwrap();
    assert!(bash.contains("renew"), "bash completion lacks `cert renew`");

    // Bad arguments are refused with a usage exit, nothing written.
    let bad = Command::new("bash")
        .arg(root.join("scripts/package-vaultctl.sh"))
        .args(["--profile", "fast"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
