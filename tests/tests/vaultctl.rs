//! The real `vaultctl` binary against the real `vaultd`: the flows an
//! operator and a PAM script run, human and `--json` output, exit codes.

use std::process::{Command, Output};

use vault_e2e::{ok, Appliance, Options};

fn ctl(a: &Appliance, who: &str, args: &[&str], stdin: Option<&str>) -> Output {
    a.vaultctl(who, args, stdin)
}

#[test]
fn operator_and_pam_flows() {
    let a = Appliance::start(Options::default());
    let certs = a.certs.to_str().unwrap();

    let s = ok(&ctl(&a, "admin", &["status"], None));
    assert!(s.starts_with("unsealed (mode tpm+pkcs11"), "{s}");

    for (role, name) in [("writer", "w1"), ("pam", "p1")] {
        let out = ok(&ctl(
            &a,
            "admin",
            &[
                "cert",
                "issue",
                "--role",
                role,
                "--name",
                name,
                "--out-dir",
                certs,
            ],
            None,
        ));
        assert!(
            out.contains(&format!("issued {role} certificate for {name}")),
            "{out}"
        );
        let key = a.certs.join(format!("{name}-key.pem"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "client key must be private");
    }
    // p1 was issued without a grant: it reaches nothing until granted.
    let g = ok(&ctl(&a, "admin", &["grant", "add", "p1", "*"], None));
    assert_eq!(g.trim(), "granted * to p1");
    let g = ok(&ctl(&a, "admin", &["grant", "list"], None));
    assert!(
        g.starts_with("p1 ") && g.contains(" * ") && g.contains("by admin"),
        "{g}"
    );
    // Value from stdin (never argv); trailing newline stripped.
    let out = ok(&ctl(
        &a,
        "w1",
        &[
            "secret",
            "put",
            "ops/root",
            "--metadata",
            r#"{"host":"db1"}"#,
            "--exclusive",
        ],
        Some("pa55word\n"),
    ));
    assert_eq!(out.trim(), "stored ops/root version 1");

    let meta = ok(&ctl(
        &a,
        "p1",
        &["--json", "secret", "get", "ops/root"],
        None,
    ));
    let v: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(v["exclusive"], true);
    assert_eq!(v["metadata"]["host"], "db1");
    assert!(!meta.contains("pa55word"));

    // Checkout prints the value alone on stdout (for scripts), details on stderr.
    let o = ctl(
        &a,
        "p1",
        &["checkout", "ops/root", "--reason", "change window"],
        None,
    );
    assert_eq!(ok(&o), "pa55word\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("checkout "));
    // Exclusive: a second checkout is refused with exit code 1 and the code.
    let o = ctl(
        &a,
        "p1",
        &["checkout", "ops/root", "--reason", "again"],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("checked_out"));

    let meta: serde_json::Value = serde_json::from_str(&ok(&ctl(
        &a,
        "p1",
        &["--json", "secret", "get", "ops/root"],
        None,
    )))
    .unwrap();
    let id = meta["open_checkouts"][0]["checkout_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&ctl(&a, "p1", &["checkin", &id], None));
    let o = ctl(
        &a,
        "p1",
        &[
            "--json",
            "checkout",
            "ops/root",
            "--reason",
            "after checkin",
            "--ttl",
            "60",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v["value"], "pa55word");

    // Listing and keyring.
    let list = ok(&ctl(
        &a,
        "p1",
        &["secret", "list", "--prefix", "ops/"],
        None,
    ));
    assert_eq!(list.trim(), "ops/root  v1  (exclusive)");
    let r = ok(&ctl(&a, "admin", &["keyring", "rotate"], None));
    assert!(r.contains("keyring version 2 is active"), "{r}");

    // Wrong role: exit 1 with the stable code.
    let o = ctl(&a, "w1", &["checkout", "ops/root", "--reason", "x"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("forbidden"));
    // Local errors: exit 2.
    let o = ctl(&a, "nobody", &["status"], None);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn vaultd_refuses_to_serve_an_uninitialised_vault() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("vaultd.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n[seal]\nmode = \"pkcs11\"\n[seal.pkcs11]\nmodule = \"/nonexistent.so\"\ntoken_label = \"t\"\npin_file = \"/nonexistent\"\n",
            vault_e2e::free_port(),
            d.path().join("data").display()
        ),
    )
    .unwrap();
    let o = Command::new(vault_e2e::vaultd_bin())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("not initialised"));
    // A bad configuration lists every problem and exits 2.
    std::fs::write(&cfg, "listen = \"nope\"\n").unwrap();
    let o = Command::new(vault_e2e::vaultd_bin())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// The failure a `--json` vaultctl printed on stderr, and its exit code.
fn json_failure(o: &Output) -> (Option<i32>, serde_json::Value) {
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let v: serde_json::Value = serde_json::from_str(err.trim())
        .unwrap_or_else(|e| panic!("stderr is not one JSON object ({e}): {err}"));
    assert_eq!(v["schema_version"], 1, "{v}");
    (o.status.code(), v["error"].clone())
}

#[test]
fn scripts_get_stable_exit_codes_and_json_errors() {
    let mut a = Appliance::start(Options::default());
    a.issue("writer", "w1");
    a.issue("pam", "p1");
    ok(&ctl(
        &a,
        "w1",
        &["secret", "put", "ops/root"],
        Some("pa55word\n"),
    ));
    // Success under --json carries the schema version.
    let v: serde_json::Value = serde_json::from_str(&ok(&ctl(
        &a,
        "p1",
        &["--json", "secret", "get", "ops/root"],
        None,
    )))
    .unwrap();
    assert_eq!(v["schema_version"], 1);
    // 1: refused.
    let o = ctl(
        &a,
        "w1",
        &["--json", "checkout", "ops/root", "--reason", "x"],
        None,
    );
    let (code, e) = json_failure(&o);
    assert_eq!(
        (code, e["code"].as_str(), e["status"].as_u64()),
        (Some(1), Some("forbidden"), Some(403))
    );
    // 2: usage, as JSON too.
    let o = ctl(&a, "p1", &["--json", "checkout", "--bogus"], None);
    let (code, e) = json_failure(&o);
    assert_eq!((code, e["code"].as_str()), (Some(2), Some("usage")));
    // 3: unreachable.
    let o = Command::new(vault_e2e::vaultctl_bin())
        .args(["--json", "--addr", "https://127.0.0.1:1", "status"])
        .env("VAULT_CACERT", a.certs.join("ca.pem"))
        .output()
        .unwrap();
    let (code, e) = json_failure(&o);
    assert_eq!((code, e["code"].as_str()), (Some(3), Some("unreachable")));
    // 5: a stored value that fails its integrity check.
    a.stop();
    {
        let c = rusqlite::Connection::open(a.db_path()).unwrap();
        let mut ct: Vec<u8> = c
            .query_row(
                "SELECT ciphertext FROM secret_versions WHERE path = 'ops/root'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n = ct.len();
        ct[n - 3] ^= 0x40;
        c.execute(
            "UPDATE secret_versions SET ciphertext = ?1 WHERE path = 'ops/root'",
            [ct],
        )
        .unwrap();
    }
    a.spawn();
    a.wait_ready();
    let o = ctl(
        &a,
        "p1",
        &["--json", "checkout", "ops/root", "--reason", "x"],
        None,
    );
    let (code, e) = json_failure(&o);
    assert_eq!(
        (code, e["code"].as_str(), e["status"].as_u64()),
        (Some(5), Some("integrity"), Some(500))
    );
    let o = ctl(&a, "p1", &["checkout", "ops/root", "--reason", "x"], None);
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("(500 integrity)"));
    // 4: sealed (another boot measurement: the TPM refuses the root key).
    a.stop();
    vault_tpm::extend_pcr(&a.tpm.tcti(), 7, b"a different bootloader").unwrap();
    a.spawn();
    a.wait_ready();
    let o = ctl(&a, "p1", &["--json", "secret", "get", "ops/root"], None);
    let (code, e) = json_failure(&o);
    assert_eq!(
        (code, e["code"].as_str(), e["status"].as_u64()),
        (Some(4), Some("sealed"), Some(503))
    );
}

/// Issue 14, item 1: long work shows progress on a terminal, and `--quiet`
/// (or a pipe, or `--json`) turns it off. The terminal is a pseudo-terminal
/// from util-linux `script`.
#[test]
fn progress_only_on_a_terminal_and_not_with_quiet() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/compat-0.1.0");
    let verify = |extra: &str| -> String {
        let cmd = format!(
            "{} {extra} audit verify {} --key {}",
            vault_e2e::vaultctl_bin().display(),
            root.join("export").display(),
            root.join("audit-key.pem").display()
        );
        let o = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let shown = verify("");
    assert!(shown.contains("verifying 18/18"), "{shown}");
    assert!(shown.contains("OK"), "{shown}");
    for flag in ["--quiet", "-q", "--json"] {
        let quiet = verify(flag);
        assert!(!quiet.contains("verifying"), "{flag}: {quiet}");
    }
    // Piped (no terminal): no progress either.
    let o = Command::new(vault_e2e::vaultctl_bin())
        .args(["audit", "verify"])
        .arg(root.join("export"))
        .arg("--key")
        .arg(root.join("audit-key.pem"))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("verifying"));
}

/// `vaultctl doctor` says what is wrong in plain words, one check per
/// line, and fails (exit 1) when a check fails.
#[test]
fn doctor_names_what_is_wrong() {
    let a = Appliance::start(Options::default());
    a.issue("pam", "p1");
    let fp = {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&ctl(&a, "admin", &["--json", "cert", "list"], None)))
                .unwrap();
        v["principals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "p1")
            .unwrap()["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // All is well: every check ok, exit 0.
    let o = ok(&ctl(&a, "p1", &["doctor"], None));
    for line in [
        "ok   ca ",
        "ok   certificate ",
        "ok   connect ",
        "ok   principal ",
        "ok   seal ",
        "ok   clock ",
    ] {
        assert!(o.contains(line), "{line:?} in {o}");
    }
    assert!(o.contains("(role pam)"), "{o}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&ctl(&a, "p1", &["--json", "doctor"], None))).unwrap();
    assert_eq!(v["failed"], 0);
    assert!(v["checks"].as_array().unwrap().len() >= 7, "{v}");

    // A revoked certificate: the handshake works, the appliance refuses.
    ok(&ctl(&a, "admin", &["cert", "revoke", &fp], None));
    let o = ctl(&a, "p1", &["doctor"], None);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("FAIL principal") && text.contains("was revoked"),
        "{text}"
    );

    // Another CA: the client certificate is not from it, and TLS fails.
    let other = tempfile::tempdir().unwrap();
    let ca = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let ca_path = other.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let o = Command::new(vault_e2e::vaultctl_bin())
        .env_clear()
        .args(["--addr", &a.addr(), "--cacert", ca_path.to_str().unwrap()])
        .args(["--cert", a.certs.join("admin.pem").to_str().unwrap()])
        .args(["--key", a.certs.join("admin-key.pem").to_str().unwrap()])
        .arg("doctor")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("FAIL certificate") && text.contains("not by the CA in --cacert"),
        "{text}"
    );
    assert!(
        text.contains("FAIL connect") && text.contains("TLS handshake"),
        "{text}"
    );

    // Nothing listening.
    let port = vault_e2e::free_port();
    let o = Command::new(vault_e2e::vaultctl_bin())
        .env_clear()
        .args(["--addr", &format!("https://127.0.0.1:{port}")])
        .args(["--cacert", a.certs.join("ca.pem").to_str().unwrap()])
        .arg("doctor")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("warn certificate"), "{text}");
    assert!(
        text.contains("FAIL connect") && text.contains("nothing answers"),
        "{text}"
    );
}

/// Completions and man pages come from the same command definitions.
#[test]
fn completions_and_man_pages_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(vault_e2e::vaultctl_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = ok(&o);
        assert!(
            script.contains("governance") && script.contains("doctor"),
            "{shell}: {}",
            &script[..script.len().min(300)]
        );
    }
    let dir = tempfile::tempdir().unwrap();
    ok(&Command::new(vault_e2e::vaultctl_bin())
        .args(["man", "--out-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap());
    for page in [
        "vaultctl.1",
        "vaultctl-governance-apply.1",
        "vaultctl-doctor.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let top = std::fs::read_to_string(dir.path().join("vaultctl.1")).unwrap();
    assert!(
        top.contains("governance"),
        "the top page lists the commands"
    );
}
