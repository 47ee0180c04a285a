//! The audit log in the store: atomic with changes, entries for refusals,
//! a hash chain, a tree that survives reopening.

use std::collections::BTreeMap;
use std::sync::Arc;
use vault_store::Backend as _;

use vault_core::audit::entry::{Draft, Entry, Outcome};
use vault_core::audit::merkle::{leaf_hash, verify_inclusion, CompactRange};
use vault_core::keyring::{Keyring, KeyringVersion, Tier};
use vault_core::keys::RootKey;
use vault_store::{Store, StoreOptions, WriteOp};

fn draft(action: &str, outcome: Outcome, error: &str) -> Draft {
    Draft {
        time: "2026-01-01T00:00:00Z".into(),
        request_id: "r".into(),
        principal: "p".into(),
        role: "pam".into(),
        fingerprint: String::new(),
        action: action.into(),
        target: "t".into(),
        outcome,
        error: error.into(),
        details: BTreeMap::new(),
        hmac: BTreeMap::new(),
    }
}

/// The entries of a write: the store fills in a refusal's outcome and code.
fn audit_fn(action: &'static str) -> vault_store::AuditDrafts {
    vault_store::AuditDrafts::new(draft(action, Outcome::Success, ""))
}

#[test]
fn audited_writes_chain_and_survive_reopen() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("v.db");
    let s = Arc::new(Store::open(&path, StoreOptions::default()).unwrap());
    let kr =
        Arc::new(Keyring::load(&RootKey::generate(), &[KeyringVersion::new_random(1)]).unwrap());
    // A successful change and a refused one, from many threads at once.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            let kr = kr.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let p = format!("t{t}/{i}");
                    s.write_audited(
                        WriteOp::PutSecret {
                            sealed: kr.seal_value(&p, 1, Tier::Standard, b"x"),
                            path: p,
                            version: 1,
                            exclusive: None,
                            max_lease_seconds: None,
                            metadata: None,
                            created_by: "w".into(),
                            now: 1,
                        },
                        audit_fn("secret.write"),
                    )
                    .unwrap();
                    let r = s.write_audited(
                        WriteOp::Checkout {
                            id: format!("c{t}-{i}"),
                            path: "missing".into(),
                            expect_version: None,
                            named: None,
                            principal: "p".into(),
                            fingerprint: "0f".repeat(32),
                            reason: "r".into(),
                            now: 1,
                            expires_at: 2,
                        },
                        audit_fn("secret.checkout"),
                    );
                    // No grant covers it (default deny): refused, and audited.
                    assert_eq!(r.err().unwrap().code(), "not_granted");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = s.audit_log().size();
    assert_eq!(n, 400);
    let entries = s.audit_entries(0, n).unwrap();
    let mut prev = None;
    let mut cr = CompactRange::new();
    let (mut ok, mut denied) = (0, 0);
    for (i, bytes) in &entries {
        let e = Entry::parse(bytes).unwrap();
        assert_eq!(e.seq, *i);
        assert_eq!(e.prev_hash().unwrap(), prev, "chain broken at {i}");
        prev = Some(leaf_hash(bytes));
        cr.push(leaf_hash(bytes));
        match e.outcome {
            Outcome::Success => ok += 1,
            _ => {
                assert_eq!(e.error, "not_granted");
                denied += 1
            }
        }
    }
    assert_eq!((ok, denied), (200, 200));
    let root = s.audit_log().read().root();
    assert_eq!(cr.root(), root);
    let proof = s.audit_log().read().inclusion_proof(123, n).unwrap();
    verify_inclusion(&leaf_hash(&entries[123].1), 123, n, &proof, &root).unwrap();
    // The refused checkouts changed nothing.
    assert!(s.checkout("c0-0").unwrap().is_none());
    drop(entries);
    let s = Arc::try_unwrap(s).ok().unwrap();
    drop(s);
    let s = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(s.audit_log().read().root(), root);
    s.audit(draft("seal", Outcome::Success, "")).unwrap();
    let last = s.audit_entries(400, 401).unwrap();
    let e = Entry::parse(&last[0].1).unwrap();
    assert_eq!(
        e.prev_hash().unwrap(),
        prev,
        "chain continues across restarts"
    );
}

#[test]
fn checkpoints_are_stored_and_a_tampered_leaf_is_refused_at_open() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("v.db");
    {
        let s = Store::open(&path, StoreOptions::default()).unwrap();
        for _ in 0..3 {
            s.audit(draft("x", Outcome::Success, "")).unwrap();
        }
        s.write(WriteOp::AddCheckpoint {
            tree_size: 3,
            note: "n3".into(),
            now: 1,
        })
        .unwrap();
        s.write(WriteOp::AddCheckpoint {
            tree_size: 1,
            note: "n1".into(),
            now: 1,
        })
        .unwrap();
        assert_eq!(s.latest_checkpoint().unwrap(), Some((3, "n3".into())));
        assert_eq!(s.checkpoints(0, 10).unwrap().len(), 2);
    }
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "UPDATE audit_log SET entry = CAST('{}' AS BLOB) WHERE idx = 1",
        [],
    )
    .unwrap();
    drop(c);
    let e = Store::open(&path, StoreOptions::default()).err().unwrap();
    assert_eq!(e.code(), "integrity");
}
