//! The offline verifier against a tamper battery: every kind of change to
//! an exported log is detected and named at the right index.

use std::collections::BTreeMap;

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey as _;
use vault_core::audit::entry::{Draft, Outcome};
use vault_core::audit::merkle::{leaf_hash, CompactRange};
use vault_core::audit::note::Checkpoint;
use vault_core::audit::verify::{verify, FailureKind, Report};

const ORIGIN: &str = "vaultd.appliance/test";

struct Log {
    sk: SigningKey,
    spki: Vec<u8>,
    entries: Vec<Vec<u8>>,
}

fn draft(i: u64) -> Draft {
    Draft {
        time: format!("2026-01-01T00:00:{:02}Z", i % 60),
        request_id: format!("req{i}"),
        principal: "pam01".into(),
        role: "pam".into(),
        fingerprint: "ab".repeat(32),
        action: "secret.checkout".into(),
        target: format!("db/{i}"),
        outcome: Outcome::Success,
        error: String::new(),
        details: BTreeMap::from([("version".into(), "1".into())]),
        hmac: BTreeMap::new(),
    }
}

impl Log {
    fn new(n: u64) -> Log {
        let sk = SigningKey::random(&mut rand::rngs::OsRng);
        let spki = sk
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec();
        let mut l = Log {
            sk,
            spki,
            entries: Vec::new(),
        };
        l.extend(n);
        l
    }

    fn extend(&mut self, n: u64) {
        for _ in 0..n {
            let i = self.entries.len() as u64;
            let prev = self.entries.last().map(|e| leaf_hash(e));
            self.entries.push(draft(i).finalize(i, prev.as_ref()));
        }
    }

    fn checkpoint_of(&self, entries: &[Vec<u8>], size: usize) -> String {
        let mut cr = CompactRange::new();
        for e in &entries[..size] {
            cr.push(leaf_hash(e));
        }
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size: size as u64,
            root: cr.root(),
        };
        let sig: Signature = self.sk.sign(cp.body().as_bytes());
        cp.signed(ORIGIN, &self.spki, sig.to_der().as_bytes())
    }

    fn checkpoints(&self, sizes: &[usize]) -> Vec<String> {
        sizes
            .iter()
            .map(|s| self.checkpoint_of(&self.entries, *s))
            .collect()
    }
}

fn run(entries: &[Vec<u8>], cps: &[String], spki: &[u8], trusted: Option<&str>) -> Report {
    let e: Vec<&[u8]> = entries.iter().map(|x| x.as_slice()).collect();
    let c: Vec<&str> = cps.iter().map(|x| x.as_str()).collect();
    verify(&e, &c, &[spki], trusted, &mut |_| {})
}

fn expect(r: &Report, kind: FailureKind, index: Option<u64>) {
    let f = r
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("no failure, want {kind:?} at {index:?}"));
    assert_eq!((f.kind, f.index), (kind, index), "{}", f.message);
}

const SIZES: &[usize] = &[10, 50, 100];

#[test]
fn honest_log_verifies() {
    let l = Log::new(100);
    let r = run(&l.entries, &l.checkpoints(SIZES), &l.spki, None);
    assert!(r.ok(), "{:?}", r.failure);
    assert_eq!((r.entries, r.signed_size, r.checkpoints), (100, 100, 3));
    let trusted = l.checkpoint_of(&l.entries, 37);
    assert!(run(&l.entries, &l.checkpoints(SIZES), &l.spki, Some(&trusted)).ok());
}

#[test]
fn flipped_byte_is_modified_at_that_index() {
    let l = Log::new(100);
    for idx in [0usize, 1, 42, 98] {
        // Inside the value part of the entry (not the prefix).
        let mut e = l.entries.clone();
        let pos = e[idx].len() - 20;
        e[idx][pos] ^= 0x01;
        expect(
            &run(&e, &l.checkpoints(SIZES), &l.spki, None),
            FailureKind::Modified,
            Some(idx as u64),
        );
        // Inside the prev field.
        if idx > 0 {
            let mut e = l.entries.clone();
            e[idx][40] = if e[idx][40] == b'a' { b'b' } else { b'a' };
            expect(
                &run(&e, &l.checkpoints(SIZES), &l.spki, None),
                FailureKind::Modified,
                Some(idx as u64),
            );
        }
    }
    // The last entry: only the checkpoint root can tell.
    let mut e = l.entries.clone();
    let pos = e[99].len() - 20;
    e[99][pos] ^= 0x01;
    let r = run(&e, &l.checkpoints(SIZES), &l.spki, None);
    let f = r.failure.unwrap();
    assert_eq!(f.kind, FailureKind::Modified);
    assert!(
        f.index.unwrap() <= 99 && f.index.unwrap() >= 50,
        "{}",
        f.message
    );
    // Malformed bytes.
    let mut e = l.entries.clone();
    e[7] = b"not json".to_vec();
    expect(
        &run(&e, &l.checkpoints(SIZES), &l.spki, None),
        FailureKind::Modified,
        Some(7),
    );
}

#[test]
fn deleted_entry_is_missing() {
    let l = Log::new(100);
    let mut e = l.entries.clone();
    e.remove(30);
    expect(
        &run(&e, &l.checkpoints(SIZES), &l.spki, None),
        FailureKind::Missing,
        Some(30),
    );
}

#[test]
fn swapped_entries_are_reordered() {
    let l = Log::new(100);
    let mut e = l.entries.clone();
    e.swap(60, 61);
    expect(
        &run(&e, &l.checkpoints(SIZES), &l.spki, None),
        FailureKind::Reordered,
        Some(60),
    );
}

#[test]
fn truncation_is_detected() {
    let l = Log::new(100);
    let e = l.entries[..80].to_vec();
    expect(
        &run(&e, &l.checkpoints(SIZES), &l.spki, None),
        FailureKind::Truncated,
        Some(80),
    );
    // Truncated together with the newest checkpoint: only the auditor's
    // trusted checkpoint reveals it.
    let trusted = l.checkpoint_of(&l.entries, 100);
    expect(
        &run(&e, &l.checkpoints(&[10, 50]), &l.spki, None),
        FailureKind::Appended,
        Some(50),
    );
    let e50 = l.entries[..50].to_vec();
    assert!(run(&e50, &l.checkpoints(&[10, 50]), &l.spki, None).ok());
    expect(
        &run(&e50, &l.checkpoints(&[10, 50]), &l.spki, Some(&trusted)),
        FailureKind::Truncated,
        Some(50),
    );
}

#[test]
fn forged_appended_entry_is_detected() {
    let mut l = Log::new(100);
    let cps = l.checkpoints(SIZES);
    l.extend(1); // a well-formed, chained entry no checkpoint covers
    expect(
        &run(&l.entries, &cps, &l.spki, None),
        FailureKind::Appended,
        Some(100),
    );
}

#[test]
fn resigned_fork_is_detected_with_a_trusted_checkpoint() {
    let l = Log::new(100);
    let trusted = l.checkpoint_of(&l.entries, 60);
    // Rewrite history from entry 40 and re-sign everything with the real key
    // (a compromised appliance).
    let mut forked: Vec<Vec<u8>> = l.entries[..40].to_vec();
    for i in 40..100u64 {
        let prev = forked.last().map(|e| leaf_hash(e));
        let mut d = draft(i);
        d.target = format!("forged/{i}");
        forked.push(d.finalize(i, prev.as_ref()));
    }
    let cps: Vec<String> = SIZES.iter().map(|s| l.checkpoint_of(&forked, *s)).collect();
    assert!(
        run(&forked, &cps, &l.spki, None).ok(),
        "a consistent re-signed fork is invisible without history"
    );
    let r = run(&forked, &cps, &l.spki, Some(&trusted));
    assert_eq!(r.failure.unwrap().kind, FailureKind::Forked);
    // Two checkpoints of one size with different roots: equivocation.
    let mut both = l.checkpoints(SIZES);
    both.push(l.checkpoint_of(&forked, 100));
    expect(
        &run(&l.entries, &both, &l.spki, None),
        FailureKind::Forked,
        None,
    );
}

#[test]
fn bad_or_foreign_checkpoints_are_refused() {
    let l = Log::new(20);
    let other = Log::new(1);
    let mut cps = l.checkpoints(&[20]);
    expect(
        &run(&l.entries, &cps, &other.spki, None),
        FailureKind::BadCheckpoint,
        None,
    );
    cps[0] = cps[0].replacen("\n20\n", "\n19\n", 1);
    expect(
        &run(&l.entries, &cps, &l.spki, None),
        FailureKind::BadCheckpoint,
        None,
    );
    // A rewrite under a checkpoint the key did sign is caught by the root.
    let mut e = l.entries.clone();
    e[19] = {
        let prev = leaf_hash(&e[18]);
        let mut d = draft(19);
        d.principal = "mallory".into();
        d.finalize(19, Some(&prev))
    };
    let r = run(&e, &l.checkpoints(&[20]), &l.spki, None);
    assert_eq!(r.failure.unwrap().kind, FailureKind::Modified);
}

/// After a custodian recovery the appliance signs with a new key: the log
/// verifies with both keys pinned, and not with either one alone.
#[test]
fn a_replaced_signing_key_needs_both_keys_pinned() {
    let mut log = Log::new(10);
    let mut cps = log.checkpoints(&[5, 10]);
    let old_spki = log.spki.clone();
    log.sk = SigningKey::random(&mut rand::rngs::OsRng);
    log.spki = log
        .sk
        .verifying_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    log.extend(4);
    cps.extend(log.checkpoints(&[14]));
    let e: Vec<&[u8]> = log.entries.iter().map(|x| x.as_slice()).collect();
    let c: Vec<&str> = cps.iter().map(|x| x.as_str()).collect();
    let both = verify(&e, &c, &[&old_spki, &log.spki], None, &mut |_| {});
    assert!(both.ok(), "{:?}", both.failure);
    assert_eq!(both.signed_size, 14);
    for one in [&old_spki, &log.spki] {
        let r = verify(&e, &c, &[one.as_slice()], None, &mut |_| {});
        expect(&r, FailureKind::BadCheckpoint, None);
    }
}
