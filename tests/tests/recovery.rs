//! Custodian recovery: the appliance's TPM and token are lost; its data file
//! is restored on a new box (new swtpm, new SoftHSM token), where it stays
//! sealed; `vaultctl recover` with two of three custodians' answers seals
//! the root key under the new devices, and the same secrets come back. The
//! audit log records it and verifies with the old and the new key.

use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Value};
use vault_core::custodian::approval::Decision;
use vault_core::custodian::recovery::RecoveryRequest;
use vault_core::custodian::token::{CustodianToken, SoftToken};
use vault_e2e::piv::{
    approve_and_apply, enroll_body, genesis, issue_governed, propose, recovery_answer, TestRoot,
};
use vault_e2e::{checkout, json_of, ok, put, req, vaultctl_bin, Appliance};

#[test]
fn k_custodians_restore_the_vault_on_new_hardware() {
    let root = TestRoot::new("Test PIV Root");
    let mut old = Appliance::start(root.options());
    let admin = old.admin();
    let writer = old.issue("writer", "w1");
    let auditor = old.issue("auditor", "aud");
    let mut tokens: Vec<(&str, SoftToken)> = ["alice", "bob", "carol"]
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, root.token(100 + i as u32)))
        .collect();
    for (n, t) in tokens.iter_mut() {
        let r = req(
            &admin,
            Method::POST,
            "/v1/custodians",
            Some(enroll_body(n, &["security"], t)),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(
        put(&writer, "prod/db", "before-the-fire", false).status,
        200
    );
    for (n, _) in &tokens {
        old.issue("custodian", n);
    }
    {
        let mut members: Vec<(&str, &mut SoftToken)> =
            tokens.iter_mut().map(|(n, t)| (*n, t)).collect();
        genesis(&old, json!([{"group": "security", "k": 2}]), &mut members);
        let id = propose(
            &old,
            Method::POST,
            "/v1/sys/recovery",
            json!({"group": "security", "k": 2}),
        );
        let r = approve_and_apply(&old, &id, &mut members[..2]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let old_key = json_of(&req(&auditor, Method::GET, "/v1/audit/public-key", None))
        ["public_key_pem"]
        .as_str()
        .unwrap()
        .to_owned();
    // The auditor's last trusted checkpoint, signed by the old key.
    let r = req(&auditor, Method::POST, "/v1/audit/checkpoint", None);
    assert_eq!(r.status, 200);
    let trusted_note = String::from_utf8(r.body.to_vec()).unwrap();
    old.stop();

    // The new box: its own swtpm and token, the old data file restored.
    let mut new = Appliance::create(root.options());
    let data = new.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for f in std::fs::read_dir(old.dir.path().join("data")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    std::fs::create_dir_all(&new.certs).unwrap();
    for f in ["admin.pem", "admin-key.pem", "ca.pem"] {
        std::fs::copy(old.certs.join(f), new.certs.join(f)).unwrap();
    }
    drop(old); // the old TPM and token are gone
    new.spawn();
    new.wait_ready();
    let s = json_of(&req(&new.admin(), Method::GET, "/v1/sys/seal-status", None));
    assert_eq!(s["sealed"], true, "the data file alone must not open: {s}");
    new.stop();

    for (from, to) in [
        ("admin.pem", "old-admin.pem"),
        ("admin-key.pem", "old-admin-key.pem"),
    ] {
        std::fs::copy(new.certs.join(from), new.dir.path().join(to)).unwrap();
    }
    // The ceremony.
    let dir = new.dir.path().to_owned();
    let (reqf, otk) = (dir.join("recovery.json"), dir.join("onetime.pem"));
    let cfg = new.config.to_str().unwrap().to_owned();
    ok(&new.vaultd(&[
        "recover",
        "begin",
        "--config",
        &cfg,
        "--reason",
        "INC-9 box destroyed",
        "--out",
        reqf.to_str().unwrap(),
        "--key-out",
        otk.to_str().unwrap(),
    ]));
    let write = |name: &str, v: Value| {
        let p = dir.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let mut answers = Vec::new();
    for (n, t) in tokens.iter_mut() {
        answers.push(write(&format!("{n}.json"), recovery_answer(&reqf, n, t)));
    }
    // Bob's share with a signature by alice's key: refused.
    let mut forged = recovery_answer(&reqf, "bob", &mut tokens[1].1);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&reqf).unwrap()).unwrap();
    let rq = RecoveryRequest::from_json(&v["request"]).unwrap();
    forged["signature"] = json!(B64.encode(
        tokens[0]
            .1
            .sign(&rq.approval().message(Decision::Approve, "bob"))
            .unwrap()
    ));
    let forged = write("forged.json", forged);
    let finish = |answers: &[&str]| {
        let mut args = vec![
            "recover",
            "finish",
            "--config",
            &cfg,
            "--request",
            reqf.to_str().unwrap(),
            "--one-time-key",
            otk.to_str().unwrap(),
            "--out",
            new.certs.to_str().unwrap(),
        ];
        args.extend_from_slice(answers);
        new.vaultd(&args)
    };
    for bad in [
        vec![answers[0].as_str()],
        vec![answers[0].as_str(), forged.as_str()],
    ] {
        let o = finish(&bad);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(String::from_utf8_lossy(&finish(&[&answers[0]]).stderr).contains("1 answers, 2 needed"));
    let o = finish(&[&answers[0], &forged]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bob"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = ok(&finish(&[&answers[0], &answers[2]]));
    assert!(out.contains("recovered"), "{out}");
    assert!(!otk.exists(), "the one-time key is deleted");

    // The new box unseals by itself and serves the same secret.
    new.spawn();
    new.wait_ready();
    let s = json_of(&req(&new.admin(), Method::GET, "/v1/sys/seal-status", None));
    assert_eq!(s["sealed"], false, "{s}");
    // Every earlier principal was revoked; the custodians' governance
    // survives the recovery. Custodians get new certificates (their
    // YubiKeys are their credential), and approve the new PAM server's.
    for (n, _) in &tokens {
        new.issue("custodian", n);
    }
    let pam = {
        let mut voters: Vec<(&str, &mut SoftToken)> =
            tokens.iter_mut().map(|(n, t)| (*n, t)).take(2).collect();
        issue_governed(&new, "pam", "pam01", &mut voters)
    };
    let r = checkout(&pam, "prod/db");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["value"], "before-the-fire");
    // The old CA's certificates are worthless here.
    let old_admin = vault_client::Client::new(
        &new.addr(),
        &new.ca_pem(),
        Some((
            &std::fs::read_to_string(dir.join("old-admin.pem")).unwrap(),
            &std::fs::read_to_string(dir.join("old-admin-key.pem")).unwrap(),
        )),
    )
    .unwrap();
    let r =
        vault_e2e::runtime().block_on(old_admin.request(Method::GET, "/v1/sys/seal-status", None));
    assert!(r.is_err(), "a certificate of the lost CA was accepted");

    // The audit log: the recovery is recorded, and the exported log verifies
    // with the old and the new checkpoint keys together, not with one alone.
    let aud = new.issue("auditor", "aud2");
    let pk = json_of(&req(&aud, Method::GET, "/v1/audit/public-key", None));
    let new_key = pk["public_key_pem"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    let entries = json_of(&req(
        &aud,
        Method::GET,
        "/v1/audit/entries?start=0&end=1000",
        None,
    ));
    let rec = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["decoded"]["action"] == "sys.recover")
        .expect("a sys.recover entry");
    assert_eq!(rec["decoded"]["details"]["custodians"], "alice,carol");
    let (old_pub, new_pub) = (dir.join("old.pub"), dir.join("new.pub"));
    std::fs::write(&old_pub, &old_key).unwrap();
    std::fs::write(&new_pub, &new_key).unwrap();
    let export = dir.join("export");
    let certs = new.certs.clone();
    let with_aud = |args: &[&str]| {
        Command::new(vaultctl_bin())
            .env_clear()
            .env("VAULT_ADDR", new.addr())
            .env("VAULT_CACERT", certs.join("ca.pem"))
            .env("VAULT_CERT", certs.join("aud2.pem"))
            .env("VAULT_KEY", certs.join("aud2-key.pem"))
            .args(args)
            .output()
            .unwrap()
    };
    ok(&with_aud(&[
        "audit",
        "export",
        "--out",
        export.to_str().unwrap(),
    ]));
    let e = export.to_str().unwrap();
    ok(&with_aud(&[
        "audit",
        "verify",
        e,
        "--key",
        new_pub.to_str().unwrap(),
        "--previous-key",
        old_pub.to_str().unwrap(),
    ]));
    // The auditor's checkpoint from before the fire was signed by the old
    // key: it chains to the new log only with the old key pinned too.
    let trusted = dir.join("trusted.note");
    std::fs::write(&trusted, &trusted_note).unwrap();
    let t = trusted.to_str().unwrap();
    let o = with_aud(&[
        "--json",
        "audit",
        "verify",
        e,
        "--key",
        new_pub.to_str().unwrap(),
        "--trusted-checkpoint",
        t,
    ]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["failure"]["kind"], "bad_checkpoint", "{v}");
    ok(&with_aud(&[
        "audit",
        "verify",
        e,
        "--key",
        new_pub.to_str().unwrap(),
        "--previous-key",
        old_pub.to_str().unwrap(),
        "--trusted-checkpoint",
        t,
    ]));
}
