//! Issue 12, item 8: session evidence. A PAM server registers a session
//! recording's SHA-256 and size with its checkout; the appliance keeps only
//! the audit entry; an auditor proves a recording file unchanged, offline,
//! against an exported signed log (`vaultctl audit verify-recording`). Tried
//! as each role that should not register one, and with a changed file, a
//! wrong checkout and a tampered export.

use hyper::Method;
use serde_json::{json, Value};
use vault_client::Client;
use vault_core::audit::entry::Outcome;
use vault_e2e::{json_of, put, req, Appliance, Options};

fn checkout_id(c: &Client, path: &str) -> String {
    let r = req(
        c,
        Method::POST,
        &format!("/v1/secrets/{path}/checkout"),
        Some(json!({"reason": "session", "ttl_seconds": 600})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    json_of(&r)["checkout_id"].as_str().unwrap().to_owned()
}

fn now_rfc3339(offset: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn register(c: &Client, id: &str, body: Value) -> (u16, Option<String>) {
    let r = req(
        c,
        Method::POST,
        &format!("/v1/checkouts/{id}/recordings"),
        Some(body),
    );
    (r.status, r.error_code())
}

fn verify(
    a: &Appliance,
    file: &std::path::Path,
    id: &str,
    dir: &std::path::Path,
    key: &std::path::Path,
) -> (i32, Value, String) {
    let o = a.vaultctl(
        "aud",
        &[
            "--json",
            "audit",
            "verify-recording",
            file.to_str().unwrap(),
            "--checkout",
            id,
            "--dir",
            dir.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let v: Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (
        o.status.code().unwrap_or(-1),
        v,
        stdout + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn a_recording_is_registered_by_its_checkout_owner_and_verified_offline() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    let other = a.issue("pam", "p2");
    let aud = a.issue("auditor", "aud");
    let admin = a.admin();
    assert_eq!(put(&writer, "ssh/web1", "root-pw-1", false).status, 200);
    let id = checkout_id(&pam, "ssh/web1");
    let id2 = checkout_id(&other, "ssh/web1");

    // The recording, registered with vaultctl (which hashes the file).
    let rec = a.dir.path().join("session.cast");
    let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&rec, &content).unwrap();
    let (started, ended) = (now_rfc3339(-5), now_rfc3339(0));
    let o = a.vaultctl(
        "p1",
        &[
            "--json",
            "lease",
            "record",
            &id,
            rec.to_str().unwrap(),
            "--started",
            &started,
            "--ended",
            &ended,
            "--label",
            "bastion-1:sess-42",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["size"], 800_000);
    assert_eq!(v["path"], "ssh/web1");
    let sha = v["sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha.len(), 64);

    // Abuse and bad input: each refused with its code, nothing registered.
    let good =
        json!({"sha256": "ab".repeat(32), "size": 1, "started_at": started, "ended_at": ended});
    let with = |k: &str, val: Value| {
        let mut b = good.clone();
        b[k] = val;
        b
    };
    assert_eq!(
        register(&other, &id, good.clone()),
        (403, Some("forbidden".into())),
        "another PAM server"
    );
    for (who, c) in [("admin", &admin), ("writer", &writer), ("auditor", &aud)] {
        assert_eq!(register(c, &id, good.clone()).0, 403, "{who}");
    }
    let unknown = "0f0e0d0c-0b0a-4000-8000-000000000001";
    assert_eq!(
        register(&pam, unknown, good.clone()),
        (404, Some("not_found".into()))
    );
    assert_eq!(
        register(&pam, "not-a-uuid", good.clone()),
        (400, Some("invalid_checkout_id".into()))
    );
    let (json_err, rec_err) = ("invalid_json", "invalid_recording");
    for (body, want, why) in [
        (
            with("sha256", json!("AB".repeat(32))),
            rec_err,
            "upper-case hex",
        ),
        (with("sha256", json!("ab")), rec_err, "short hash"),
        (with("size", json!(-1)), json_err, "negative size"),
        (
            with("size", json!(9_007_199_254_740_992u64)),
            rec_err,
            "size past 2^53",
        ),
        (
            with("started_at", json!("yesterday")),
            rec_err,
            "not a time",
        ),
        (
            with("ended_at", json!(now_rfc3339(-60))),
            rec_err,
            "ends before it starts",
        ),
        (
            with("ended_at", json!(now_rfc3339(3600))),
            rec_err,
            "ends in the future",
        ),
        (with("label", json!("a b")), rec_err, "label with a space"),
        (
            with("label", json!("x".repeat(129))),
            rec_err,
            "label too long",
        ),
    ] {
        assert_eq!(register(&pam, &id, body), (400, Some(want.into())), "{why}");
    }
    assert_eq!(
        register(&pam, &id, with("unknown", json!(1))),
        (400, Some("invalid_json".into()))
    );
    assert_eq!(
        register(&pam, &id, with("started_at", json!(now_rfc3339(-3600)))),
        (409, Some("recording_before_checkout".into())),
        "a session that began long before the checkout"
    );

    // After check-in the owner still registers (recordings arrive late).
    let r = req(
        &pam,
        Method::POST,
        &format!("/v1/checkouts/{id}/checkin"),
        None,
    );
    assert_eq!(r.status, 200);
    let late = json!({"sha256": "cd".repeat(32), "size": 7, "started_at": started, "ended_at": now_rfc3339(0)});
    assert_eq!(register(&pam, &id, late).0, 200);

    // The audit entries: one success per registration, with the checkout's
    // path, version and owner; the refusals denied, under their callers.
    let entries = a.audit_entries();
    let regs: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "checkout.recording")
        .collect();
    let ok: Vec<_> = regs
        .iter()
        .filter(|e| e.outcome == Outcome::Success)
        .collect();
    assert_eq!(ok.len(), 2, "{ok:?}");
    assert_eq!(ok[0].target, id);
    assert_eq!(ok[0].details["sha256"], sha);
    assert_eq!(ok[0].details["size"], "800000");
    assert_eq!(ok[0].details["owner"], "p1");
    assert_eq!(ok[0].details["path"], "ssh/web1");
    assert_eq!(ok[0].details["label"], "bastion-1:sess-42");
    assert!(regs
        .iter()
        .any(|e| e.principal == "p2" && e.outcome != Outcome::Success));

    // Offline: export, then verify the file.
    let key = a.dir.path().join("audit.pub");
    let pk = json_of(&req(&aud, Method::GET, "/v1/audit/public-key", None));
    std::fs::write(&key, pk["public_key_pem"].as_str().unwrap()).unwrap();
    let dir = a.dir.path().join("export");
    let o = a.vaultctl(
        "aud",
        &["audit", "export", "--out", dir.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, v, all) = verify(&a, &rec, &id, &dir, &key);
    assert_eq!(code, 0, "{all}");
    assert_eq!(v["verified"], true);
    assert_eq!(v["sha256"], sha);
    assert_eq!(v["registration"]["principal"], "p1");
    assert!(v["checkpoint_size"].as_u64().unwrap() > v["registration"]["index"].as_u64().unwrap());
    assert!(!v["inclusion_proof"].as_array().unwrap().is_empty());
    // The human verdict says so too.
    let o = a.vaultctl(
        "aud",
        &[
            "audit",
            "verify-recording",
            rec.to_str().unwrap(),
            "--checkout",
            &id,
            "--dir",
            dir.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("VERIFIED: "),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // One changed byte: not the registered recording (exit 5).
    let mut changed = content.clone();
    changed[12_345] ^= 1;
    let bad = a.dir.path().join("changed.cast");
    std::fs::write(&bad, &changed).unwrap();
    let (code, v, all) = verify(&a, &bad, &id, &dir, &key);
    assert_eq!(code, 5, "{all}");
    assert_eq!(v["verified"], false);
    assert_eq!(v["registered"].as_array().unwrap().len(), 2, "{v}");
    // The right file under the wrong checkout.
    let (code, v, all) = verify(&a, &rec, &id2, &dir, &key);
    assert_eq!(code, 5, "{all}");
    assert!(
        v["message"].as_str().unwrap().contains("no recording"),
        "{v}"
    );
    // A tampered export: the registration's size edited in entries.log.
    let log = dir.join("entries.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let needle = b"\"size\":\"800000\"";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the entry");
    bytes[at + 9] = b'9';
    std::fs::write(&log, &bytes).unwrap();
    let (code, _, all) = verify(&a, &rec, &id, &dir, &key);
    assert_eq!(code, 5, "{all}");
    assert!(all.contains("did not verify"), "{all}");
}
