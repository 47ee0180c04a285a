//! The store against a real SQLite file.

use std::sync::Arc;
use vault_store::Backend as _;

use vault_core::keyring::{Keyring, KeyringVersion, Tier};
use vault_core::keys::RootKey;
use vault_store::{Store, StoreError, StoreOptions, WriteOp, WriteOutcome};

fn open() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("v.db"), StoreOptions::default()).unwrap();
    // The PAM server of these tests, with a grant over every path (access
    // grants themselves are tested in the conformance suite).
    s.write(WriteOp::AddPrincipalGranted {
        row: vault_store::PrincipalRow {
            fingerprint: "0f".repeat(32),
            name: "pam01".into(),
            role: vault_core::policy::Role::Pam,
            serial: "01".into(),
            not_after: 4_000_000_000,
            issued_at: 1,
            revoked: false,
            renewed_from: None,
        },
        grants: vec!["*".into()],
        by: "test".into(),
        now: 1,
    })
    .unwrap();
    (d, s)
}

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::load(&RootKey::generate(), &[KeyringVersion::new_random(1)]).unwrap())
}

fn put(s: &Store, kr: &Arc<Keyring>, path: &str, value: &[u8], exclusive: Option<bool>) -> u64 {
    let version = s.current_version(path).unwrap().unwrap_or(0) + 1;
    match s
        .write(WriteOp::PutSecret {
            path: path.into(),
            version,
            exclusive,
            max_lease_seconds: None,
            metadata: Some(serde_json::json!({"owner": "dba"})),
            created_by: "w".into(),
            now: 100,
            sealed: kr.seal_value(path, version, Tier::Standard, value),
        })
        .unwrap()
    {
        WriteOutcome::Version(v) => v,
        o => panic!("{o:?}"),
    }
}

fn checkout(s: &Store, id: &str, path: &str, now: i64) -> Result<WriteOutcome, StoreError> {
    s.write(WriteOp::Checkout {
        id: id.into(),
        path: path.into(),
        expect_version: None,
        named: None,
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        reason: "r".into(),
        now,
        expires_at: now + 60,
    })
}

#[test]
fn versions_increment_and_values_decrypt() {
    let (_d, s) = open();
    let kr = keyring();
    assert_eq!(put(&s, &kr, "a/b", b"one", None), 1);
    assert_eq!(put(&s, &kr, "a/b", b"two", None), 2);
    let info = s.secret("a/b").unwrap().unwrap();
    assert_eq!(info.current_version, 2);
    assert_eq!(info.versions.len(), 2);
    assert_eq!(info.metadata["owner"], "dba");
    let sv = s.secret_version("a/b", 1).unwrap().unwrap();
    assert_eq!(
        kr.open_value("a/b", 1, Tier::Standard, &sv)
            .unwrap()
            .expose_secret(),
        b"one"
    );
    assert!(s.secret("nope").unwrap().is_none());
}

#[test]
fn ciphertext_only_on_disk() {
    let (d, s) = open();
    let kr = keyring();
    put(&s, &kr, "x", b"correct-horse-battery-staple", None);
    drop(s);
    for f in std::fs::read_dir(d.path()).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!bytes
            .windows(28)
            .any(|w| w == b"correct-horse-battery-staple"));
    }
}

#[test]
fn exclusive_checkout_conflicts_until_checkin_or_expiry() {
    let (_d, s) = open();
    let kr = keyring();
    put(&s, &kr, "ex", b"v", Some(true));
    put(&s, &kr, "shared", b"v", None);
    assert!(matches!(
        checkout(&s, "c1", "ex", 1000).unwrap(),
        WriteOutcome::CheckedOut {
            version: 1,
            exclusive: true,
            ..
        }
    ));
    assert_eq!(
        checkout(&s, "c2", "ex", 1001).err().unwrap().code(),
        "checked_out"
    );
    // Expired checkouts no longer block.
    assert!(checkout(&s, "c3", "ex", 1061).is_ok());
    // Check c3 in; then a new checkout succeeds.
    s.write(WriteOp::Checkin {
        id: "c3".into(),
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        now: 1062,
    })
    .unwrap();
    assert!(checkout(&s, "c4", "ex", 1063).is_ok());
    // Non-exclusive: any number.
    for i in 0..3 {
        checkout(&s, &format!("s{i}"), "shared", 1000).unwrap();
    }
    assert_eq!(
        checkout(&s, "x", "missing", 1).err().unwrap().code(),
        "not_found"
    );
}

#[test]
fn checkin_rules() {
    let (_d, s) = open();
    let kr = keyring();
    put(&s, &kr, "p", b"v", None);
    checkout(&s, "c1", "p", 10).unwrap();
    let other = s.write(WriteOp::Checkin {
        id: "c1".into(),
        principal: "pam02".into(),
        fingerprint: "0f".repeat(32),
        now: 11,
    });
    assert_eq!(other.err().unwrap().code(), "forbidden");
    s.write(WriteOp::Checkin {
        id: "c1".into(),
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        now: 11,
    })
    .unwrap();
    let again = s.write(WriteOp::Checkin {
        id: "c1".into(),
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        now: 12,
    });
    assert_eq!(again.err().unwrap().code(), "already_checked_in");
    let none = s.write(WriteOp::Checkin {
        id: "zz".into(),
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        now: 12,
    });
    assert_eq!(none.err().unwrap().code(), "not_found");
    assert_eq!(s.checkout("c1").unwrap().unwrap().checked_in_at, Some(11));
}

#[test]
fn group_commit_under_concurrency_loses_nothing() {
    let (d, s) = open();
    let s = Arc::new(s);
    let kr = keyring();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let s = s.clone();
            let kr = kr.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    put(&s, &kr, &format!("t{t}/s{i}"), b"v", None);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.list("", None, 10_000).unwrap().len(), 800);
    drop(s);
    let s = Store::open(&d.path().join("v.db"), StoreOptions::default()).unwrap();
    assert_eq!(s.list("t1/", None, 10_000).unwrap().len(), 50);
}

#[test]
fn a_failed_op_does_not_poison_its_batch() {
    let (_d, s) = open();
    let kr = keyring();
    put(&s, &kr, "ok", b"v", None);
    let s = Arc::new(s);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                checkout(
                    &s,
                    &format!("c{i}"),
                    if i % 2 == 0 { "ok" } else { "missing" },
                    5,
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    for i in (0..8).step_by(2) {
        assert!(s.checkout(&format!("c{i}")).unwrap().is_some());
    }
}

#[test]
fn list_by_prefix_with_paging() {
    let (_d, s) = open();
    let kr = keyring();
    for p in ["a/1", "a/2", "a/3", "b/1"] {
        put(&s, &kr, p, b"v", None);
    }
    let page = s.list("a/", None, 2).unwrap();
    assert_eq!(
        page.iter().map(|x| x.path.as_str()).collect::<Vec<_>>(),
        ["a/1", "a/2"]
    );
    let page = s.list("a/", Some("a/2"), 2).unwrap();
    assert_eq!(
        page.iter().map(|x| x.path.as_str()).collect::<Vec<_>>(),
        ["a/3"]
    );
    // Prefix is literal, not a LIKE pattern.
    assert!(s.list("%", None, 10).unwrap().is_empty());
}

#[test]
fn init_once_and_keyring_versions() {
    let (_d, s) = open();
    let init = || WriteOp::Init {
        meta: vec![("sealed_root".into(), b"{}".to_vec())],
        keyring: KeyringVersion::new_random(1),
        principals: vec![],
        now: 1,
    };
    s.write(init()).unwrap();
    assert_eq!(s.write(init()).err().unwrap().code(), "already_initialized");
    assert_eq!(s.keyring_versions().unwrap().len(), 1);
    s.write(WriteOp::AddKeyringVersion {
        kv: KeyringVersion::new_random(2),
        now: 2,
    })
    .unwrap();
    let dup = s.write(WriteOp::AddKeyringVersion {
        kv: KeyringVersion::new_random(2),
        now: 2,
    });
    assert_eq!(dup.err().unwrap().code(), "keyring_version_exists");
    assert_eq!(
        s.keyring_versions()
            .unwrap()
            .iter()
            .map(|k| k.version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn rewrap_is_conditional() {
    let (_d, s) = open();
    let kr = keyring();
    put(&s, &kr, "p", b"v", None);
    let stale = s.stale_versions(2, 10).unwrap();
    assert_eq!(stale.len(), 1);
    let op = |from| WriteOp::Rewrap {
        path: "p".into(),
        version: 1,
        from,
        to: 2,
        wrapped_dek: vec![1, 2, 3],
    };
    assert!(matches!(
        s.write(op(1)).unwrap(),
        WriteOutcome::Rewrapped(true)
    ));
    assert!(matches!(
        s.write(op(1)).unwrap(),
        WriteOutcome::Rewrapped(false)
    ));
    assert!(s.stale_versions(2, 10).unwrap().is_empty());
}

#[test]
fn newer_schema_is_refused_and_bad_rows_are_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("v.db");
    {
        let s = Store::open(&path, StoreOptions::default()).unwrap();
        let kr = keyring();
        put(&s, &kr, "p", b"v", None);
    }
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("UPDATE secret_versions SET key_version = -5", [])
        .unwrap();
    c.execute("UPDATE secrets SET metadata = 'not json'", [])
        .unwrap();
    drop(c);
    let s = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(s.secret_version("p", 1).err().unwrap().code(), "integrity");
    assert_eq!(s.secret("p").err().unwrap().code(), "integrity");
    drop(s);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let e = Store::open(&path, StoreOptions::default()).err().unwrap();
    assert_eq!(e.code(), "schema_too_new");
}

#[test]
fn checkout_refuses_a_changed_version_and_revocation_works() {
    let (_d, s) = open();
    let kr = keyring();
    put(&s, &kr, "p", b"v1", None);
    let (v, _, pol) = s.current("p").unwrap().unwrap();
    assert_eq!(pol.tier, "standard");
    put(&s, &kr, "p", b"v2", None);
    let r = s.write(WriteOp::Checkout {
        id: "c".into(),
        path: "p".into(),
        expect_version: Some(v),
        named: None,
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        reason: "r".into(),
        now: 1,
        expires_at: 2,
    });
    assert_eq!(r.err().unwrap().code(), "version_changed");
    assert!(s.current("missing").unwrap().is_none());
    let row = vault_store::PrincipalRow {
        fingerprint: "ff".into(),
        name: "n".into(),
        role: vault_core::policy::Role::Pam,
        serial: "01".into(),
        not_after: 9,
        issued_at: 1,
        revoked: false,
        renewed_from: None,
    };
    s.write(WriteOp::AddPrincipal(row)).unwrap();
    s.write(WriteOp::RevokePrincipal {
        fingerprint: "ff".into(),
        now: 1,
    })
    .unwrap();
    assert!(s.principal("ff").unwrap().unwrap().revoked);
    let missing = s.write(WriteOp::RevokePrincipal {
        fingerprint: "00".into(),
        now: 1,
    });
    assert_eq!(missing.err().unwrap().code(), "not_found");
}

#[test]
fn last_admin_cannot_be_revoked_and_names_keep_their_role() {
    let (_d, s) = open();
    let p = |fp: &str, name: &str, role: &str| vault_store::PrincipalRow {
        fingerprint: fp.into(),
        name: name.into(),
        role: vault_core::policy::Role::parse(role).unwrap(),
        serial: "01".into(),
        not_after: 9,
        issued_at: 1,
        revoked: false,
        renewed_from: None,
    };
    s.write(WriteOp::AddPrincipal(p("a1", "root", "admin")))
        .unwrap();
    let e = s.write(WriteOp::RevokePrincipal {
        fingerprint: "a1".into(),
        now: 1,
    });
    assert_eq!(e.err().unwrap().code(), "last_admin");
    s.write(WriteOp::AddPrincipal(p("a2", "root2", "admin")))
        .unwrap();
    s.write(WriteOp::RevokePrincipal {
        fingerprint: "a1".into(),
        now: 1,
    })
    .unwrap();
    // Renewal under the same name and role is fine; another role is not.
    s.write(WriteOp::AddPrincipal(p("p1", "pam01", "pam")))
        .unwrap();
    s.write(WriteOp::AddPrincipal(p("p2", "pam01", "pam")))
        .unwrap();
    let e = s.write(WriteOp::AddPrincipal(p("p3", "pam01", "writer")));
    assert_eq!(e.err().unwrap().code(), "name_in_use");
}

#[test]
fn a_write_computed_for_a_version_that_moved_on_is_stale_and_changes_nothing() {
    let (_d, s) = open();
    let kr = keyring();
    assert_eq!(put(&s, &kr, "p", b"one", None), 1);
    // Encrypted for version 2 by two writers; the second is stale.
    let op = |v: &[u8]| WriteOp::PutSecret {
        path: "p".into(),
        version: 2,
        exclusive: None,
        max_lease_seconds: None,
        metadata: None,
        created_by: "w".into(),
        now: 101,
        sealed: kr.seal_value("p", 2, Tier::Standard, v),
    };
    assert!(matches!(
        s.write(op(b"two")).unwrap(),
        WriteOutcome::Version(2)
    ));
    let before = s.audit_log().size();
    let e = s
        .write_audited(
            op(b"late"),
            vault_store::AuditDrafts::new(vault_core::audit::entry::Draft {
                time: "2026-01-01T00:00:00Z".into(),
                request_id: "r".into(),
                principal: "w".into(),
                role: "writer".into(),
                fingerprint: String::new(),
                action: "secret.write".into(),
                target: "p".into(),
                outcome: vault_core::audit::entry::Outcome::Success,
                error: String::new(),
                details: Default::default(),
                hmac: Default::default(),
            }),
        )
        .err()
        .unwrap();
    assert!(matches!(e, StoreError::Stale(_)), "{e}");
    assert_eq!(s.audit_log().size(), before, "a stale write is not audited");
    let cur = s.current("p").unwrap().unwrap();
    assert_eq!(cur.0, 2);
    assert_eq!(
        kr.open_value("p", 2, Tier::Standard, &cur.1)
            .unwrap()
            .expose_secret(),
        b"two"
    );
    // A version from the future is stale too.
    let mut far = op(b"far");
    if let WriteOp::PutSecret { version, .. } = &mut far {
        *version = 9;
    }
    assert!(matches!(s.write(far), Err(StoreError::Stale(_))));
}

#[test]
fn an_edited_role_or_request_status_is_a_corrupt_row_never_acted_on() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("v.db");
    let s = Store::open(&path, StoreOptions::default()).unwrap();
    let row = vault_store::PrincipalRow {
        fingerprint: "ff".into(),
        name: "n".into(),
        role: vault_core::policy::Role::Pam,
        serial: "01".into(),
        not_after: 9,
        issued_at: 1,
        revoked: false,
        renewed_from: None,
    };
    s.write(WriteOp::AddPrincipal(row)).unwrap();
    assert_eq!(
        s.principal("ff").unwrap().unwrap().role,
        vault_core::policy::Role::Pam
    );
    // Someone with the file edits the role to one no build has.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "UPDATE principals SET role = 'root' WHERE fingerprint = 'ff'",
        [],
    )
    .unwrap();
    for e in [
        s.principal("ff").err().unwrap(),
        s.principals().err().unwrap(),
    ] {
        assert!(
            matches!(&e, StoreError::Corrupt(m) if m.contains("principal role \"root\"")),
            "{e:?}"
        );
        assert_eq!(e.code(), "integrity");
    }
    // Revoking it still works (it is not an admin, whatever it says).
    s.write(WriteOp::RevokePrincipal {
        fingerprint: "ff".into(),
        now: 1,
    })
    .unwrap();
    let revoked: i64 = c
        .query_row(
            "SELECT revoked FROM principals WHERE fingerprint = 'ff'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(revoked, 1);
}
