//! The custodian commands of the real `vaultctl` with a (virtual) YubiKey,
//! against the real `vaultd`: enrol with attestation, approve a gated
//! checkout on the card, and open a sealed-tier secret through break-glass
//! (the card opens the custodian's share with ECDH).
//!
//! Needs the virtual PIV card: run by `vaultd/piv/run-card-tests.sh` (part of
//! `make test`), which sets `VAULT_PIV_CARD_SERIAL` and
//! `VAULT_PIV_ATTESTATION_ROOT`. Skipped, saying so, without them.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use vault_e2e::piv::{enroll_body, recovery_answer, TestRoot};
use vault_e2e::{vaultctl_bin, Appliance, Options};

fn ctl(a: &Appliance, who: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(vaultctl_bin());
    c.env_clear()
        .env("SOFTHSM2_CONF", a.hsm.conf_path())
        .env("VAULT_ADDR", a.addr())
        .env("VAULT_CACERT", a.certs.join("ca.pem"))
        .env("VAULT_CERT", a.certs.join(format!("{who}.pem")))
        .env("VAULT_KEY", a.certs.join(format!("{who}-key.pem")))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Ok(sock) = std::env::var("PCSCLITE_CSOCK_NAME") {
        c.env("PCSCLITE_CSOCK_NAME", sock);
    }
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn vaultctl_custodian_flows_with_a_yubikey() {
    let Ok(serial) = std::env::var("VAULT_PIV_CARD_SERIAL") else {
        // The harness hides eprintln! of passing tests; say it on stderr itself.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED vaultctl_custodian_flows_with_a_yubikey: set VAULT_PIV_CARD_SERIAL (see vaultd/piv/run-card-tests.sh)"
        );
        return;
    };
    let root = std::env::var("VAULT_PIV_ATTESTATION_ROOT")
        .expect("VAULT_PIV_ATTESTATION_ROOT (the card's attestation root, PEM)");
    // The card's root, and a test root for a second (software) custodian.
    let soft_root = TestRoot::new("Test PIV Root");
    let mut a = Appliance::start(Options {
        extra_config: format!(
            "[custodians]\nattestation_roots = [\"{root}\", \"{}\"]\n",
            soft_root.root_path().display()
        ),
        ..Options::default()
    });
    let certs_dir = a.certs.clone();
    let certs = certs_dir.to_str().unwrap();
    for (role, name) in [("writer", "w1"), ("pam", "p1"), ("custodian", "alice")] {
        ok(&ctl(
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
    }
    let pin = a.dir.path().join("yubikey-pin");
    std::fs::write(&pin, "123456\n").unwrap();
    let pin = pin.to_str().unwrap();

    // Enrolment: keys generated on the card, attested, verified by vaultd.
    let out = ok(&ctl(
        &a,
        "admin",
        &[
            "custodian",
            "enroll",
            "--name",
            "alice",
            "--group",
            "security",
            "--serial",
            &serial,
            "--pin-policy",
            "once",
            "--touch-policy",
            "never",
        ],
        None,
    ));
    assert!(out.starts_with("enrolled alice (YubiKey "), "{out}");
    let list = json(&ok(&ctl(
        &a,
        "admin",
        &["--json", "custodian", "list"],
        None,
    )));
    let me = &list["custodians"][0];
    assert_eq!(me["serial"].to_string(), serial);
    assert_eq!(me["pin_policy"], "once");
    // The same keys again: refused.
    let o = ctl(
        &a,
        "admin",
        &[
            "custodian",
            "enroll",
            "--name",
            "alice2",
            "--group",
            "security",
            "--serial",
            &serial,
            "--reuse",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("key_already_enrolled"));

    // A gated checkout, approved on the card.
    ok(&ctl(
        &a,
        "w1",
        &["secret", "put", "prod/db"],
        Some("db-pw-1\n"),
    ));
    ok(&ctl(
        &a,
        "admin",
        &["policy", "prod/db", "--approvals", "security:1"],
        None,
    ));
    let o = ctl(
        &a,
        "p1",
        &["--json", "checkout", "prod/db", "--reason", "INC-1"],
        None,
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "a pending checkout is not a value"
    );
    let pending = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(pending["status"], "pending_approval");
    let id = pending["request_id"].as_str().unwrap().to_owned();
    let shown = ok(&ctl(&a, "alice", &["requests", "show", &id], None));
    assert!(
        shown.contains("requester p1") && shown.contains("reason    INC-1"),
        "{shown}"
    );
    let o = ok(&ctl(
        &a,
        "alice",
        &["approve", &id, "--serial", &serial, "--pin-file", pin],
        None,
    ));
    assert!(o.contains("approve recorded; request is approved"), "{o}");
    assert_eq!(ok(&ctl(&a, "p1", &["collect", &id], None)), "db-pw-1\n");

    // A wrong PIN signs nothing.
    let bad = a.dir.path().join("bad-pin");
    std::fs::write(&bad, "999999\n").unwrap();
    let o = ctl(
        &a,
        "p1",
        &["--json", "checkout", "prod/db", "--reason", "INC-2"],
        None,
    );
    let id2 = json(&String::from_utf8_lossy(&o.stdout))["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = ctl(
        &a,
        "alice",
        &[
            "approve",
            &id2,
            "--serial",
            &serial,
            "--pin-file",
            bad.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong PIN"));

    // Break-glass: the card opens alice's share and re-seals it to the
    // requester's one-time key; the requester decrypts locally.
    ok(&ctl(
        &a,
        "w1",
        &["secret", "put", "bg/root", "--sealed", "security:1"],
        Some("root-pw-9\n"),
    ));
    let key = a.dir.path().join("onetime.pem");
    let key = key.to_str().unwrap();
    let r = json(&ok(&ctl(
        &a,
        "p1",
        &[
            "--json",
            "breakglass",
            "request",
            "bg/root",
            "--reason",
            "INC-3",
            "--key-out",
            key,
        ],
        None,
    )));
    let bg = r["request_id"].as_str().unwrap().to_owned();
    let shown = ok(&ctl(&a, "alice", &["requests", "show", &bg], None));
    assert!(shown.contains("one-time key SHA-256"), "{shown}");
    ok(&ctl(
        &a,
        "alice",
        &["approve", &bg, "--serial", &serial, "--pin-file", pin],
        None,
    ));
    assert_eq!(
        ok(&ctl(
            &a,
            "p1",
            &["breakglass", "open", &bg, "--one-time-key", key],
            None
        )),
        "root-pw-9\n"
    );
    assert!(
        !std::path::Path::new(key).exists(),
        "the one-time key is deleted after use"
    );

    // Recovery: alice answers with the card through `vaultctl recover share`,
    // bob with a software token; `recover finish` re-seals the root key and
    // the vault comes back with its secrets.
    ok(&ctl(
        &a,
        "w1",
        &["secret", "put", "plain/x"],
        Some("plain-1\n"),
    ));
    let mut bob = soft_root.token(4242);
    let r = vault_e2e::req(
        &a.admin(),
        hyper::Method::POST,
        "/v1/custodians",
        Some(enroll_body("bob", &["security"], &mut bob)),
    );
    assert_eq!(r.status, 200);
    let r = vault_e2e::req(
        &a.admin(),
        hyper::Method::POST,
        "/v1/sys/recovery",
        Some(serde_json::json!({"group": "security", "k": 2})),
    );
    assert_eq!(r.status, 200);
    a.stop();
    let d = a.dir.path().to_owned();
    let cfg = a.config.to_str().unwrap().to_owned();
    let (reqf, otk) = (d.join("recovery.json"), d.join("recovery-otk.pem"));
    let (reqs, otks) = (reqf.to_str().unwrap(), otk.to_str().unwrap());
    ok(&ctl(
        &a,
        "admin",
        &[
            "recover",
            "begin",
            "--config",
            &cfg,
            "--reason",
            "drill",
            "--out",
            reqs,
            "--key-out",
            otks,
        ],
        None,
    ));
    let alice_answer = d.join("alice-answer.json");
    let o = ok(&ctl(
        &a,
        "alice",
        &[
            "recover",
            "share",
            reqs,
            "--as",
            "alice",
            "--serial",
            &serial,
            "--pin-file",
            pin,
            "--out",
            alice_answer.to_str().unwrap(),
        ],
        None,
    ));
    assert!(o.contains("answer written"), "{o}");
    let bob_answer = d.join("bob-answer.json");
    std::fs::write(
        &bob_answer,
        recovery_answer(&reqf, "bob", &mut bob).to_string(),
    )
    .unwrap();
    let o = ok(&ctl(
        &a,
        "admin",
        &[
            "recover",
            "finish",
            "--config",
            &cfg,
            "--request",
            reqs,
            "--one-time-key",
            otks,
            "--out",
            certs,
            alice_answer.to_str().unwrap(),
            bob_answer.to_str().unwrap(),
        ],
        None,
    ));
    assert!(o.contains("recovered"), "{o}");
    a.spawn();
    a.wait_ready();
    ok(&ctl(
        &a,
        "admin",
        &[
            "cert",
            "issue",
            "--role",
            "pam",
            "--name",
            "p2",
            "--out-dir",
            certs,
        ],
        None,
    ));
    assert_eq!(
        ok(&ctl(
            &a,
            "p2",
            &["checkout", "plain/x", "--reason", "after"],
            None
        )),
        "plain-1\n"
    );
}
