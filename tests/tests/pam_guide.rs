//! docs/PAM-INTEGRATION.md's curl and Python examples, run exactly as
//! printed against a real appliance: each checks a secret out, renews or
//! registers a recording, and checks it in. The audit log shows it.

use std::process::Command;

use vault_e2e::{put, Appliance};

/// The first fenced block of `lang` after the heading `heading`.
fn block(doc: &str, heading: &str, lang: &str) -> String {
    let from = doc.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    let rest = &doc[from..];
    let open = format!("```{lang}\n");
    let start = rest
        .find(&open)
        .unwrap_or_else(|| panic!("no {lang} block"))
        + open.len();
    let len = rest[start..].find("\n```\n").unwrap();
    rest[start..start + len + 1].to_owned()
}

#[test]
fn the_guide_examples_work_as_printed() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/PAM-INTEGRATION.md"
    ))
    .unwrap();
    let a = Appliance::start(Default::default());
    let writer = a.issue("writer", "w1");
    let _pam = a.issue("pam", "pam01");
    assert_eq!(
        put(&writer, "db/backup", "guide-Value-7", false).status,
        200
    );
    let env = |c: &mut Command| {
        c.env("VAULT_ADDR", a.addr())
            .env("VAULT_CACERT", a.certs.join("ca.pem"))
            .env("VAULT_CERT", a.certs.join("pam01.pem"))
            .env("VAULT_KEY", a.certs.join("pam01-key.pem"))
            .env("VAULT_PATH", "db/backup");
    };
    let dir = tempfile::tempdir().unwrap();

    let sh = dir.path().join("guide.sh");
    std::fs::write(&sh, block(&doc, "### curl", "sh")).unwrap();
    let mut c = Command::new("bash");
    c.arg(&sh);
    env(&mut c);
    let out = vault_e2e::ok(&c.output().unwrap());
    assert!(out.starts_with("checked in "), "{out}");
    assert!(
        !out.contains("guide-Value-7"),
        "the example printed the value"
    );

    let py = dir.path().join("guide.py");
    std::fs::write(&py, block(&doc, "### Python", "python")).unwrap();
    let mut c = Command::new("python3");
    c.arg(&py);
    env(&mut c);
    let out = vault_e2e::ok(&c.output().unwrap());
    assert!(
        out.starts_with("checked out version 1, checked in "),
        "{out}"
    );

    let entries = a.audit_entries();
    let ok = |action: &str| {
        entries
            .iter()
            .filter(|e| {
                e.action == action
                    && e.principal == "pam01"
                    && format!("{:?}", e.outcome).to_lowercase() == "success"
            })
            .count()
    };
    assert_eq!(ok("secret.checkout"), 2);
    assert_eq!(ok("checkout.checkin"), 2);
    assert_eq!(ok("checkout.renew"), 1, "curl renews");
    assert_eq!(
        ok("checkout.recording"),
        1,
        "Python registers its recording"
    );
}
