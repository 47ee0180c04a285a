//! The `vault-image` binary end to end: exit status, stderr codes, files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use vault_image::{ImagePublicKey, SignedPolicy};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vault-image"))
        .args(args)
        .output()
        .expect("run vault-image")
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs a command that must fail with exit 1 and `code` on stderr.
fn fails(args: &[&str], code: &str) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(
        err.starts_with(&format!("vault-image: error [{code}]: ")),
        "{args:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

const ROOT: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const PCR: &str = "589f9ffed4c477966bfb8d41f37895b08c69047df8f911d6f3b57fbe08faee8d";

#[test]
fn keygen_sign_bundle_verify() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let (key, pem) = (p(d, "img.key"), p(d, "img.pem"));
    let id = ok(&["keygen", "--key", &key, "--pub", &pem]);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pk = ImagePublicKey::from_pem(&std::fs::read_to_string(&pem).unwrap()).unwrap();
    assert_eq!(id.trim(), pk.key_id());
    // Refuses to overwrite either file.
    fails(
        &["keygen", "--key", &key, "--pub", &p(d, "other.pem")],
        "io_error",
    );
    fails(
        &["keygen", "--key", &p(d, "other.key"), "--pub", &pem],
        "io_error",
    );
    assert!(!d.join("other.key").exists());

    // Policy.
    let pol = p(d, "boot.json");
    let digest = ok(&[
        "sign-policy",
        "--key",
        &key,
        "--version",
        "1.0",
        "--pcr",
        &format!("11={PCR}"),
        "--out",
        &pol,
    ]);
    assert_eq!(
        digest.trim(),
        "b69a28b0dc5cbfd43a39f791530222f3b6908411eb57918d73908bac98c38786"
    );
    let text = std::fs::read_to_string(&pol).unwrap();
    let sp = SignedPolicy::from_json(&text).unwrap();
    sp.verify(&pk).unwrap();
    assert_eq!(ok(&["verify-policy", "--pub", &pem, &pol]), text);
    // Tampered policy.
    let bad = p(d, "bad.json");
    std::fs::write(&bad, text.replace("\"1.0\"", "\"1.0 x\"")).unwrap();
    fails(&["verify-policy", "--pub", &pem, &bad], "policy_malformed");
    let mut forged = sp.clone();
    forged.signature[33] ^= 1;
    std::fs::write(&bad, forged.to_json()).unwrap();
    fails(
        &["verify-policy", "--pub", &pem, &bad],
        "policy_bad_signature",
    );
    fails(
        &[
            "sign-policy",
            "--key",
            &key,
            "--version",
            "1",
            "--pcr",
            &format!("30={PCR}"),
            "--out",
            &bad,
        ],
        "policy_malformed",
    );

    // Bundle.
    std::fs::write(d.join("uki"), b"kernel bytes").unwrap();
    std::fs::write(d.join("root"), vec![7u8; 5000]).unwrap();
    let out = p(d, "u.vupd");
    let printed = ok(&[
        "bundle",
        "--key",
        &key,
        "--version",
        "1.0",
        "--build",
        "7",
        "--roothash",
        ROOT,
        "--part",
        &format!("uki.efi={}", p(d, "uki")),
        "--part",
        &format!("root.img={}", p(d, "root")),
        "--out",
        &out,
    ]);
    let verified = ok(&["verify-bundle", "--pub", &pem, &out]);
    assert_eq!(printed, verified);
    let m: serde_json::Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(m["build"], 7);
    assert_eq!(m["parts"][1]["size"], 5000);
    assert_eq!(m["key_id"], pk.key_id().as_str());

    // Every failure is a code on stderr, exit 1.
    let mut b = std::fs::read(&out).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    std::fs::write(&out, &b).unwrap();
    fails(
        &["verify-bundle", "--pub", &pem, &out],
        "bundle_part_mismatch",
    );
    std::fs::write(&out, &b[..n - 1]).unwrap();
    fails(&["verify-bundle", "--pub", &pem, &out], "bundle_truncated");
    let other = (p(d, "o.key"), p(d, "o.pem"));
    ok(&["keygen", "--key", &other.0, "--pub", &other.1]);
    b[n - 1] ^= 1;
    std::fs::write(&out, &b).unwrap();
    ok(&["verify-bundle", "--pub", &pem, &out]);
    fails(
        &["verify-bundle", "--pub", &other.1, &out],
        "bundle_bad_signature",
    );
    fails(&["verify-bundle", "--pub", &key, &out], "key_malformed");
    fails(
        &["verify-bundle", "--pub", &pem, &p(d, "missing")],
        "io_error",
    );
    fails(
        &[
            "bundle",
            "--key",
            &key,
            "--version",
            "1",
            "--build",
            "1",
            "--roothash",
            "xyz",
            "--part",
            &format!("a={}", p(d, "uki")),
            "--out",
            &p(d, "x.vupd"),
        ],
        "bundle_malformed",
    );
    assert!(!d.join("x.vupd").exists(), "no partial output");
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn usage_errors_do_not_panic() {
    for args in [
        &[
            "sign-policy",
            "--key",
            "k",
            "--version",
            "1",
            "--pcr",
            "11=zz",
            "--out",
            "o",
        ][..],
        &[
            "sign-policy",
            "--key",
            "k",
            "--version",
            "1",
            "--pcr",
            "eleven",
            "--out",
            "o",
        ],
        &["bundle", "--key", "k"],
        &["nonsense"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
}
