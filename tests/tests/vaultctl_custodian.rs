//! The custodian commands of the real `vaultctl` with three (virtual)
//! YubiKeys of distinct serials, against the real `vaultd`: attested
//! enrolment, a 2-of-3 approval, a break-glass retrieval (the cards open the
//! shares with ECDH), a wrong PIN, and recovery onto a new swtpm and
//! SoftHSM token with two cards' answers.
//!
//! Needs the virtual PIV cards: run by `vaultd/piv/run-card-tests.sh` (part
//! of `make test`), which sets `VAULT_PIV_CARD_SERIALS` (three serials) and
//! `VAULT_PIV_ATTESTATION_ROOT`. Skipped, saying so, without them.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Value};
use vault_e2e::{json_of, ok, req, vaultctl_bin, Appliance, Options};

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

/// A refusal by the server: exit 1 and the code on stderr.
fn refused(o: &Output, code: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(code), "want {code}: {err}");
}

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// The virtual cards cannot be touched (piv-card has no button), so their
/// keys are made with touch never and PIN once; this appliance turns the
/// touch and PIN-always requirements (on by default) off explicitly.
fn options(root: &str) -> Options {
    Options {
        extra_config: format!(
            "[custodians]\nattestation_roots = [\"{root}\"]\n\
             # virtual PIV cards: no touch, keys made with PIN once\n\
             require_touch = false\nrequire_pin_always = false\n"
        ),
        ..Options::default()
    }
}

#[test]
fn three_yubikeys_through_vaultctl() {
    let Ok(serials) = std::env::var("VAULT_PIV_CARD_SERIALS") else {
        // The harness hides eprintln! of passing tests; say it on stderr itself.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED three_yubikeys_through_vaultctl: set VAULT_PIV_CARD_SERIALS (see vaultd/piv/run-card-tests.sh)"
        );
        return;
    };
    let serials: Vec<String> = serials.split(',').map(str::to_owned).collect();
    assert_eq!(serials.len(), 3, "three card serials");
    let root = std::env::var("VAULT_PIV_ATTESTATION_ROOT")
        .expect("VAULT_PIV_ATTESTATION_ROOT (the cards' attestation root, PEM)");
    let mut a = Appliance::start(options(&root));
    let certs_dir = a.certs.clone();
    let certs = certs_dir.to_str().unwrap();
    let names = ["alice", "bob", "carol"];
    for (role, name) in [("writer", "w1"), ("pam", "p1"), ("auditor", "aud")]
        .into_iter()
        .chain(names.iter().map(|n| ("custodian", *n)))
    {
        // The PAM server may check out everything (access grants).
        let mut args = vec!["cert", "issue", "--role", role, "--name", name];
        if role == "pam" {
            args.extend(["--grant", "*"]);
        }
        args.extend(["--out-dir", certs]);
        ok(&ctl(&a, "admin", &args, None));
    }
    let pin = a.dir.path().join("yubikey-pin");
    std::fs::write(&pin, "123456\n").unwrap();
    let pin = pin.to_str().unwrap().to_owned();
    let approve = |a: &Appliance, who: usize, id: &str, extra: &[&str]| {
        let mut args = vec!["approve", id, "--serial", &serials[who], "--pin-file", &pin];
        args.extend_from_slice(extra);
        ctl(a, names[who], &args, None)
    };

    // ---- enrolment: keys generated on each card, attested, verified by vaultd
    for (i, n) in names.iter().enumerate() {
        let out = ok(&ctl(
            &a,
            "admin",
            &[
                "custodian",
                "enroll",
                "--name",
                n,
                "--group",
                "security",
                "--serial",
                &serials[i],
                "--pin-policy",
                "once",
                "--touch-policy",
                "never",
            ],
            None,
        ));
        assert!(out.starts_with(&format!("enrolled {n} (YubiKey ")), "{out}");
    }
    let list = json(&ok(&ctl(
        &a,
        "admin",
        &["--json", "custodian", "list"],
        None,
    )));
    let got: Vec<String> = list["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].to_string())
        .collect();
    assert_eq!(got, serials, "one custodian per card, by serial");
    // The same keys again: refused.
    let o = ctl(
        &a,
        "admin",
        &[
            "custodian",
            "enroll",
            "--name",
            "dave",
            "--group",
            "security",
            "--serial",
            &serials[0],
            "--reuse",
        ],
        None,
    );
    refused(&o, "key_already_enrolled");

    // ---- a 2-of-3 approval through vaultctl
    ok(&ctl(
        &a,
        "w1",
        &["secret", "put", "prod/db"],
        Some("db-pw-1\n"),
    ));
    ok(&ctl(
        &a,
        "w1",
        &["secret", "put", "plain/x"],
        Some("plain-1\n"),
    ));
    ok(&ctl(
        &a,
        "admin",
        &["policy", "prod/db", "--approvals", "security:2"],
        None,
    ));
    let pending = |a: &Appliance, reason: &str| -> String {
        let o = ctl(
            a,
            "p1",
            &["--json", "checkout", "prod/db", "--reason", reason],
            None,
        );
        assert_eq!(
            o.status.code(),
            Some(1),
            "a pending checkout is not a value"
        );
        let v = json(&String::from_utf8_lossy(&o.stdout));
        assert_eq!(v["status"], "pending_approval");
        v["request_id"].as_str().unwrap().to_owned()
    };
    let id = pending(&a, "INC-1");
    let shown = ok(&ctl(&a, "alice", &["requests", "show", &id], None));
    assert!(
        shown.contains("requester p1") && shown.contains("reason    INC-1"),
        "{shown}"
    );
    let o = ok(&approve(&a, 0, &id, &[]));
    assert!(
        o.contains("approve recorded; request is pending_approval"),
        "{o}"
    );
    refused(&approve(&a, 0, &id, &[]), "duplicate_vote");
    refused(&ctl(&a, "p1", &["collect", &id], None), "pending_approval");
    let o = ok(&approve(&a, 1, &id, &[]));
    assert!(o.contains("request is approved"), "{o}");
    assert_eq!(ok(&ctl(&a, "p1", &["collect", &id], None)), "db-pw-1\n");
    refused(&ctl(&a, "p1", &["collect", &id], None), "already_collected");

    // A signature made on a card for one request, replayed on another.
    let id2 = pending(&a, "INC-2");
    let first = json_of(&req(
        &a.client("aud"),
        Method::GET,
        &format!("/v1/requests/{id}"),
        None,
    ));
    let sig = first["votes"][0]["signature"].as_str().unwrap();
    let r = req(
        &a.client("alice"),
        Method::POST,
        &format!("/v1/requests/{id2}/vote"),
        Some(json!({"decision": "approve", "signature": sig})),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code().as_deref(), Some("bad_signature"));
    // A wrong PIN signs nothing and says how many tries are left.
    let bad = a.dir.path().join("bad-pin");
    std::fs::write(&bad, "999999\n").unwrap();
    let o = ctl(
        &a,
        "carol",
        &[
            "approve",
            &id2,
            "--serial",
            &serials[2],
            "--pin-file",
            bad.to_str().unwrap(),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("wrong PIN (2 tries left)"), "{err}");
    // Carol denies with her card: the request is vetoed.
    let o = ok(&approve(&a, 2, &id2, &["--deny"]));
    assert!(o.contains("deny recorded; request is denied"), "{o}");
    refused(&ctl(&a, "p1", &["collect", &id2], None), "request_denied");

    // ---- break-glass, 2 of 3: two cards open their shares with ECDH and
    // re-seal them to the requester's one-time key.
    ok(&ctl(
        &a,
        "w1",
        &["secret", "put", "bg/root", "--sealed", "security:2"],
        Some("root-pw-9\n"),
    ));
    refused(
        &ctl(&a, "p1", &["checkout", "bg/root", "--reason", "x"], None),
        "sealed_tier",
    );
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
    let shown = ok(&ctl(&a, "carol", &["requests", "show", &bg], None));
    assert!(shown.contains("one-time key SHA-256"), "{shown}");
    ok(&approve(&a, 0, &bg, &[]));
    refused(
        &ctl(
            &a,
            "p1",
            &["breakglass", "open", &bg, "--one-time-key", key],
            None,
        ),
        "pending_approval",
    );
    ok(&approve(&a, 2, &bg, &[]));
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

    // Every step above is in the audit log.
    let entries = json_of(&req(
        &a.client("aud"),
        Method::GET,
        "/v1/audit/entries?start=0&end=1000",
        None,
    ));
    let seen: Vec<(String, String)> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let d: Value =
                serde_json::from_slice(&B64.decode(e["entry"].as_str().unwrap()).unwrap()).unwrap();
            (
                d["action"].as_str().unwrap().to_owned(),
                d["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (act, err) in [
        ("custodian.enroll", ""),
        ("custodian.enroll", "key_already_enrolled"),
        ("approval.vote", ""),
        ("approval.vote", "duplicate_vote"),
        ("approval.vote", "bad_signature"),
        ("request.collect", "pending_approval"),
        ("request.collect", "already_collected"),
        ("request.collect", "request_denied"),
        ("breakglass.collect", ""),
    ] {
        assert!(
            seen.iter().any(|(a, e)| a == act && e == err),
            "no audit entry {act} {err:?}"
        );
    }

    // ---- the governance quorum, on the cards: the genesis needs all three.
    let refused_recovery = ctl(
        &a,
        "admin",
        &["governance", "recovery", "--group", "security", "--k", "2"],
        None,
    );
    refused(&refused_recovery, "governance_required");
    let g = json(&ok(&ctl(
        &a,
        "admin",
        &[
            "--json",
            "governance",
            "genesis",
            "--rule",
            "security:2",
            "--reason",
            "ceremony",
        ],
        None,
    )));
    let gid = g["request_id"].as_str().unwrap().to_owned();
    let shown = ok(&ctl(&a, "alice", &["governance", "show", &gid], None));
    assert!(
        shown.contains("change    genesis (SHA-256 ") && shown.contains("\"name\": \"carol\""),
        "the custodian sees the whole set before signing: {shown}"
    );
    for who in 0..2 {
        ok(&approve(&a, who, &gid, &[]));
    }
    refused(
        &ctl(&a, "admin", &["governance", "apply", &gid], None),
        "pending_approval",
    );
    ok(&approve(&a, 2, &gid, &[]));
    let o = ok(&ctl(&a, "admin", &["governance", "apply", &gid], None));
    assert!(o.contains("applied governance/rule (genesis)"), "{o}");
    let st = ok(&ctl(&a, "aud", &["governance", "status"], None));
    assert!(st.contains("governance established"), "{st}");
    // A custodian's groups: a governance change, through vaultctl.
    let g = json(&ok(&ctl(
        &a,
        "admin",
        &[
            "--json",
            "custodian",
            "groups",
            "carol",
            "--group",
            "security",
            "--group",
            "ops",
        ],
        None,
    )));
    let gid = g["request_id"].as_str().unwrap().to_owned();
    for who in [0, 1] {
        ok(&approve(&a, who, &gid, &[]));
    }
    let o = ok(&ctl(&a, "admin", &["governance", "apply", &gid], None));
    assert!(
        o.contains("applied custodians/carol (set_custodian_groups)"),
        "{o}"
    );
    let list = ok(&ctl(&a, "aud", &["custodian", "list"], None));
    assert!(list.contains("[\"ops\",\"security\"]"), "{list}");

    // ---- recovery onto a new swtpm and SoftHSM token, with two cards
    let r = json(&ok(&ctl(
        &a,
        "admin",
        &[
            "--json",
            "governance",
            "recovery",
            "--group",
            "security",
            "--k",
            "2",
        ],
        None,
    )));
    let rid = r["request_id"].as_str().unwrap().to_owned();
    let listed = ok(&ctl(&a, "bob", &["governance", "list"], None));
    assert!(
        listed.contains(&rid) && listed.contains("recovery/security"),
        "{listed}"
    );
    for who in [0, 1] {
        ok(&approve(&a, who, &rid, &[]));
    }
    ok(&ctl(&a, "admin", &["governance", "apply", &rid], None));
    a.stop();
    let mut new = Appliance::create(options(&root));
    let data = new.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for f in std::fs::read_dir(a.dir.path().join("data")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    let d = new.dir.path().to_owned();
    let cfg = new.config.to_str().unwrap().to_owned();
    let (reqf, otk) = (d.join("recovery.json"), d.join("recovery-otk.pem"));
    let (reqs, otks) = (reqf.to_str().unwrap(), otk.to_str().unwrap());
    ok(&new.vaultd(&[
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
    ]));
    let mut answers = Vec::new();
    for i in [0usize, 1] {
        let file = d.join(format!("{}-answer.json", names[i]));
        let o = ok(&ctl(
            &new,
            names[i],
            &[
                "recover",
                "share",
                reqs,
                "--as",
                names[i],
                "--serial",
                &serials[i],
                "--pin-file",
                &pin,
                "--out",
                file.to_str().unwrap(),
            ],
            None,
        ));
        assert!(o.contains("answer written"), "{o}");
        answers.push(file.to_str().unwrap().to_owned());
    }
    let new_certs = new.certs.to_str().unwrap().to_owned();
    let o = ok(&new.vaultd(&[
        "recover",
        "finish",
        "--config",
        &cfg,
        "--request",
        reqs,
        "--one-time-key",
        otks,
        "--out",
        &new_certs,
        &answers[0],
        &answers[1],
    ]));
    assert!(o.contains("recovered"), "{o}");
    new.spawn();
    new.wait_ready();
    // The governance survived the recovery: the custodians get new
    // certificates (immediate), and a PAM server's needs their cards.
    for n in &names[..2] {
        ok(&ctl(
            &new,
            "admin",
            &[
                "cert",
                "issue",
                "--role",
                "custodian",
                "--name",
                n,
                "--out-dir",
                &new_certs,
            ],
            None,
        ));
    }
    let p = json(&ok(&ctl(
        &new,
        "admin",
        &[
            "--json",
            "cert",
            "issue",
            "--role",
            "pam",
            "--name",
            "p2",
            "--grant",
            "plain/",
            "--out-dir",
            &new_certs,
        ],
        None,
    )));
    let pid = p["request_id"].as_str().unwrap().to_owned();
    assert!(
        !new.certs.join("p2.pem").exists(),
        "no certificate before the quorum"
    );
    let shown = ok(&ctl(&new, "alice", &["governance", "show", &pid], None));
    assert!(
        shown.contains("\"csr_pem\": \"("),
        "the CSR by its hash: {shown}"
    );
    for who in [0, 1] {
        ok(&approve(&new, who, &pid, &[]));
    }
    let o = ok(&ctl(
        &new,
        "admin",
        &["governance", "apply", &pid, "--out-dir", &new_certs],
        None,
    ));
    assert!(o.contains("issued pam certificate for p2"), "{o}");
    assert_eq!(
        ok(&ctl(
            &new,
            "p2",
            &["checkout", "plain/x", "--reason", "after"],
            None
        )),
        "plain-1\n"
    );
}
