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
