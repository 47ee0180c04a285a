//! Secret lifecycle (issue 12, item 6) against the real vaultd: a named
//! older version is checked out and audited as such; destroying old
//! versions and deleting a secret are admin actions, immediate on a fresh
//! appliance and governance changes once the custodian quorum exists; a
//! destroyed value is gone from the data file and never handed out again.
//! Tried as the admin, a PAM server, a writer and an auditor.

use hyper::Method;
use serde_json::{json, Value};
use vault_e2e::piv::{alice_and_bob_genesis, approve_and_apply, proposed, TestRoot};
use vault_e2e::{checkout, json_of, put, req, Appliance};

fn code(r: &vault_client::Response) -> (u16, String) {
    (r.status, r.error_code().unwrap_or_default())
}

fn named(c: &vault_client::Client, path: &str, version: u64) -> vault_client::Response {
    req(
        c,
        Method::POST,
        &format!("/v1/secrets/{path}/checkout"),
        Some(json!({"reason": "restore from backup", "ttl_seconds": 60, "version": version})),
    )
}

fn destroy(c: &vault_client::Client, path: &str, query: &str) -> vault_client::Response {
    req(
        c,
        Method::DELETE,
        &format!("/v1/secrets/{path}{query}"),
        None,
    )
}

fn checkin(c: &vault_client::Client, r: &vault_client::Response) {
    vault_e2e::checkin(c, json_of(r)["checkout_id"].as_str().unwrap());
}

/// The stored ciphertext of a version, read from the data file.
fn ciphertext(a: &Appliance, path: &str, version: i64) -> Vec<u8> {
    let db = rusqlite::Connection::open_with_flags(
        a.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row(
        "SELECT ciphertext FROM secret_versions WHERE path = ?1 AND version = ?2",
        rusqlite::params![path, version],
        |r| r.get(0),
    )
    .unwrap()
}

/// Whether `needle` occurs in the data file or its write-ahead log.
fn on_disk(a: &Appliance, needle: &[u8]) -> bool {
    let db = a.db_path();
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    [db, wal.into()].iter().any(|p| {
        std::fs::read(p)
            .map(|b| b.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

#[test]
fn old_versions_are_checked_out_by_name_destroyed_and_deleted() {
    let root = TestRoot::new("Test PIV Root");
    let mut a = Appliance::start(root.options());
    let admin = a.admin();
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    let aud = a.issue("auditor", "aud");
    // A value long enough that its ciphertext cannot occur by chance.
    let long = |n: u32| format!("{n}-{}", "x".repeat(600));
    for n in 1..=3 {
        assert_eq!(put(&writer, "db/root", &long(n), false).status, 200);
    }

    // A named older version, audited as such; the current one by number is
    // an ordinary checkout.
    let r = named(&pam, "db/root", 1);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_of(&r);
    assert_eq!(
        (v["version"].as_u64(), v["value"].as_str()),
        (Some(1), Some(long(1).as_str()))
    );
    checkin(&pam, &r);
    let r = named(&pam, "db/root", 3);
    assert_eq!(json_of(&r)["value"], long(3));
    checkin(&pam, &r);
    assert_eq!(code(&named(&pam, "db/root", 4)), (404, "not_found".into()));
    assert_eq!(
        code(&named(&pam, "db/root", 0)),
        (400, "invalid_body".into())
    );
    let entries = a.audit_entries();
    let older: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "secret.checkout" && e.details.contains_key("named_version"))
        .collect();
    assert_eq!(older.len(), 1, "only the older version is marked");
    assert_eq!(older[0].details["version"], "1");
    assert_eq!(older[0].details["current_version"], "3");

    // Only the admin destroys or deletes: not the PAM server, a writer or
    // an auditor, and nothing changes when they try.
    for (who, c) in [("pam", &pam), ("writer", &writer), ("auditor", &aud)] {
        assert_eq!(
            code(&destroy(c, "db/root", "?versions=1")),
            (403, "forbidden".into()),
            "{who}"
        );
        assert_eq!(
            code(&destroy(c, "db/root", "")),
            (403, "forbidden".into()),
            "{who}"
        );
    }
    assert_eq!(named(&pam, "db/root", 1).status, 200, "still there");
    // Bad input: a clear code, nothing destroyed.
    for bad in [
        "?versions=",
        "?versions=0",
        "?versions=1,1",
        "?versions=a",
        "?versions=1&x=2",
    ] {
        let r = destroy(&admin, "db/root", bad);
        assert_eq!(r.status, 400, "{bad}: {}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(
        code(&destroy(&admin, "db/root", "?versions=3")),
        (409, "version_current".into())
    );
    assert_eq!(
        code(&destroy(&admin, "db/root", "?versions=1,3")),
        (409, "version_current".into())
    );
    assert_eq!(
        code(&destroy(&admin, "db/root", "?versions=9")),
        (404, "not_found".into())
    );
    assert_eq!(
        code(&destroy(&admin, "no/such", "")),
        (404, "not_found".into())
    );
    assert_eq!(
        named(&pam, "db/root", 1).status,
        200,
        "a refusal destroyed nothing"
    );

    // Before genesis the admin destroys at once; the value is gone from the
    // data file (not left in a free page) and never handed out again.
    let old = ciphertext(&a, "db/root", 1);
    assert!(old.len() > 600 && on_disk(&a, &old));
    let r = destroy(&admin, "db/root", "?versions=1&reason=INC-9%20leaked");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_of(&r);
    assert_eq!(v["destroyed_versions"], json!([1]));
    assert_eq!(v["deleted"], false);
    assert_eq!(
        v["open_checkouts"].as_array().unwrap().len(),
        2,
        "the unreturned leases"
    );
    assert_eq!(
        code(&named(&pam, "db/root", 1)),
        (409, "version_destroyed".into())
    );
    let info = json_of(&req(&aud, Method::GET, "/v1/secrets/db/root", None));
    assert!(info["versions"][0]["destroyed_at"].is_string());
    assert_eq!(info["versions"][0]["destroyed_by"], "admin");
    assert!(info["versions"][1]["destroyed_at"].is_null());
    a.stop();
    assert!(
        !on_disk(&a, &old),
        "the destroyed ciphertext is still in the data file"
    );
    a.restart();
    assert_eq!(
        code(&named(&pam, "db/root", 1)),
        (409, "version_destroyed".into())
    );
    assert_eq!(json_of(&named(&pam, "db/root", 2))["value"], long(2));
    assert_eq!(json_of(&checkout(&pam, "db/root"))["value"], long(3));

    // Deleting: every version destroyed, the secret gone from listings and
    // checkouts, its history readable, its numbers continued by a write.
    assert_eq!(put(&writer, "db/gone", "g1", false).status, 200);
    assert_eq!(put(&writer, "db/gone", "g2", false).status, 200);
    let r = destroy(&admin, "db/gone", "?reason=decommissioned");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["destroyed_versions"], json!([1, 2]));
    assert_eq!(code(&checkout(&pam, "db/gone")), (404, "not_found".into()));
    assert_eq!(code(&named(&pam, "db/gone", 1)), (404, "not_found".into()));
    let list = json_of(&req(&aud, Method::GET, "/v1/secrets?prefix=db/", None));
    let paths: Vec<&str> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["db/root"]);
    let info = json_of(&req(&aud, Method::GET, "/v1/secrets/db/gone", None));
    assert!(info["deleted_at"].is_string());
    assert_eq!(
        code(&destroy(&admin, "db/gone", "")),
        (404, "not_found".into()),
        "deleted already"
    );
    let r = put(&writer, "db/gone", "g3", false);
    assert_eq!(
        json_of(&r)["version"],
        3,
        "numbers continue after a deletion"
    );
    assert_eq!(json_of(&checkout(&pam, "db/gone"))["value"], "g3");

    // ---- after genesis: one admin can no longer erase anything.
    let (mut alice, mut bob) = alice_and_bob_genesis(&a, &root, [4201, 4202]);
    let (id, change) = proposed(&destroy(&admin, "db/root", "?versions=2"));
    assert_eq!(
        change,
        json!({"change": "destroy_versions", "path": "db/root", "versions": [2]})
    );
    assert_eq!(
        json_of(&named(&pam, "db/root", 2))["value"],
        long(2),
        "not before the quorum"
    );
    let r = approve_and_apply(&a, &id, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        code(&named(&pam, "db/root", 2)),
        (409, "version_destroyed".into())
    );

    let (id, change) = proposed(&destroy(&admin, "db/gone", ""));
    assert_eq!(
        change,
        json!({"change": "delete_secret", "path": "db/gone"})
    );
    assert_eq!(
        checkout(&pam, "db/gone").status,
        200,
        "not before the quorum"
    );
    let r = approve_and_apply(&a, &id, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(code(&checkout(&pam, "db/gone")), (404, "not_found".into()));

    // An older version of a secret that needs approvals is refused: its
    // requests and votes are for the current version.
    assert_eq!(put(&writer, "db/gated", "a1", false).status, 200);
    assert_eq!(put(&writer, "db/gated", "a2", false).status, 200);
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/db/gated",
        Some(json!({"approvals": [{"group": "security", "k": 1}]})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        code(&named(&pam, "db/gated", 1)),
        (409, "older_version_gated".into())
    );

    // Audited: what was erased, by whom, and the governance applies.
    let entries = a.audit_entries();
    let n = |action: &str| {
        entries
            .iter()
            .filter(|e| {
                e.action == action && format!("{:?}", e.outcome).to_lowercase() == "success"
            })
            .count()
    };
    assert_eq!((n("secret.destroy"), n("secret.delete")), (1, 1));
    let d = entries
        .iter()
        .find(|e| {
            e.action == "secret.destroy" && format!("{:?}", e.outcome).to_lowercase() == "success"
        })
        .unwrap();
    assert_eq!(
        (
            d.target.as_str(),
            d.details["versions"].as_str(),
            d.details["reason"].as_str()
        ),
        ("db/root", "1", "INC-9 leaked")
    );
    let applied: Vec<&str> = entries
        .iter()
        .filter(|e| {
            e.action == "governance.apply" && format!("{:?}", e.outcome).to_lowercase() == "success"
        })
        .filter_map(|e| e.details.get("change").map(String::as_str))
        .collect();
    assert!(
        applied.contains(&"destroy_versions") && applied.contains(&"delete_secret"),
        "{applied:?}"
    );
    assert!(
        entries
            .iter()
            .filter(|e| e.action == "secret.delete"
                && format!("{:?}", e.outcome).to_lowercase() == "denied")
            .count()
            >= 3
    );
}

#[test]
fn vaultctl_checks_out_older_versions_destroys_and_deletes() {
    let a = Appliance::start(TestRoot::new("Test PIV Root").options());
    let writer = a.issue("writer", "w1");
    let _pam = a.issue("pam", "p1");
    for v in ["one", "two", "three"] {
        assert_eq!(put(&writer, "app/key", v, false).status, 200);
    }
    let ctl = |who: &str, args: &[&str]| a.vaultctl(who, args, None);
    let out = vault_e2e::ok(&ctl(
        "p1",
        &[
            "checkout",
            "app/key",
            "--reason",
            "rollback",
            "--version",
            "1",
        ],
    ));
    assert_eq!(out.trim(), "one", "the value alone on stdout");
    let o = ctl(
        "admin",
        &[
            "secret",
            "destroy-version",
            "app/key",
            "1",
            "2",
            "--reason",
            "rotated out",
        ],
    );
    assert!(vault_e2e::ok(&o).contains("destroyed versions 1 2"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("lease(s) still open"),
        "the open lease is named"
    );
    let o = ctl(
        "p1",
        &[
            "--json",
            "checkout",
            "app/key",
            "--reason",
            "r",
            "--version",
            "2",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "no value");
    let v: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(v["error"]["code"], "version_destroyed");
    // The issue's names: `checkouts list` and `checkouts force-checkin`.
    let v: Value = serde_json::from_str(&vault_e2e::ok(&ctl(
        "admin",
        &["--json", "checkouts", "list"],
    )))
    .unwrap();
    let id = v["checkouts"][0]["checkout_id"]
        .as_str()
        .unwrap()
        .to_owned();
    vault_e2e::ok(&ctl(
        "admin",
        &[
            "checkouts",
            "force-checkin",
            &id,
            "--reason",
            "version destroyed",
        ],
    ));
    let v: Value = serde_json::from_str(&vault_e2e::ok(&ctl(
        "admin",
        &["--json", "checkouts", "list"],
    )))
    .unwrap();
    assert_eq!(v["checkouts"], json!([]), "the lease is ended");
    let o = ctl("admin", &["secret", "destroy-version", "app/key", "3"]);
    assert_eq!(o.status.code(), Some(1), "the current version");
    assert!(String::from_utf8_lossy(&o.stderr).contains("version_current"));
    let shown = vault_e2e::ok(&ctl("admin", &["secret", "get", "app/key"]));
    assert!(shown.contains("(destroyed "), "{shown}");
    let v: Value = serde_json::from_str(&vault_e2e::ok(&ctl(
        "admin",
        &["--json", "secret", "delete", "app/key"],
    )))
    .unwrap();
    assert_eq!(
        (v["deleted"].as_bool(), v["destroyed_versions"].clone()),
        (Some(true), json!([3]))
    );
    let o = ctl("p1", &["secret", "delete", "app/key"]);
    assert_eq!(o.status.code(), Some(1), "a PAM server cannot delete");
    assert!(String::from_utf8_lossy(&o.stderr).contains("forbidden"));
}
