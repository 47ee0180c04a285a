//! The storage conformance suite: what every [`Backend`] must do, in the
//! style of OpenBao's `sdk/physical/testing.go` `ExerciseBackend`.
//!
//! Compiled with the `conformance` feature (dev-dependencies only). Each
//! backend runs [`exercise`] against fresh storage: SQLite in
//! `tests/conformance.rs`, and the PostgreSQL backend of an HA pair when it
//! exists. A failure names the rule that was broken.

use std::sync::Arc;
use vault_core::custodian::approval::Decision;
use vault_core::custodian::request::{RequestKind, RequestStatus};
use vault_core::policy::Role;

use vault_core::audit::entry::{AuditDrafts, Draft, Entry, Outcome};
use vault_core::audit::merkle::leaf_hash;
use vault_core::keyring::{Keyring, KeyringVersion, Tier};
use vault_core::keys::RootKey;

use crate::{
    Backend, CheckoutFilter, CheckoutRow, CustodianRow, PrincipalRow, RequestRow,
    RotationPolicyRow, RotationState, StoreError, VoteRow, WriteOp, WriteOutcome,
};

/// Opens handles on one storage. The first call sees empty storage; every
/// later call is a new handle (a restart, or a second node) on the same one.
pub trait Harness {
    fn open(&self) -> Box<dyn Backend>;
}

/// Runs every check against storage that `h` opens.
pub fn exercise(h: &dyn Harness) {
    let kr =
        Arc::new(Keyring::load(&RootKey::generate(), &[KeyringVersion::new_random(1)]).unwrap());
    let root = {
        let b = h.open();
        init(&*b);
        grants(&*b, &kr);
        meta(&*b);
        secrets(&*b, &kr);
        checkouts(&*b, &kr);
        prefix_policies(&*b, &kr);
        principals(&*b);
        custodians_and_requests(&*b, &kr);
        governance(&*b);
        concurrent_writers(&*b, &kr);
        audit_log(&*b);
        lifecycle(&*b, &kr);
        rotations(&*b, &kr);
        one_time(&*b, &kr);
        let root = b.audit_log().read().root();
        root
    };
    // Durability: a new handle sees every acknowledged write.
    let b = h.open();
    assert_eq!(b.audit_log().read().root(), root, "audit root after reopen");
    assert_eq!(
        b.current_version("c/p").unwrap(),
        Some(2),
        "secret after reopen"
    );
    drop(b);
    fencing(h);
}

fn base(action: &str, target: &str) -> AuditDrafts {
    AuditDrafts::new(Draft {
        time: "2026-12-01T00:00:00Z".into(),
        request_id: "conformance".into(),
        principal: "tester".into(),
        role: "admin".into(),
        fingerprint: String::new(),
        action: action.into(),
        target: target.into(),
        outcome: Outcome::Success,
        error: String::new(),
        details: Default::default(),
        hmac: Default::default(),
    })
}

fn last_entry(b: &dyn Backend) -> Entry {
    let n = b.audit_log().size();
    let e = b.audit_entries(n - 1, n).unwrap();
    Entry::parse(&e[0].1).unwrap()
}

fn principal(fp: &str, name: &str, role: &str) -> PrincipalRow {
    PrincipalRow {
        fingerprint: fp.into(),
        name: name.into(),
        role: Role::parse(role).expect("a role"),
        serial: "01".into(),
        not_after: 4_000_000_000,
        issued_at: 1,
        revoked: false,
        renewed_from: None,
    }
}

fn init(b: &dyn Backend) {
    let op = || WriteOp::Init {
        meta: vec![("sealed_root".into(), b"{}".to_vec())],
        keyring: KeyringVersion::new_random(1),
        principals: vec![principal(&"a".repeat(64), "admin", "admin")],
        now: 1,
    };
    b.write_audited(op(), base("sys.init", "")).unwrap();
    assert_eq!(b.keyring_versions().unwrap().len(), 1);
    assert_eq!(last_entry(b).action, "sys.init", "init is audited");
    // Init happens once; the refusal is audited with its code.
    let e = b.write_audited(op(), base("sys.init", "")).err().unwrap();
    assert_eq!(e.code(), "already_initialized");
    let last = last_entry(b);
    assert_eq!(
        (last.outcome, last.error.as_str()),
        (Outcome::Denied, "already_initialized")
    );
    let kv2 = KeyringVersion::new_random(2);
    let add = || WriteOp::AddKeyringVersion {
        kv: kv2.clone(),
        now: 2,
    };
    b.write(add()).unwrap();
    assert_eq!(
        b.write(add()).err().unwrap().code(),
        "keyring_version_exists"
    );
    assert_eq!(
        b.keyring_versions()
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

/// Access grants: default deny, prefixes, exact paths, removal, and the
/// request and checkout paths all refuse a principal without one. Leaves
/// `pam01` (the later sections' PAM server) with a `*` grant.
fn grants(b: &dyn Backend, kr: &Keyring) {
    let grant = |who: &str, prefix: &str| {
        b.write(WriteOp::Grant {
            principal: who.into(),
            prefix: prefix.into(),
            by: "admin".into(),
            now: 5,
        })
    };
    let co = |who: &str, id: &str, path: &str| {
        b.write(WriteOp::Checkout {
            id: id.into(),
            path: path.into(),
            expect_version: None,
            named: None,
            principal: who.into(),
            fingerprint: "0e".repeat(32),
            reason: "r".into(),
            now: 6,
            expires_at: 66,
        })
    };
    let code = |r: Result<WriteOutcome, StoreError>| r.err().map(|e| e.code()).unwrap_or("ok");
    b.write(WriteOp::AddPrincipal(principal(
        &"0e".repeat(32),
        "pam-g",
        "pam",
    )))
    .unwrap();
    b.write(WriteOp::AddPrincipal(principal(
        &"0f".repeat(32),
        "pam01",
        "pam",
    )))
    .unwrap();
    for p in ["g/a/x", "g/b", "g/bc", "h/y"] {
        put(b, kr, p, b"v").unwrap();
    }
    let id = |n: u8| format!("00000000-0000-4000-8000-0000000001{n:02}");
    // Default deny: no grant, no checkout (and no existence oracle).
    assert_eq!(code(co("pam-g", &id(1), "g/a/x")), "not_granted");
    assert_eq!(code(co("pam-g", &id(2), "no/such")), "not_granted");
    assert_eq!(code(grant("pam-g", "g/a/")), "ok");
    assert_eq!(code(grant("pam-g", "g/a/")), "grant_exists");
    assert_eq!(code(grant("pam-g", "g/b")), "ok");
    assert_eq!(code(co("pam-g", &id(3), "g/a/x")), "ok", "under the prefix");
    assert_eq!(code(co("pam-g", &id(4), "g/b")), "ok", "the exact path");
    assert_eq!(
        code(co("pam-g", &id(5), "g/bc")),
        "not_granted",
        "an exact grant is no prefix"
    );
    assert_eq!(code(co("pam-g", &id(6), "h/y")), "not_granted");
    assert!(b.granted("pam-g", "g/a/x").unwrap());
    assert!(b.granted("pam-g", "g/b").unwrap());
    assert!(!b.granted("pam-g", "g/bc").unwrap());
    assert!(!b.granted("pam-g", "h/y").unwrap());
    assert!(!b.granted("nobody", "g/b").unwrap());
    // Only a pam name with an unrevoked certificate gets a grant.
    assert_eq!(code(grant("admin", "*")), "not_found");
    assert_eq!(code(grant("nobody", "*")), "not_found");
    // A request for a path outside the grants is refused too.
    let req = |id: &str, kind: RequestKind, path: &str| RequestRow {
        id: id.into(),
        kind,
        path: path.into(),
        version: 1,
        requester: "pam-g".into(),
        requester_fingerprint: "0e".repeat(32),
        reason: "r".into(),
        created_at: 1,
        expires_at: 1_000,
        nonce: [7; 32],
        recipient_key: None,
        policy: "[]".into(),
        ttl_seconds: 60,
        status: RequestStatus::Pending,
        collected_at: None,
        checkout_id: None,
        change: None,
    };
    assert_eq!(
        code(b.write(WriteOp::OpenRequest(req(
            &id(7),
            RequestKind::Checkout,
            "h/y"
        )))),
        "not_granted"
    );
    // (A covered request goes through: the later sections' requests, by
    // pam01 under its `*` grant.)
    // Removal is at once: the next checkout is refused.
    assert_eq!(
        code(b.write(WriteOp::Ungrant {
            principal: "pam-g".into(),
            prefix: "g/b".into()
        })),
        "ok"
    );
    assert_eq!(code(co("pam-g", &id(9), "g/b")), "not_granted");
    assert_eq!(
        code(b.write(WriteOp::Ungrant {
            principal: "pam-g".into(),
            prefix: "g/b".into()
        })),
        "not_found"
    );
    assert_eq!(code(grant("pam01", "*")), "ok");
    // Leave nothing open for the later sections' lease counts.
    for n in [3, 4] {
        b.write(WriteOp::Checkin {
            id: id(n),
            principal: "pam-g".into(),
            fingerprint: "0e".repeat(32),
            now: 7,
        })
        .unwrap();
    }
    let gs = b.grants().unwrap();
    let listed: Vec<(&str, &str)> = gs
        .iter()
        .map(|g| (g.principal.as_str(), g.prefix.as_str()))
        .collect();
    assert_eq!(listed, [("pam-g", "g/a/"), ("pam01", "*")]);
    assert_eq!((gs[0].granted_by.as_str(), gs[0].granted_at), ("admin", 5));
    // A name left without an unrevoked certificate loses its grants, so a
    // certificate issued for it later starts from default deny.
    let has = |who: &str| b.grants().unwrap().iter().any(|g| g.principal == who);
    for fp in ["a1", "a2"] {
        b.write(WriteOp::AddPrincipal(principal(
            &fp.repeat(32),
            "pam-r",
            "pam",
        )))
        .unwrap();
    }
    assert_eq!(code(grant("pam-r", "r/")), "ok");
    b.write(WriteOp::RevokePrincipal {
        fingerprint: "a1".repeat(32),
        now: 8,
    })
    .unwrap();
    assert!(has("pam-r"), "another certificate of the name is unrevoked");
    b.write(WriteOp::RevokePrincipal {
        fingerprint: "a2".repeat(32),
        now: 8,
    })
    .unwrap();
    assert!(!has("pam-r"), "the last certificate revoked");
    b.write(WriteOp::AddPrincipal(principal(
        &"a3".repeat(32),
        "pam-r",
        "pam",
    )))
    .unwrap();
    assert_eq!(code(grant("pam-r", "r/")), "ok");
    b.write(WriteOp::RevokeName {
        name: "pam-r".into(),
        now: 9,
    })
    .unwrap();
    assert!(!has("pam-r"), "revoked by name");
}

fn meta(b: &dyn Backend) {
    assert_eq!(b.get_meta("nothing").unwrap(), None);
    b.write(WriteOp::SetMeta {
        key: "k".into(),
        value: vec![0, 1, 255],
    })
    .unwrap();
    assert_eq!(b.get_meta("k").unwrap(), Some(vec![0, 1, 255]));
}

/// Prefix policies gate paths before and after their secrets exist.
fn prefix_policies(b: &dyn Backend, kr: &Keyring) {
    let set = |prefix: &str, approvals: &str| {
        b.write(WriteOp::SetPrefixApprovals {
            prefix: prefix.into(),
            approvals: approvals.into(),
            by: "admin".into(),
            now: 5,
            expect: None,
        })
    };
    let over = |path: &str| -> Vec<String> {
        b.prefix_policies_over(path)
            .unwrap()
            .into_iter()
            .map(|p| p.prefix)
            .collect()
    };
    assert_eq!(
        set("pp", r#"[{"group":"security","k":1}]"#)
            .err()
            .unwrap()
            .code(),
        "forbidden"
    );
    assert_eq!(set("pp/", "[]").err().unwrap().code(), "not_found");
    // Gated before the first secret exists.
    set("pp/prod/", r#"[{"group":"dba","k":1}]"#).unwrap();
    set("pp/", r#"[{"group":"security","k":1}]"#).unwrap();
    assert_eq!(over("pp/prod/db"), ["pp/", "pp/prod/"]);
    assert_eq!(over("pp/dev/db"), ["pp/"]);
    assert!(
        over("ppx/db").is_empty(),
        "a prefix is a path prefix, not a string prefix"
    );
    put(b, kr, "pp/prod/db", b"v").unwrap();
    let (_, _, policy) = b.current("pp/prod/db").unwrap().unwrap();
    assert_eq!(policy.approvals, "[]");
    assert_eq!(policy.prefixes.len(), 2);
    assert_eq!(policy.prefixes[1].approvals, r#"[{"group":"dba","k":1}]"#);
    assert_eq!(
        b.secret("pp/prod/db").unwrap().unwrap().policy.prefixes,
        policy.prefixes
    );
    // Replaced in place, then removed.
    set("pp/prod/", r#"[{"group":"dba","k":2}]"#).unwrap();
    assert_eq!(b.prefix_policies().unwrap().len(), 2);
    assert_eq!(
        b.prefix_policies_over("pp/prod/db").unwrap()[1].approvals,
        r#"[{"group":"dba","k":2}]"#
    );
    set("pp/prod/", "[]").unwrap();
    set("pp/", "[]").unwrap();
    assert!(b.prefix_policies().unwrap().is_empty());
}

fn put(b: &dyn Backend, kr: &Keyring, path: &str, value: &[u8]) -> Result<u64, StoreError> {
    let version = b.current_version(path)?.unwrap_or(0) + 1;
    match b.write(WriteOp::PutSecret {
        path: path.into(),
        version,
        exclusive: None,
        max_lease_seconds: None,
        metadata: None,
        created_by: "w".into(),
        now: 10,
        sealed: kr.seal_value(path, version, Tier::Standard, value),
    })? {
        WriteOutcome::Version(v) => Ok(v),
        o => panic!("put answered {o:?}"),
    }
}

fn secrets(b: &dyn Backend, kr: &Keyring) {
    assert_eq!(put(b, kr, "c/p", b"one").unwrap(), 1);
    assert_eq!(put(b, kr, "c/p", b"two").unwrap(), 2);
    let (v, sealed, policy) = b.current("c/p").unwrap().unwrap();
    assert_eq!(v, 2);
    assert_eq!(policy.tier, "standard");
    let pt = kr.open_value("c/p", 2, Tier::Standard, &sealed).unwrap();
    assert_eq!(pt.expose_secret(), b"two", "ciphertext stored as given");
    let old = b.secret_version("c/p", 1).unwrap().unwrap();
    assert_eq!(
        kr.open_value("c/p", 1, Tier::Standard, &old)
            .unwrap()
            .expose_secret(),
        b"one"
    );
    let info = b.secret("c/p").unwrap().unwrap();
    assert_eq!(info.versions.len(), 2);
    // A write encrypted for a version that is no longer next is stale:
    // nothing written, nothing audited.
    let size = b.audit_log().size();
    let stale = b.write_audited(
        WriteOp::PutSecret {
            path: "c/p".into(),
            version: 2,
            exclusive: None,
            max_lease_seconds: None,
            metadata: None,
            created_by: "w".into(),
            now: 11,
            sealed: kr.seal_value("c/p", 2, Tier::Standard, b"late"),
        },
        base("secret.write", "c/p"),
    );
    assert!(
        matches!(stale, Err(StoreError::Stale(_))),
        "stale put: {stale:?}"
    );
    assert_eq!(b.audit_log().size(), size, "a stale write is not audited");
    assert_eq!(b.current_version("c/p").unwrap(), Some(2));
    // Listing by prefix, in path order, with paging.
    for p in ["c/l/a", "c/l/b", "c/l/c", "c/m"] {
        put(b, kr, p, b"x").unwrap();
    }
    let page: Vec<String> = b
        .list("c/l/", None, 2)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(page, ["c/l/a", "c/l/b"]);
    let next: Vec<String> = b
        .list("c/l/", Some("c/l/b"), 2)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(next, ["c/l/c"]);
    assert!(b.secret("c/none").unwrap().is_none());
    // Approvals are set only on an existing secret.
    assert_eq!(
        b.write(WriteOp::SetApprovals {
            path: "c/none".into(),
            approvals: "[]".into(),
            expect: None,
        })
        .err()
        .unwrap()
        .code(),
        "not_found"
    );
}

/// Named older versions, destroyed versions and deleted secrets.
fn lifecycle(b: &dyn Backend, kr: &Keyring) {
    let code = |r: Result<WriteOutcome, StoreError>| r.err().map(|e| e.code()).unwrap_or("ok");
    for v in [b"d1", b"d2", b"d3"] {
        put(b, kr, "c/d", v).unwrap();
    }
    let named = |id: &str, v: u64| {
        b.write(WriteOp::Checkout {
            id: id.into(),
            path: "c/d".into(),
            expect_version: None,
            named: Some(v),
            principal: "pam01".into(),
            fingerprint: "0f".repeat(32),
            reason: "r".into(),
            now: 20,
            expires_at: 80,
        })
    };
    let checkin = |id: &str| {
        b.write(WriteOp::Checkin {
            id: id.into(),
            principal: "pam01".into(),
            fingerprint: "0f".repeat(32),
            now: 21,
        })
        .unwrap();
    };
    let id = |n: u8| format!("00000000-0000-4000-8000-0000000009{n:02}");
    // An older version is checked out as that version.
    match named(&id(1), 1).unwrap() {
        WriteOutcome::CheckedOut { version, .. } => assert_eq!(version, 1),
        o => panic!("named checkout answered {o:?}"),
    }
    assert_eq!(b.checkout(&id(1)).unwrap().unwrap().version, 1);
    checkin(&id(1));
    assert_eq!(code(named(&id(2), 9)), "not_found", "no version 9");
    let destroy = |versions: Vec<u64>| {
        b.write(WriteOp::DestroyVersions {
            path: "c/d".into(),
            versions,
            by: "admin".into(),
            now: 22,
        })
    };
    // The current version is never destroyed, and a refused op destroys
    // nothing (version 1 before the current one in the same op).
    assert_eq!(code(destroy(vec![1, 3])), "version_current");
    assert!(b.secret_version("c/d", 1).unwrap().is_some());
    assert_eq!(code(destroy(vec![7])), "not_found");
    assert!(matches!(destroy(vec![1]), Ok(WriteOutcome::Destroyed(v)) if v == [1]));
    assert!(
        matches!(destroy(vec![1, 2]), Ok(WriteOutcome::Destroyed(v)) if v == [2]),
        "destroyed already: left as it is"
    );
    // Fail closed: a destroyed value is never returned, nor checked out.
    assert_eq!(
        b.secret_version("c/d", 1).err().map(|e| e.code()),
        Some("version_destroyed")
    );
    assert_eq!(code(named(&id(3), 2)), "version_destroyed");
    let info = b.secret("c/d").unwrap().unwrap();
    let destroyed: Vec<bool> = info
        .versions
        .iter()
        .map(|v| v.destroyed.is_some())
        .collect();
    assert_eq!(destroyed, [true, true, false]);
    assert_eq!(info.versions[0].destroyed, Some((22, "admin".into())));
    // No re-encryption ever reaches a destroyed version.
    let stale = b.stale_versions(999, 100).unwrap();
    assert!(!stale.iter().any(|s| s.path == "c/d" && s.version < 3));
    // The current version still checks out.
    let r = checkout(b, &id(4), "c/d", 23);
    assert!(r.is_ok(), "{r:?}");
    checkin(&id(4));
    // Deletion: every version destroyed, the secret gone from reads and
    // listings, its version numbers kept for the next write.
    assert!(matches!(
        b.write(WriteOp::DeleteSecret { path: "c/d".into(), by: "admin".into(), now: 24 }),
        Ok(WriteOutcome::Destroyed(v)) if v == [3]
    ));
    assert!(b.current("c/d").unwrap().is_none());
    assert!(!b
        .list("c/", None, 100)
        .unwrap()
        .iter()
        .any(|s| s.path == "c/d"));
    assert_eq!(code(checkout(b, &id(5), "c/d", 25)), "not_found");
    assert_eq!(code(named(&id(6), 3)), "not_found");
    assert_eq!(
        b.secret("c/d").unwrap().unwrap().deleted,
        Some((24, "admin".into()))
    );
    assert_eq!(
        code(b.write(WriteOp::DeleteSecret {
            path: "c/d".into(),
            by: "admin".into(),
            now: 26
        })),
        "not_found",
        "deleted already"
    );
    assert_eq!(code(destroy(vec![1])), "not_found");
    assert_eq!(put(b, kr, "c/d", b"d4").unwrap(), 4, "numbers continue");
    let (v, sealed, _) = b.current("c/d").unwrap().unwrap();
    assert_eq!(v, 4);
    assert_eq!(
        kr.open_value("c/d", 4, Tier::Standard, &sealed)
            .unwrap()
            .expose_secret(),
        b"d4"
    );
    assert!(b.secret("c/d").unwrap().unwrap().deleted.is_none());
}

/// Rotation policies and the rotation state machine's steps.
fn rotations(b: &dyn Backend, kr: &Keyring) {
    let code = |r: Result<WriteOutcome, StoreError>| r.err().map(|e| e.code()).unwrap_or("ok");
    let policy = |path: &str, cred: &str, interval: Option<u64>| {
        b.write(WriteOp::SetRotationPolicy {
            row: RotationPolicyRow {
                path: path.into(),
                policy: "{}".into(),
                triggers: "checkin".into(),
                interval_seconds: interval,
                cron: None,
                heartbeat_seconds: None,
                checked_at: None,
                drift_at: None,
                credential: Some(cred.into()),
                set_at: 100,
                set_by: "admin".into(),
                last_rotated_at: None,
            },
        })
    };
    assert_eq!(
        code(policy("r/app", "r/cred", None)),
        "not_found",
        "no secret yet"
    );
    put(b, kr, "r/app", b"v1").unwrap();
    assert_eq!(
        code(policy("r/app", "r/cred", None)),
        "not_found",
        "no credential yet"
    );
    put(b, kr, "r/cred", b"c1").unwrap();
    assert_eq!(code(policy("r/app", "r/cred", None)), "ok");
    let got = b.rotation_policy("r/app").unwrap().unwrap();
    assert_eq!(
        (got.triggers.as_str(), got.credential.as_deref()),
        ("checkin", Some("r/cred"))
    );
    // The connector's credential is use-only.
    let id = |n: u8| format!("00000000-0000-4000-8000-0000000007{n:02}");
    assert_eq!(code(checkout(b, &id(1), "r/cred", 101)), "use_only");

    let step = |from: RotationState, to: RotationState, attempt: Option<(String, i64)>| {
        b.write(WriteOp::RotationStep {
            path: "r/app".into(),
            from,
            to,
            attempt,
            next_at: 102,
        })
    };
    let state = || b.rotation("r/app").unwrap().map(|r| r.state);
    b.write(WriteOp::RequestRotation {
        path: "r/app".into(),
        trigger: "manual".into(),
        now: 101,
    })
    .unwrap();
    assert_eq!(state(), Some(RotationState::Due));
    assert_eq!(
        b.due_rotations(100, 10).unwrap().len(),
        0,
        "not before next_at"
    );
    assert_eq!(b.due_rotations(101, 10).unwrap()[0].trigger, "manual");
    let pending = |expect: u64| {
        b.write(WriteOp::RotationPending {
            path: "r/app".into(),
            expect_current: expect,
            sealed: kr.seal_value("r/app", 2, Tier::Standard, b"v2-rotated"),
        })
    };
    assert_eq!(code(pending(7)), "version_changed");
    assert_eq!(code(pending(1)), "ok");
    assert_eq!(code(pending(1)), "rotation_changed", "pending once");
    assert_eq!(state(), Some(RotationState::Pending));
    // While pending: the current value is still served; no write.
    assert_eq!(code(checkout(b, &id(2), "r/app", 101)), "ok");
    b.write(WriteOp::Checkin {
        id: id(2),
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        now: 101,
    })
    .unwrap();
    assert_eq!(
        code(put(b, kr, "r/app", b"by hand").map(|_| WriteOutcome::Done)),
        "rotation_in_progress"
    );
    assert_eq!(
        code(step(RotationState::Due, RotationState::Applying, None)),
        "rotation_changed"
    );
    assert_eq!(
        code(step(RotationState::Pending, RotationState::Applying, None)),
        "ok"
    );
    // While applying: the target may hold either value, so no checkout,
    // and the policy cannot be removed.
    assert_eq!(
        code(checkout(b, &id(3), "r/app", 102)),
        "rotation_in_progress"
    );
    assert_eq!(
        code(b.write(WriteOp::RemoveRotationPolicy {
            path: "r/app".into()
        })),
        "rotation_in_progress"
    );
    assert_eq!(
        code(step(
            RotationState::Applying,
            RotationState::Applying,
            Some(("target down".into(), 102))
        )),
        "ok"
    );
    let r = b.rotation("r/app").unwrap().unwrap();
    assert_eq!(
        (r.attempts, r.last_error.as_deref()),
        (1, Some("target down"))
    );
    assert!(matches!(
        b.write(WriteOp::RotationPromote {
            path: "r/app".into(),
            now: 103
        }),
        Ok(WriteOutcome::Version(2))
    ));
    assert_eq!(state(), None);
    let (v, sealed, _) = b.current("r/app").unwrap().unwrap();
    assert_eq!(v, 2);
    assert_eq!(
        kr.open_value("r/app", 2, Tier::Standard, &sealed)
            .unwrap()
            .expose_secret(),
        b"v2-rotated"
    );
    assert_eq!(
        b.rotation_policy("r/app").unwrap().unwrap().last_rotated_at,
        Some(103)
    );
    assert_eq!(
        code(b.write(WriteOp::RotationPromote {
            path: "r/app".into(),
            now: 104
        })),
        "not_found",
        "promoted once"
    );

    // A check-in starts a rotation in its own transaction.
    assert_eq!(code(checkout(b, &id(4), "r/app", 104)), "ok");
    b.write(WriteOp::Checkin {
        id: id(4),
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        now: 105,
    })
    .unwrap();
    let r = b.rotation("r/app").unwrap().unwrap();
    assert_eq!(
        (r.state, r.trigger.as_str()),
        (RotationState::Due, "checkin")
    );
    // A failed rotation is not worked on, and starts again when asked.
    assert_eq!(
        code(step(RotationState::Due, RotationState::Failed, None)),
        "ok"
    );
    assert!(b.due_rotations(1000, 10).unwrap().is_empty());
    b.write(WriteOp::RequestRotation {
        path: "r/app".into(),
        trigger: "manual".into(),
        now: 106,
    })
    .unwrap();
    assert_eq!(state(), Some(RotationState::Due));
    // A rotation not yet applied is dropped with its policy.
    b.write(WriteOp::RemoveRotationPolicy {
        path: "r/app".into(),
    })
    .unwrap();
    assert_eq!(state(), None);
    assert_eq!(
        code(b.write(WriteOp::RequestRotation {
            path: "r/app".into(),
            trigger: "manual".into(),
            now: 107
        })),
        "not_found"
    );
    // A schedule: due once the interval has passed since the policy (or
    // the last rotation).
    assert_eq!(code(policy("r/app", "r/cred", Some(60))), "ok");
    assert!(b.scheduled_rotations(159).unwrap().is_empty());
    assert_eq!(b.scheduled_rotations(160).unwrap(), ["r/app"]);
}

/// One-time-password mode: each value is handed out once, and every end
/// of its lease starts the rotation that replaces it.
fn one_time(b: &dyn Backend, kr: &Keyring) {
    let code = |r: Result<WriteOutcome, StoreError>| r.err().map(|e| e.code()).unwrap_or("ok");
    put(b, kr, "o/app", b"v1").unwrap();
    put(b, kr, "o/cred", b"c1").unwrap();
    b.write(WriteOp::SetRotationPolicy {
        row: RotationPolicyRow {
            path: "o/app".into(),
            policy: "{}".into(),
            triggers: "one_time".into(),
            interval_seconds: None,
            cron: Some("0 3 * * *".into()),
            heartbeat_seconds: Some(60),
            checked_at: None,
            drift_at: None,
            credential: Some("o/cred".into()),
            set_at: 100,
            set_by: "admin".into(),
            last_rotated_at: None,
        },
    })
    .unwrap();
    let id = |n: u8| format!("00000000-0000-4000-8000-0000000b09{n:02}");
    let named = |n: u8, v: u64| {
        b.write(WriteOp::Checkout {
            id: id(n),
            path: "o/app".into(),
            expect_version: None,
            named: Some(v),
            principal: "pam01".into(),
            fingerprint: "0f".repeat(32),
            reason: "r".into(),
            now: 101,
            expires_at: 161,
        })
    };
    let state = || b.rotation("o/app").unwrap().map(|r| (r.state, r.trigger));
    // Its schedule counts from when the policy was set.
    let sched = |since: i64| vec![("o/app".to_string(), "0 3 * * *".to_string(), since)];
    assert_eq!(b.cron_schedules().unwrap(), sched(100));
    // A heartbeat: due `heartbeat_seconds` after the policy was set (then
    // after the last one); a refusal is drift, kept from its first time.
    assert!(b.heartbeats_due(159).unwrap().is_empty());
    assert_eq!(b.heartbeats_due(160).unwrap(), ["o/app"]);
    let beat = |expect: u64, accepted: Option<bool>, now: i64| {
        b.write(WriteOp::Heartbeat {
            path: "o/app".into(),
            policy_set_at: 100,
            expect,
            accepted,
            now,
        })
    };
    assert_eq!(code(beat(7, Some(false), 160)), "version_changed");
    assert_eq!(
        code(b.write(WriteOp::Heartbeat {
            path: "o/app".into(),
            policy_set_at: 99,
            expect: 1,
            accepted: Some(false),
            now: 160,
        })),
        "rotation_changed",
        "about the policy (the target) before this one"
    );
    assert_eq!(code(beat(1, Some(false), 160)), "ok");
    assert_eq!(code(beat(1, Some(false), 165)), "ok");
    assert_eq!(code(beat(1, None, 170)), "ok", "no answer");
    let row = b.rotation_policy("o/app").unwrap().unwrap();
    assert_eq!((row.checked_at, row.drift_at), (Some(170), Some(160)));
    assert_eq!(b.gauges(170).unwrap().drifted, 1);
    assert!(
        b.heartbeats_due(229).unwrap().is_empty(),
        "counts from the last one"
    );
    // Not exclusive, yet the value is handed out once only.
    assert_eq!(code(checkout(b, &id(1), "o/app", 101)), "ok");
    assert_eq!(code(checkout(b, &id(2), "o/app", 101)), "one_time_used");
    assert_eq!(code(named(3, 1)), "one_time_used", "an older version");
    b.write(WriteOp::Checkin {
        id: id(1),
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        now: 102,
    })
    .unwrap();
    assert_eq!(
        state(),
        Some((RotationState::Due, "checkin".into())),
        "a check-in rotates a one-time secret"
    );
    // While the new value is on its way: refused with a retry, never the
    // used value.
    assert_eq!(
        code(checkout(b, &id(4), "o/app", 103)),
        "rotation_in_progress"
    );
    assert!(b.cron_schedules().unwrap().is_empty(), "one in flight");
    assert_eq!(code(beat(1, Some(true), 103)), "rotation_changed");
    assert!(b.heartbeats_due(1000).unwrap().is_empty());
    b.write(WriteOp::RotationPending {
        path: "o/app".into(),
        expect_current: 1,
        sealed: kr.seal_value("o/app", 2, Tier::Standard, b"v2"),
    })
    .unwrap();
    assert_eq!(
        code(checkout(b, &id(5), "o/app", 103)),
        "rotation_in_progress"
    );
    b.write(WriteOp::RotationStep {
        path: "o/app".into(),
        from: RotationState::Pending,
        to: RotationState::Applying,
        attempt: None,
        next_at: 103,
    })
    .unwrap();
    assert!(matches!(
        b.write(WriteOp::RotationPromote {
            path: "o/app".into(),
            now: 104
        }),
        Ok(WriteOutcome::Version(2))
    ));
    assert_eq!(b.cron_schedules().unwrap(), sched(104), "from the rotation");
    let row = b.rotation_policy("o/app").unwrap().unwrap();
    assert_eq!(
        (row.checked_at, row.drift_at),
        (Some(104), None),
        "a promoted value is in sync"
    );
    assert_eq!(b.gauges(104).unwrap().drifted, 0);
    // The new value, once; its lease ending at its TTL rotates too.
    assert!(matches!(
        checkout(b, &id(6), "o/app", 105),
        Ok(WriteOutcome::CheckedOut { version: 2, .. })
    ));
    assert_eq!(code(checkout(b, &id(7), "o/app", 106)), "one_time_used");
    b.write(WriteOp::ExpireCheckout {
        id: id(6),
        now: 170,
    })
    .unwrap();
    assert_eq!(state(), Some((RotationState::Due, "expiry".into())));
    // A rotation given up leaves the used value refused.
    b.write(WriteOp::RotationStep {
        path: "o/app".into(),
        from: RotationState::Due,
        to: RotationState::Failed,
        attempt: None,
        next_at: 171,
    })
    .unwrap();
    assert_eq!(code(checkout(b, &id(8), "o/app", 172)), "one_time_used");
    assert_eq!(b.gauges(172).unwrap().rotations_failed, 1);
    assert!(
        b.cron_schedules().unwrap().is_empty(),
        "a failed rotation is in flight until asked again"
    );
    assert_eq!(
        b.rotation_policy("o/app").unwrap().unwrap().cron.as_deref(),
        Some("0 3 * * *")
    );
    // Nor can its policy be removed to make the used value available
    // again.
    assert_eq!(
        code(b.write(WriteOp::RemoveRotationPolicy {
            path: "o/app".into(),
        })),
        "one_time_used"
    );
    assert_eq!(code(checkout(b, &id(9), "o/app", 173)), "one_time_used");
}

fn checkout(b: &dyn Backend, id: &str, path: &str, now: i64) -> Result<WriteOutcome, StoreError> {
    b.write(WriteOp::Checkout {
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

fn checkouts(b: &dyn Backend, kr: &Keyring) {
    b.write(WriteOp::PutSecret {
        path: "c/x".into(),
        version: 1,
        exclusive: Some(true),
        max_lease_seconds: None,
        metadata: None,
        created_by: "w".into(),
        now: 10,
        sealed: kr.seal_value("c/x", 1, Tier::Standard, b"x"),
    })
    .unwrap();
    checkout(b, "00000000-0000-4000-8000-000000000001", "c/x", 100).unwrap();
    assert_eq!(
        checkout(b, "00000000-0000-4000-8000-000000000002", "c/x", 101)
            .err()
            .unwrap()
            .code(),
        "checked_out",
        "an exclusive secret has one open checkout"
    );
    // After expiry, another may check it out.
    checkout(b, "00000000-0000-4000-8000-000000000003", "c/x", 200).unwrap();
    assert_eq!(
        b.write(WriteOp::Checkout {
            id: "00000000-0000-4000-8000-000000000004".into(),
            path: "c/p".into(),
            expect_version: Some(1),
            named: None,
            principal: "pam01".into(),
            fingerprint: "0f".repeat(32),
            reason: "r".into(),
            now: 300,
            expires_at: 360,
        })
        .err()
        .unwrap()
        .code(),
        "version_changed"
    );
    let checkin = |principal: &str| {
        b.write(WriteOp::Checkin {
            id: "00000000-0000-4000-8000-000000000003".into(),
            principal: principal.into(),
            fingerprint: "0f".repeat(32),
            now: 210,
        })
    };
    assert_eq!(checkin("other").err().unwrap().code(), "forbidden");
    match checkin("pam01").unwrap() {
        WriteOutcome::CheckedIn(CheckoutRow {
            path,
            checked_in_at,
            ..
        }) => assert_eq!((path.as_str(), checked_in_at), ("c/x", Some(210))),
        o => panic!("checkin answered {o:?}"),
    }
    assert_eq!(checkin("pam01").err().unwrap().code(), "already_checked_in");
    assert!(
        checkout(b, "00000000-0000-4000-8000-000000000005", "c/none", 1)
            .err()
            .is_some_and(|e| e.code() == "not_found")
    );
    // Leases end once. The reaper finds those past their TTL (not the one
    // checked in), and ends each by expiry.
    let (first, third) = (
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000003",
    );
    let due = |now| -> Vec<String> {
        b.expiring_checkouts(now, 10)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect()
    };
    assert!(due(159).is_empty());
    assert_eq!(due(160), [first]);
    let expire = |id: &str, now| b.write(WriteOp::ExpireCheckout { id: id.into(), now });
    assert_eq!(
        expire(third, 300).err().unwrap().code(),
        "already_checked_in"
    );
    match expire(first, 161).unwrap() {
        WriteOutcome::Expired(r) => assert_eq!((r.id.as_str(), r.expired_at), (first, Some(161))),
        o => panic!("expire answered {o:?}"),
    }
    assert!(due(10_000).is_empty());
    assert_eq!(b.checkout(first).unwrap().unwrap().expired_at, Some(161));
    assert_eq!(expire(first, 162).err().unwrap().code(), "lease_expired");
    let late = b.write(WriteOp::Checkin {
        id: first.into(),
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        now: 163,
    });
    assert_eq!(late.err().unwrap().code(), "lease_expired");
    let open = "00000000-0000-4000-8000-000000000006";
    checkout(b, open, "c/x", 400).unwrap();
    assert_eq!(expire(open, 459).err().unwrap().code(), "lease_active");
    assert_eq!(due(460), [open]);
    renewals(b, kr, open);
}

/// Renewal up to the secret's maximum, revocation by an admin, the list.
fn renewals(b: &dyn Backend, kr: &Keyring, expired_open: &str) {
    let renew = |id: &str, who: &str, now: i64, expires_at: i64| {
        b.write(WriteOp::RenewCheckout {
            id: id.into(),
            principal: who.into(),
            fingerprint: "0f".repeat(32),
            now,
            expires_at,
            max_lease: 1_000,
        })
    };
    let lease = |o: WriteOutcome| match o {
        WriteOutcome::Checkout(r) => r,
        o => panic!("answered {o:?}"),
    };
    // `open` (400..460) is past its TTL at 470, even before the reaper.
    assert_eq!(
        renew(expired_open, "pam01", 470, 600).err().unwrap().code(),
        "lease_expired"
    );
    // The configured maximum (1,000 s from 500) when the secret has none.
    let id = "00000000-0000-4000-8000-000000000007";
    checkout(b, id, "c/x", 500).unwrap();
    // Bound to the certificate: another one of the same name can neither
    // renew nor check in.
    let other_cert = b.write(WriteOp::RenewCheckout {
        id: id.into(),
        principal: "pam01".into(),
        fingerprint: "aa".repeat(32),
        now: 505,
        expires_at: 600,
        max_lease: 1_000,
    });
    assert_eq!(other_cert.err().unwrap().code(), "forbidden");
    let other_cert = b.write(WriteOp::Checkin {
        id: id.into(),
        principal: "pam01".into(),
        fingerprint: "aa".repeat(32),
        now: 505,
    });
    assert_eq!(other_cert.err().unwrap().code(), "forbidden");
    assert_eq!(
        renew(id, "other", 510, 700).err().unwrap().code(),
        "forbidden"
    );
    let r = lease(renew(id, "pam01", 510, 700).unwrap());
    assert_eq!((r.expires_at, r.renewals), (700, 1));
    let r = lease(renew(id, "pam01", 520, 9_999).unwrap());
    assert_eq!(
        (r.expires_at, r.renewals),
        (1_500, 2),
        "capped at created + max"
    );
    assert_eq!(
        renew(id, "pam01", 530, 9_999).err().unwrap().code(),
        "lease_max_exceeded"
    );
    assert_eq!(b.checkout(id).unwrap().unwrap().expires_at, 1_500);
    // Asking for less shortens it.
    let r = lease(renew(id, "pam01", 540, 900).unwrap());
    assert_eq!((r.expires_at, r.renewals), (900, 3));
    // A secret's own maximum bounds checkout and renewal.
    b.write(WriteOp::PutSecret {
        path: "c/short".into(),
        version: 1,
        exclusive: Some(true),
        max_lease_seconds: Some(100),
        metadata: None,
        created_by: "w".into(),
        now: 10,
        sealed: kr.seal_value("c/short", 1, Tier::Standard, b"s"),
    })
    .unwrap();
    assert_eq!(
        b.secret("c/short").unwrap().unwrap().max_lease_seconds,
        Some(100)
    );
    let long = b.write(WriteOp::Checkout {
        id: "00000000-0000-4000-8000-000000000008".into(),
        path: "c/short".into(),
        expect_version: None,
        named: None,
        principal: "pam01".into(),
        fingerprint: "0f".repeat(32),
        reason: "r".into(),
        now: 600,
        expires_at: 701,
    });
    assert_eq!(long.err().unwrap().code(), "lease_max_exceeded");
    let short = "00000000-0000-4000-8000-000000000009";
    checkout(b, short, "c/short", 600).unwrap();
    assert_eq!(
        lease(renew(short, "pam01", 610, 900).unwrap()).expires_at,
        700
    );
    // An admin ends it early: it is closed, the exclusive lock is free, and
    // the owner's check-in or renewal after that is refused.
    let revoke = |id: &str, now| {
        b.write(WriteOp::RevokeCheckout {
            id: id.into(),
            by: "admin".into(),
            reason: "suspected misuse".into(),
            now,
        })
    };
    let r = lease(revoke(short, 620).unwrap());
    assert_eq!(
        (r.checked_in_at, r.revoked.clone()),
        (Some(620), Some(("admin".into(), "suspected misuse".into())))
    );
    assert_eq!(
        revoke(short, 621).err().unwrap().code(),
        "already_checked_in"
    );
    assert_eq!(
        renew(short, "pam01", 622, 690).err().unwrap().code(),
        "already_checked_in"
    );
    checkout(b, "00000000-0000-4000-8000-00000000000a", "c/short", 630).unwrap();
    assert!(b.secret("c/short").unwrap().unwrap().open_checkouts.len() == 1);
    // The list: newest first, filtered, paged.
    let list = |f: CheckoutFilter| -> Vec<String> {
        b.checkouts(&f).unwrap().into_iter().map(|c| c.id).collect()
    };
    let all = list(CheckoutFilter {
        limit: 100,
        ..Default::default()
    });
    let n = |k: &str| format!("00000000-0000-4000-8000-00000000000{k}");
    // Refused checkouts (4, 5, 8) left no row; the grants section's two
    // (checked in) come last, being the oldest.
    let mut want = ["a", "9", "7", "6", "3", "1"].map(n).to_vec();
    want.extend(["104", "103"].map(|k| format!("00000000-0000-4000-8000-000000000{k}")));
    assert_eq!(all, want);
    let open_only = list(CheckoutFilter {
        open_only: true,
        limit: 100,
        ..Default::default()
    });
    assert_eq!(
        open_only,
        [
            "00000000-0000-4000-8000-00000000000a",
            id,
            expired_open, // past its TTL, not yet ended by the reaper
        ]
    );
    let short_ones = list(CheckoutFilter {
        path_prefix: Some("c/sh".into()),
        limit: 100,
        ..Default::default()
    });
    assert_eq!(short_ones.len(), 2);
    assert!(list(CheckoutFilter {
        principal: Some("other".into()),
        limit: 100,
        ..Default::default()
    })
    .is_empty());
    let page1 = b
        .checkouts(&CheckoutFilter {
            limit: 4,
            ..Default::default()
        })
        .unwrap();
    let last = page1.last().unwrap();
    let page2 = list(CheckoutFilter {
        before: Some(last.id.clone()),
        limit: 100,
        ..Default::default()
    });
    assert_eq!(page1.len() + page2.len(), all.len());
    assert_eq!(page2[0], all[4]);
}

fn principals(b: &dyn Backend) {
    let admin2 = "b".repeat(64);
    b.write(WriteOp::AddPrincipal(principal(&admin2, "admin2", "admin")))
        .unwrap();
    assert_eq!(b.principal(&admin2).unwrap().unwrap().role, Role::Admin);
    // A name keeps its role.
    assert_eq!(
        b.write(WriteOp::AddPrincipal(principal(
            &"c".repeat(64),
            "admin2",
            "pam"
        )))
        .err()
        .unwrap()
        .code(),
        "name_in_use"
    );
    b.write(WriteOp::RevokePrincipal {
        fingerprint: admin2.clone(),
        now: 1,
    })
    .unwrap();
    assert!(b.principal(&admin2).unwrap().unwrap().revoked);
    // Revoking a name revokes all its certificates, and only those.
    let (p1, p2, p3) = ("e".repeat(64), "f".repeat(64), "0".repeat(64));
    for (fp, name) in [(&p1, "pam-a"), (&p2, "pam-a"), (&p3, "pam-b")] {
        b.write(WriteOp::AddPrincipal(principal(fp, name, "pam")))
            .unwrap();
    }
    match b
        .write(WriteOp::RevokeName {
            name: "pam-a".into(),
            now: 1,
        })
        .unwrap()
    {
        WriteOutcome::Revoked(fps) => assert_eq!(fps, [p1.clone(), p2.clone()]),
        o => panic!("revoke name answered {o:?}"),
    }
    assert!(b.principal(&p1).unwrap().unwrap().revoked);
    assert!(b.principal(&p2).unwrap().unwrap().revoked);
    assert!(!b.principal(&p3).unwrap().unwrap().revoked);
    let again = b.write(WriteOp::RevokeName {
        name: "pam-a".into(),
        now: 1,
    });
    assert_eq!(again.err().unwrap().code(), "not_found");
    // The last admin's name cannot be revoked either.
    assert_eq!(
        b.write(WriteOp::RevokeName {
            name: "admin".into(),
            now: 1,
        })
        .err()
        .unwrap()
        .code(),
        "last_admin"
    );
    // A revoked name does not come back with another role.
    assert_eq!(
        b.write(WriteOp::AddPrincipal(principal(
            &"d".repeat(64),
            "admin2",
            "pam"
        )))
        .err()
        .unwrap()
        .code(),
        "name_in_use"
    );
    assert_eq!(
        b.write(WriteOp::RevokePrincipal {
            fingerprint: "a".repeat(64),
            now: 1,
        })
        .err()
        .unwrap()
        .code(),
        "last_admin"
    );
    assert!(b.principals().unwrap().len() >= 2);
    certificate_renewals(b);
}

/// Renewal: same name and role only, from a live certificate; the renewed
/// certificate dies when its successor is first used, and what it held
/// moves over; revoking a certificate revokes its renewals.
fn certificate_renewals(b: &dyn Backend) {
    let renewal = |old: &str, new: &str, name: &str, role: &str| {
        let mut p = principal(new, name, role);
        p.renewed_from = Some(old.into());
        WriteOp::RenewPrincipal {
            old: old.into(),
            new: p,
            now: 10,
        }
    };
    let (old, new1, new2) = ("1".repeat(64), "2".repeat(64), "3".repeat(64));
    b.write(WriteOp::AddPrincipal(principal(&old, "pam-r", "pam")))
        .unwrap();
    b.write(WriteOp::Grant {
        principal: "pam-r".into(),
        prefix: "c/".into(),
        by: "admin".into(),
        now: 10,
    })
    .unwrap();
    b.write(WriteOp::Checkout {
        id: "co-renew".into(),
        path: "c/p".into(),
        expect_version: None,
        named: None,
        principal: "pam-r".into(),
        fingerprint: old.clone(),
        reason: "renewal test".into(),
        now: 10,
        expires_at: 4_000_000_000,
    })
    .unwrap();
    // Another name or role is not a renewal.
    assert_eq!(
        b.write(renewal(&old, &new1, "pam-x", "pam"))
            .err()
            .unwrap()
            .code(),
        "forbidden"
    );
    assert_eq!(
        b.write(renewal(&old, &new1, "pam-r", "admin"))
            .err()
            .unwrap()
            .code(),
        "forbidden"
    );
    // A first renewal whose answer was lost, then a second: the unused
    // first one is revoked.
    match b.write(renewal(&old, &new1, "pam-r", "pam")).unwrap() {
        WriteOutcome::Revoked(v) => assert!(v.is_empty()),
        o => panic!("renewal answered {o:?}"),
    }
    match b.write(renewal(&old, &new2, "pam-r", "pam")).unwrap() {
        WriteOutcome::Revoked(v) => assert_eq!(v, std::slice::from_ref(&new1)),
        o => panic!("renewal answered {o:?}"),
    }
    assert!(b.principal(&new1).unwrap().unwrap().revoked);
    assert_eq!(
        b.principal(&new2).unwrap().unwrap().renewed_from.as_deref(),
        Some(old.as_str())
    );
    // The old certificate still works until the new one is used.
    assert!(!b.principal(&old).unwrap().unwrap().revoked);
    // A lease under the old certificate that ends before the renewal is used.
    b.write(WriteOp::Checkout {
        id: "co-closed".into(),
        path: "c/p".into(),
        expect_version: None,
        named: None,
        principal: "pam-r".into(),
        fingerprint: old.clone(),
        reason: "renewal test".into(),
        now: 1_000,
        expires_at: 4_000_000_000,
    })
    .unwrap();
    b.write(WriteOp::Checkin {
        id: "co-closed".into(),
        principal: "pam-r".into(),
        fingerprint: old.clone(),
        now: 1_100,
    })
    .unwrap();
    match b
        .write(WriteOp::RetirePredecessor {
            fingerprint: new2.clone(),
        })
        .unwrap()
    {
        WriteOutcome::Revoked(v) => assert_eq!(v, std::slice::from_ref(&old)),
        o => panic!("retire answered {o:?}"),
    }
    assert!(b.principal(&old).unwrap().unwrap().revoked);
    assert_eq!(b.checkout("co-renew").unwrap().unwrap().fingerprint, new2);
    // Session recordings: the checkout's certificate or a renewal of it
    // registers one, for a lease open or ended; no one else; and not for a
    // session said to begin before the checkout.
    let record = |id: &str, who: &str, fp: &str, started_at: i64| {
        b.write(WriteOp::RecordSession {
            id: id.into(),
            principal: who.into(),
            fingerprint: fp.into(),
            started_at,
        })
        .err()
        .map(|e| e.code())
        .unwrap_or("ok")
    };
    assert_eq!(
        record("co-closed", "pam-r", &new2, 1_000),
        "ok",
        "by the renewal, after check-in"
    );
    assert_eq!(
        record("co-closed", "pam-r", &old, 1_050),
        "ok",
        "by the certificate itself"
    );
    assert_eq!(
        record("co-closed", "pam-r", &"ab".repeat(32), 1_000),
        "forbidden",
        "another certificate of the name"
    );
    assert_eq!(
        record("co-closed", "pam-x", &new2, 1_000),
        "forbidden",
        "another name"
    );
    assert_eq!(
        record(
            "co-closed",
            "pam-r",
            &new2,
            1_000 - crate::RECORDING_SKEW - 1
        ),
        "recording_before_checkout"
    );
    assert_eq!(
        record("co-closed", "pam-r", &new2, 1_000 - crate::RECORDING_SKEW),
        "ok",
        "within the clock skew"
    );
    assert_eq!(
        record("no-such-checkout", "pam-r", &new2, 1_000),
        "not_found"
    );
    // Once is enough.
    match b
        .write(WriteOp::RetirePredecessor {
            fingerprint: new2.clone(),
        })
        .unwrap()
    {
        WriteOutcome::Revoked(v) => assert!(v.is_empty()),
        o => panic!("retire answered {o:?}"),
    }
    // A retired (revoked) certificate cannot renew again.
    assert_eq!(
        b.write(renewal(&old, &"4".repeat(64), "pam-r", "pam"))
            .err()
            .unwrap()
            .code(),
        "renewal_closed"
    );
    // Nor an expired one.
    let mut late = principal(&"5".repeat(64), "pam-r", "pam");
    late.not_after = 10;
    b.write(WriteOp::AddPrincipal(late)).unwrap();
    assert_eq!(
        b.write(renewal(&"5".repeat(64), &"6".repeat(64), "pam-r", "pam"))
            .err()
            .unwrap()
            .code(),
        "renewal_closed"
    );
    // Revoking a certificate revokes its renewals: a thief who renewed a
    // stolen certificate loses the renewal with it.
    let (a, a2, a3) = ("7".repeat(64), "8".repeat(64), "9".repeat(64));
    b.write(WriteOp::AddPrincipal(principal(&a, "pam-s", "pam")))
        .unwrap();
    b.write(renewal(&a, &a2, "pam-s", "pam")).unwrap();
    b.write(WriteOp::RetirePredecessor {
        fingerprint: a2.clone(),
    })
    .unwrap();
    b.write(renewal(&a2, &a3, "pam-s", "pam")).unwrap();
    match b
        .write(WriteOp::RevokePrincipal {
            fingerprint: a.clone(),
            now: 10,
        })
        .unwrap()
    {
        WriteOutcome::Revoked(mut v) => {
            v.sort();
            assert_eq!(v, [a.clone(), a2.clone(), a3.clone()]);
        }
        o => panic!("revoke answered {o:?}"),
    }
    assert!(b.principal(&a3).unwrap().unwrap().revoked);
    // The last-admin guard counts only admin certificates that are still
    // valid: an expired one does not keep anyone out of a lockout.
    let expired_admin = {
        let mut p = principal(&"e1".repeat(32), "admin-old", "admin");
        p.not_after = 5;
        p
    };
    b.write(WriteOp::AddPrincipal(expired_admin)).unwrap();
    assert_eq!(
        b.write(WriteOp::RevokePrincipal {
            fingerprint: "a".repeat(64),
            now: 10,
        })
        .err()
        .unwrap()
        .code(),
        "last_admin"
    );
}

fn custodian(name: &str, key: u8) -> CustodianRow {
    CustodianRow {
        name: name.into(),
        groups: vec!["security".into()],
        serial: 1000 + u32::from(key),
        firmware: "5.4.3".into(),
        pin_policy: "always".into(),
        touch_policy: "always".into(),
        sig_key: vec![key; 65],
        kex_key: vec![key ^ 0x80; 65],
        attestation: "{}".into(),
        enrolled_at: 1,
        enrolled_by: "admin".into(),
    }
}

fn custodians_and_requests(b: &dyn Backend, kr: &Keyring) {
    b.write(WriteOp::EnrollCustodian(custodian("alice", 1)))
        .unwrap();
    b.write(WriteOp::EnrollCustodian(custodian("bob", 2)))
        .unwrap();
    assert_eq!(
        b.write(WriteOp::EnrollCustodian(custodian("alice", 3)))
            .err()
            .unwrap()
            .code(),
        "already_enrolled"
    );
    assert_eq!(
        b.write(WriteOp::EnrollCustodian(custodian("carol", 1)))
            .err()
            .unwrap()
            .code(),
        "key_already_enrolled"
    );
    let cs = b.custodians().unwrap();
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].groups, ["security"]);
    // A removed custodian is gone from the set, and neither its name nor
    // its keys come back.
    b.write(WriteOp::EnrollCustodian(custodian("zoe", 9)))
        .unwrap();
    b.write(WriteOp::SetCustodianGroups {
        name: "zoe".into(),
        groups: vec!["dba".into(), "ops".into()],
    })
    .unwrap();
    assert_eq!(
        b.custodians()
            .unwrap()
            .iter()
            .find(|c| c.name == "zoe")
            .unwrap()
            .groups,
        ["dba", "ops"]
    );
    b.write(WriteOp::RemoveCustodian {
        name: "zoe".into(),
        by: "admin".into(),
        now: 3,
    })
    .unwrap();
    assert_eq!(b.custodians().unwrap().len(), 2);
    let again = |name: &str, key: u8| {
        b.write(WriteOp::EnrollCustodian(custodian(name, key)))
            .err()
            .unwrap()
            .code()
    };
    assert_eq!(again("zoe", 10), "already_enrolled");
    assert_eq!(again("zed", 9), "key_already_enrolled");
    for op in [
        WriteOp::RemoveCustodian {
            name: "zoe".into(),
            by: "admin".into(),
            now: 4,
        },
        WriteOp::SetCustodianGroups {
            name: "zoe".into(),
            groups: vec!["x".into()],
        },
    ] {
        assert_eq!(b.write(op).err().unwrap().code(), "not_found");
    }
    put(b, kr, "c/gated", b"g").unwrap();
    let req = RequestRow {
        id: "00000000-0000-4000-8000-0000000000aa".into(),
        kind: RequestKind::Checkout,
        path: "c/gated".into(),
        version: 1,
        requester: "pam01".into(),
        requester_fingerprint: "0f".repeat(32),
        reason: "r".into(),
        created_at: 1,
        expires_at: 1_000,
        nonce: [9; 32],
        recipient_key: None,
        policy: r#"[{"group":"security","k":2}]"#.into(),
        ttl_seconds: 60,
        status: RequestStatus::Pending,
        collected_at: None,
        checkout_id: None,
        change: None,
    };
    // Only a governance request carries a change, and it must.
    let with_change = RequestRow {
        change: Some("{}".into()),
        ..req.clone()
    };
    assert_eq!(
        b.write(WriteOp::OpenRequest(with_change))
            .err()
            .unwrap()
            .code(),
        "forbidden"
    );
    b.write(WriteOp::OpenRequest(req.clone())).unwrap();
    assert_eq!(
        b.request(&req.id).unwrap().unwrap(),
        req,
        "request stored as given"
    );
    let vote = |who: &str, status: RequestStatus, expect: usize| {
        b.write(WriteOp::Vote {
            row: VoteRow {
                request_id: req.id.clone(),
                custodian: who.into(),
                decision: Decision::Approve,
                signature: vec![1, 2, 3],
                share: None,
                created_at: 5,
            },
            status,
            expect_votes: expect,
        })
    };
    vote("alice", RequestStatus::Pending, 0).unwrap();
    // Decided on a count that is out of date: stale.
    assert!(matches!(
        vote("bob", RequestStatus::Approved, 0),
        Err(StoreError::Stale(_))
    ));
    vote("bob", RequestStatus::Approved, 1).unwrap();
    assert_eq!(b.votes(&req.id).unwrap().len(), 2);
    assert_eq!(
        b.request(&req.id).unwrap().unwrap().status,
        RequestStatus::Approved
    );
    let collect_as = |who: &str, fp: String| {
        b.write(WriteOp::Collect {
            request_id: req.id.clone(),
            requester: who.into(),
            fingerprint: fp,
            now: 10,
            checkout: Some(("00000000-0000-4000-8000-0000000000ab".into(), 70)),
        })
    };
    let collect = |who: &str| collect_as(who, "0f".repeat(32));
    assert_eq!(collect("mallory").err().unwrap().code(), "forbidden");
    // Another certificate of the requester's name does not inherit it.
    assert_eq!(
        collect_as("pam01", "aa".repeat(32)).err().unwrap().code(),
        "forbidden"
    );
    match collect("pam01").unwrap() {
        WriteOutcome::Collected(r) => assert_eq!(r.collected_at, Some(10)),
        o => panic!("collect answered {o:?}"),
    }
    assert_eq!(collect("pam01").err().unwrap().code(), "already_collected");
    assert!(b
        .checkout("00000000-0000-4000-8000-0000000000ab")
        .unwrap()
        .is_some());
    assert_eq!(
        b.requests(Some(RequestStatus::Approved), 10).unwrap().len(),
        1
    );
    assert!(b
        .requests(Some(RequestStatus::Pending), 10)
        .unwrap()
        .is_empty());
}

/// A governance change applies once, approved, by its proposer's
/// certificate, under the rule and custodian set it was proposed under.
fn governance(b: &dyn Backend) {
    let custodians = crate::custodian_set(&b.custodians().unwrap());
    let open = |id: &str, kind: RequestKind, status: RequestStatus, expires_at: i64| {
        let row = RequestRow {
            id: id.into(),
            kind,
            path: "governance/rule".into(),
            version: 0,
            // A break-glass request is a PAM server's (one with a grant).
            requester: if kind == RequestKind::Governance {
                "admin"
            } else {
                "pam01"
            }
            .into(),
            requester_fingerprint: "0a".repeat(32),
            reason: "r".into(),
            created_at: 1,
            expires_at,
            nonce: [3; 32],
            recipient_key: None,
            policy: r#"[{"group":"security","k":2}]"#.into(),
            ttl_seconds: 0,
            status: RequestStatus::Pending,
            collected_at: None,
            checkout_id: None,
            change: (kind == RequestKind::Governance).then(|| r#"{"change":"genesis"}"#.into()),
        };
        b.write(WriteOp::OpenRequest(row)).unwrap();
        if status != RequestStatus::Pending {
            for (n, who) in ["alice", "bob"].into_iter().enumerate() {
                b.write(WriteOp::Vote {
                    row: VoteRow {
                        request_id: id.into(),
                        custodian: who.into(),
                        decision: Decision::Approve,
                        signature: vec![1],
                        share: None,
                        created_at: 2,
                    },
                    status,
                    expect_votes: n,
                })
                .unwrap();
            }
        }
    };
    let set_rule = || {
        Box::new(WriteOp::SetMeta {
            key: crate::GOVERNANCE_RULE.into(),
            value: br#"[{"group":"security","k":2}]"#.to_vec(),
        })
    };
    let apply = |id: &str, genesis: bool, custodians: &str, op: Box<WriteOp>| {
        b.write(WriteOp::ApplyGovernance {
            request_id: id.into(),
            requester: "admin".into(),
            fingerprint: "0a".repeat(32),
            now: 10,
            genesis,
            custodians: custodians.into(),
            expect_approvals: None,
            op,
        })
        .map(|_| ())
        .map_err(|e| e.code())
    };
    let g = "00000000-0000-4000-8000-0000000000c1";
    open(g, RequestKind::Governance, RequestStatus::Pending, 1_000);
    assert_eq!(
        apply(g, true, &custodians, set_rule()),
        Err("pending_approval")
    );
    let g2 = "00000000-0000-4000-8000-0000000000c2";
    open(g2, RequestKind::Governance, RequestStatus::Approved, 1_000);
    // Before genesis only a genesis applies.
    assert_eq!(
        apply(g2, false, &custodians, set_rule()),
        Err("governance_required")
    );
    // Computed from another custodian set.
    assert_eq!(apply(g2, true, "[]", set_rule()), Err("custodians_changed"));
    // Another certificate of the proposer's name.
    assert_eq!(
        b.write(WriteOp::ApplyGovernance {
            request_id: g2.into(),
            requester: "admin".into(),
            fingerprint: "bb".repeat(32),
            now: 10,
            genesis: true,
            custodians: custodians.clone(),
            expect_approvals: None,
            op: set_rule(),
        })
        .err()
        .unwrap()
        .code(),
        "forbidden"
    );
    // Only enrolment and meta writes ride on a governance change.
    assert_eq!(
        apply(
            g2,
            true,
            &custodians,
            Box::new(WriteOp::RevokeName {
                name: "x".into(),
                now: 1
            })
        ),
        Err("forbidden")
    );
    assert_eq!(
        b.get_meta(crate::GOVERNANCE_RULE).unwrap(),
        None,
        "nothing applied"
    );
    apply(g2, true, &custodians, set_rule()).unwrap();
    assert!(b.get_meta(crate::GOVERNANCE_RULE).unwrap().is_some());
    assert_eq!(
        apply(g2, true, &custodians, set_rule()),
        Err("already_collected")
    );
    // A second genesis is refused once a rule exists.
    let g3 = "00000000-0000-4000-8000-0000000000c3";
    open(g3, RequestKind::Governance, RequestStatus::Approved, 1_000);
    assert_eq!(
        apply(g3, true, &custodians, set_rule()),
        Err("governance_established")
    );
    // Approved under another rule than the stored one.
    b.write(WriteOp::SetMeta {
        key: crate::GOVERNANCE_RULE.into(),
        value: br#"[{"group":"security","k":1},{"group":"dba","k":1}]"#.to_vec(),
    })
    .unwrap();
    assert_eq!(
        apply(g3, false, &custodians, set_rule()),
        Err("governance_changed")
    );
    // Expired, and the wrong kind.
    let g4 = "00000000-0000-4000-8000-0000000000c4";
    open(g4, RequestKind::Governance, RequestStatus::Approved, 5);
    assert_eq!(
        apply(g4, false, &custodians, set_rule()),
        Err("request_expired")
    );
    let g5 = "00000000-0000-4000-8000-0000000000c5";
    open(g5, RequestKind::Breakglass, RequestStatus::Approved, 1_000);
    assert_eq!(
        b.write(WriteOp::ApplyGovernance {
            request_id: g5.into(),
            requester: "pam01".into(),
            fingerprint: "0a".repeat(32),
            now: 10,
            genesis: false,
            custodians: custodians.clone(),
            expect_approvals: None,
            op: set_rule(),
        })
        .map(|_| ())
        .map_err(|e| e.code()),
        Err("wrong_request_kind")
    );
    b.write(WriteOp::SetMeta {
        key: crate::GOVERNANCE_RULE.into(),
        value: br#"[{"group":"security","k":2}]"#.to_vec(),
    })
    .unwrap();
    assert_eq!(
        b.request(g3).unwrap().unwrap().change.as_deref(),
        Some(r#"{"change":"genesis"}"#)
    );
    // An immediate write with `expect` lands only over those approvals.
    let guarded = |expect: &str| {
        b.write(WriteOp::SetPrefixApprovals {
            prefix: "gov2/".into(),
            approvals: r#"[{"group":"security","k":2}]"#.into(),
            by: "admin".into(),
            now: 10,
            expect: Some(expect.into()),
        })
        .map(|_| ())
        .map_err(|e| e.code())
    };
    assert_eq!(
        guarded(r#"[{"group":"security","k":3}]"#),
        Err("policy_changed")
    );
    guarded("[]").unwrap();
    b.write(WriteOp::SetPrefixApprovals {
        prefix: "gov2/".into(),
        approvals: "[]".into(),
        by: "admin".into(),
        now: 11,
        expect: None,
    })
    .unwrap();
    // A relaxed policy applies only over the approvals it was proposed
    // against.
    let g6 = "00000000-0000-4000-8000-0000000000c6";
    open(g6, RequestKind::Governance, RequestStatus::Approved, 1_000);
    let relax = |expect: &str| {
        b.write(WriteOp::ApplyGovernance {
            request_id: g6.into(),
            requester: "admin".into(),
            fingerprint: "0a".repeat(32),
            now: 10,
            genesis: false,
            custodians: custodians.clone(),
            expect_approvals: Some(("gov/".into(), expect.into())),
            op: Box::new(WriteOp::SetPrefixApprovals {
                prefix: "gov/".into(),
                approvals: r#"[{"group":"security","k":1}]"#.into(),
                by: "admin".into(),
                now: 10,
                expect: None,
            }),
        })
        .map(|_| ())
        .map_err(|e| e.code())
    };
    assert_eq!(
        relax(r#"[{"group":"security","k":2}]"#),
        Err("policy_changed")
    );
    relax("[]").unwrap();
    assert_eq!(
        b.prefix_policies_over("gov/x").unwrap()[0].approvals,
        r#"[{"group":"security","k":1}]"#
    );
    b.write(WriteOp::SetPrefixApprovals {
        prefix: "gov/".into(),
        approvals: "[]".into(),
        by: "admin".into(),
        now: 11,
        expect: None,
    })
    .unwrap();
}

fn concurrent_writers(b: &dyn Backend, kr: &Arc<Keyring>) {
    // Many writers at once, distinct paths and one shared path: nothing is
    // lost, and the shared path's versions are dense (stale writes retry).
    std::thread::scope(|s| {
        for t in 0..8 {
            let kr = kr.clone();
            s.spawn(move || {
                for i in 0..10 {
                    put(b, &kr, &format!("c/t{t}/{i}"), b"v").unwrap();
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        match put(b, &kr, "c/shared", b"v") {
                            Ok(_) => break,
                            Err(StoreError::Stale(_)) if tries < 1000 => continue,
                            Err(e) => panic!("shared put: {e}"),
                        }
                    }
                }
            });
        }
    });
    assert_eq!(b.list("c/t", None, 1000).unwrap().len(), 80);
    let info = b.secret("c/shared").unwrap().unwrap();
    assert_eq!(info.current_version, 80);
    let versions: Vec<u64> = info.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, (1..=80).collect::<Vec<_>>());
}

fn audit_log(b: &dyn Backend) {
    let n0 = b.audit_log().size();
    b.audit(base("sys.unseal", "").success).unwrap();
    // A refused write gets its refusal entry, with the store's code and the
    // one outcome rule.
    let r = b.write_audited(
        WriteOp::Checkin {
            id: "00000000-0000-4000-8000-00000000ffff".into(),
            principal: "pam01".into(),
            fingerprint: "0f".repeat(32),
            now: 1,
        },
        base("checkout.checkin", "x").on_success("path", "never"),
    );
    assert_eq!(r.err().unwrap().code(), "not_found");
    let last = last_entry(b);
    assert_eq!(last.outcome, Outcome::Denied);
    assert_eq!(last.error, "not_found");
    assert!(last.details.is_empty(), "success details stay off refusals");
    let n = b.audit_log().size();
    assert_eq!(n, n0 + 2);
    // The stored entries chain and match the tree.
    let entries = b.audit_entries(0, n).unwrap();
    assert_eq!(entries.len() as u64, n);
    let mut prev = None;
    let mut tree = vault_core::audit::merkle::Tree::new();
    for (i, bytes) in &entries {
        let e = Entry::parse(bytes).unwrap();
        assert_eq!(e.seq, *i, "dense indices");
        assert_eq!(e.prev_hash().unwrap(), prev, "hash chain at {i}");
        prev = Some(leaf_hash(bytes));
        tree.push(leaf_hash(bytes));
    }
    assert_eq!(
        tree.root(),
        b.audit_log().read().root(),
        "tree matches entries"
    );
    b.write(WriteOp::AddCheckpoint {
        tree_size: n,
        note: "note".into(),
        now: 1,
    })
    .unwrap();
    assert_eq!(b.latest_checkpoint().unwrap(), Some((n, "note".into())));
    assert_eq!(b.checkpoints(0, n).unwrap().len(), 1);
}

fn fencing(h: &dyn Harness) {
    let old = h.open();
    let new = h.open();
    let e = new.take_over().unwrap();
    assert!(e > old.epoch(), "take-over raises the epoch");
    let size = new.audit_log().size();
    let r = old.write_audited(
        WriteOp::SetMeta {
            key: "fenced".into(),
            value: b"old".to_vec(),
        },
        base("sys.read", ""),
    );
    assert!(
        matches!(r, Err(StoreError::Fenced { .. })),
        "an old writer is fenced: {r:?}"
    );
    assert_eq!(new.get_meta("fenced").unwrap(), None, "nothing written");
    assert_eq!(new.audit_log().size(), size, "nothing audited");
    new.write(WriteOp::SetMeta {
        key: "fenced".into(),
        value: b"new".to_vec(),
    })
    .unwrap();
    assert_eq!(new.get_meta("fenced").unwrap(), Some(b"new".to_vec()));
    drop((old, new));
    // A restarted handle writes with the newest epoch.
    let again = h.open();
    assert_eq!(again.epoch(), e);
    again
        .write(WriteOp::SetMeta {
            key: "after".into(),
            value: vec![1],
        })
        .unwrap();
}
