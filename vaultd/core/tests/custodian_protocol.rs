//! The custodian protocol with software tokens: quorum rules, every
//! refused vote, and a break-glass round trip.

use p256::{PublicKey, SecretKey};
use vault_core::barrier;
use vault_core::custodian::approval::{
    Custodian, Decision, GroupRule, Request, Status, Tally, VoteError,
};
use vault_core::custodian::ecies::{open_with, seal_to, soft_ecdh};
use vault_core::custodian::shamir::{combine, split, Share};
use vault_core::custodian::token::{CustodianToken, Slot, SoftToken, TokenError};
use vault_core::secret::{Key32, Pin};

fn request(id: &str, appliance: &str) -> Request {
    Request {
        request_id: id.into(),
        appliance_id: appliance.into(),
        path: "cloud/root".into(),
        version: 3,
        requester: "pam01".into(),
        reason: "INC-42 break glass".into(),
        created_at: 1_000,
        expires_at: 2_000,
        nonce: [7u8; 32],
        recipient_key: None,
        change: None,
    }
}

struct Person {
    token: SoftToken,
    who: Custodian,
}

fn person(id: &str, groups: &[&str], serial: u32) -> Person {
    let mut token = SoftToken::new(serial, "123456");
    token.verify_pin(&Pin::new("123456".into())).unwrap();
    let who = Custodian {
        id: id.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        signing_key: token.public_key(Slot::Signature).unwrap(),
    };
    Person { token, who }
}

fn sign(p: &mut Person, req: &Request, d: Decision) -> Vec<u8> {
    p.token.sign(&req.message(d, &p.who.id)).unwrap()
}

fn cast(
    t: &mut Tally,
    p: &mut Person,
    req: &Request,
    d: Decision,
    now: i64,
) -> Result<Status, VoteError> {
    let sig = sign(p, req, d);
    t.vote(&p.who, d, &sig, now)
}

fn policy() -> Vec<GroupRule> {
    vec![
        GroupRule {
            group: "security".into(),
            k: 2,
        },
        GroupRule {
            group: "dba".into(),
            k: 1,
        },
    ]
}

#[test]
fn quorum_is_and_across_groups() {
    let mut alice = person("alice", &["security"], 1);
    let mut bob = person("bob", &["security"], 2);
    let mut carol = person("carol", &["dba"], 3);
    let req = request("r1", "app-1");
    let mut t = Tally::new(req.clone(), policy());
    assert_eq!(
        t.status(1_500),
        Status::Pending(vec![("security".into(), 2), ("dba".into(), 1)])
    );
    let s = cast(&mut t, &mut alice, &req, Decision::Approve, 1_100).unwrap();
    assert_eq!(
        s,
        Status::Pending(vec![("security".into(), 1), ("dba".into(), 1)])
    );
    let s = cast(&mut t, &mut carol, &req, Decision::Approve, 1_200).unwrap();
    assert_eq!(s, Status::Pending(vec![("security".into(), 1)]));
    let s = cast(&mut t, &mut bob, &req, Decision::Approve, 1_300).unwrap();
    assert_eq!(s, Status::Approved);
    // Closed once approved.
    assert_eq!(
        cast(&mut t, &mut bob, &req, Decision::Approve, 1_300).err(),
        Some(VoteError::Closed("approved"))
    );
}

/// The abuse of issue 11: two people, each in both groups, used to meet
/// `security:2 AND dba:1`. One person counts toward one rule only.
#[test]
fn a_member_of_two_groups_counts_once_across_all_groups() {
    let mut dave = person("dave", &["security", "dba"], 4);
    let mut erin = person("erin", &["security", "dba"], 5);
    let mut fay = person("fay", &["security"], 6);
    let req = request("r2", "app-1");
    let mut t = Tally::new(req.clone(), policy());
    let s = cast(&mut t, &mut dave, &req, Decision::Approve, 1_100).unwrap();
    assert_eq!(
        s,
        Status::Pending(vec![("security".into(), 1), ("dba".into(), 1)])
    );
    // Two people, three places: still one approval short.
    let s = cast(&mut t, &mut erin, &req, Decision::Approve, 1_100).unwrap();
    assert_eq!(s, Status::Pending(vec![("dba".into(), 1)]));
    // A third person in security: dave or erin moves to dba.
    let s = cast(&mut t, &mut fay, &req, Decision::Approve, 1_100).unwrap();
    assert_eq!(s, Status::Approved);
}

/// Counting each approver for the first rule that still needs someone
/// would fail here: gus (security and dba) is counted for security, then
/// hal (security only) finds security full. Moving gus to dba meets both.
#[test]
fn the_tally_finds_an_assignment_greedy_would_miss() {
    let policy = vec![
        GroupRule {
            group: "security".into(),
            k: 1,
        },
        GroupRule {
            group: "dba".into(),
            k: 1,
        },
    ];
    let mut gus = person("gus", &["security", "dba"], 7);
    let mut hal = person("hal", &["security"], 8);
    let req = request("r4", "app-1");
    let mut t = Tally::new(req.clone(), policy.clone());
    let s = cast(&mut t, &mut gus, &req, Decision::Approve, 1_100).unwrap();
    assert_eq!(s, Status::Pending(vec![("dba".into(), 1)]));
    let s = cast(&mut t, &mut hal, &req, Decision::Approve, 1_100).unwrap();
    assert_eq!(s, Status::Approved);
    // The same votes restored in another order (as from the database).
    let mut t = Tally::new(req.clone(), policy);
    t.restore(&hal.who, Decision::Approve);
    t.restore(&gus.who, Decision::Approve);
    assert_eq!(t.status(1_100), Status::Approved);
}

#[test]
fn abuse_is_refused() {
    let mut alice = person("alice", &["security"], 1);
    let mut pam = person("pam01", &["security"], 9); // the requester is also a custodian
    let mut zed = person("zed", &["finance"], 8);
    let req = request("r3", "app-1");
    let mut t = Tally::new(req.clone(), policy());
    // Self-approval.
    assert_eq!(
        cast(&mut t, &mut pam, &req, Decision::Approve, 1_100).err(),
        Some(VoteError::SelfApproval)
    );
    // Not in any policy group.
    assert_eq!(
        cast(&mut t, &mut zed, &req, Decision::Approve, 1_100).err(),
        Some(VoteError::NotInPolicy)
    );
    // Replayed from another request, another appliance; flipped decision; another's signature.
    let other_req = request("r-other", "app-1");
    let other_app = request("r3", "app-2");
    for (sig, what) in [
        (
            sign(&mut alice, &other_req, Decision::Approve),
            "another request",
        ),
        (
            sign(&mut alice, &other_app, Decision::Approve),
            "another appliance",
        ),
        (
            sign(&mut alice, &req, Decision::Deny),
            "the opposite decision",
        ),
        (
            sign(&mut zed, &req, Decision::Approve),
            "another custodian's key",
        ),
        (
            vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
            "a forged signature",
        ),
        (
            // A P-384-sized signature (48-byte r and s) is not a P-256 signature.
            [
                vec![0x30, 0x64, 0x02, 0x30],
                vec![0x11; 48],
                vec![0x02, 0x30],
                vec![0x22; 48],
            ]
            .concat(),
            "a wrong-curve signature",
        ),
    ] {
        assert_eq!(
            t.vote(&alice.who, Decision::Approve, &sig, 1_100).err(),
            Some(VoteError::BadSignature),
            "{what}"
        );
    }
    // A good vote, then a duplicate.
    cast(&mut t, &mut alice, &req, Decision::Approve, 1_100).unwrap();
    assert_eq!(
        cast(&mut t, &mut alice, &req, Decision::Approve, 1_100).err(),
        Some(VoteError::Duplicate)
    );
    // Expiry.
    let mut bob = person("bob", &["security"], 2);
    assert_eq!(
        cast(&mut t, &mut bob, &req, Decision::Approve, 2_000).err(),
        Some(VoteError::Expired)
    );
    assert_eq!(t.status(2_000), Status::Expired);
}

#[test]
fn one_denial_vetoes() {
    let mut alice = person("alice", &["security"], 1);
    let mut bob = person("bob", &["security"], 2);
    let req = request("r4", "app-1");
    let mut t = Tally::new(req.clone(), policy());
    cast(&mut t, &mut alice, &req, Decision::Approve, 1_100).unwrap();
    let s = cast(&mut t, &mut bob, &req, Decision::Deny, 1_100).unwrap();
    assert_eq!(s, Status::Denied { by: "bob".into() });
}

#[test]
fn tokens_need_the_pin_and_count_tries() {
    let mut t = SoftToken::new(1, "123456");
    assert_eq!(t.sign(b"x").err(), Some(TokenError::PinRequired));
    assert_eq!(
        t.verify_pin(&Pin::new("000000".into())).err(),
        Some(TokenError::WrongPin { tries: 2 })
    );
    assert_eq!(
        t.verify_pin(&Pin::new("000000".into())).err(),
        Some(TokenError::WrongPin { tries: 1 })
    );
    t.verify_pin(&Pin::new("123456".into())).unwrap();
    assert!(t.sign(b"x").is_ok());
    assert!(t.attest(Slot::Signature).is_err());
}

/// AAD binding a share to its secret, version and custodian.
fn share_aad(path: &str, version: u64, custodian: &str) -> Vec<u8> {
    format!("vaultd share v1\n{path}\n{version}\n{custodian}").into_bytes()
}

#[test]
fn break_glass_round_trip_needs_k_custodians() {
    let people: Vec<Person> = ["alice", "bob", "carol"]
        .iter()
        .enumerate()
        .map(|(i, n)| person(n, &["security"], i as u32 + 1))
        .collect();
    let mut people = people;
    // Writing: the value under a fresh data key, the data key split 2-of-3,
    // each share sealed to a custodian's 9d key. Nothing here is under the
    // appliance's root key.
    let dek = Key32::generate();
    let value_aad = b"vaultd/value/v1 cloud/root 3 sealed";
    let ciphertext = barrier::encrypt(&dek, value_aad, b"root-password-123");
    let shares = split(dek.expose_secret(), 2, 3, &mut rand::rngs::OsRng).unwrap();
    let envelopes: Vec<Vec<u8>> = shares
        .iter()
        .zip(&people)
        .map(|(s, p)| {
            let pk = p.token.public_key(Slot::KeyManagement).unwrap();
            seal_to(
                &pk,
                &share_aad("cloud/root", 3, &p.who.id),
                &s.to_bytes(),
                &mut rand::rngs::OsRng,
            )
        })
        .collect();
    drop(dek);

    // Retrieval: the requester's one-time key; two custodians re-encrypt
    // their share to it.
    let one_time = SecretKey::random(&mut rand::rngs::OsRng);
    let one_time_pub = one_time.public_key();
    let mut forwarded = Vec::new();
    for i in [0usize, 2] {
        let p = &mut people[i];
        let pk = p.token.public_key(Slot::KeyManagement).unwrap();
        let mut ecdh = |e: &PublicKey| p.token.ecdh(e).map_err(|x| x.to_string());
        let share = open_with(
            &envelopes[i],
            &pk,
            &share_aad("cloud/root", 3, &p.who.id),
            &mut ecdh,
        )
        .unwrap();
        forwarded.push(seal_to(
            &one_time_pub,
            format!("r9|{}", p.who.id).as_bytes(),
            &share,
            &mut rand::rngs::OsRng,
        ));
        // A share opened under another custodian's context fails.
        let mut ecdh = |e: &PublicKey| p.token.ecdh(e).map_err(|x| x.to_string());
        assert!(open_with(
            &envelopes[i],
            &pk,
            &share_aad("cloud/root", 3, "mallory"),
            &mut ecdh
        )
        .is_err());
    }
    // The requester opens and combines locally.
    let mut mine = |e: &PublicKey| Ok(soft_ecdh(&one_time, e));
    let got: Vec<Share> = forwarded
        .iter()
        .zip(["alice", "carol"])
        .map(|(f, who)| {
            Share::from_bytes(
                &open_with(f, &one_time_pub, format!("r9|{who}").as_bytes(), &mut mine).unwrap(),
            )
            .unwrap()
        })
        .collect();
    let dek = combine(&got, 2).unwrap();
    let dek = Key32::from_slice(&dek).unwrap();
    assert_eq!(
        barrier::decrypt(&dek, value_aad, &ciphertext)
            .unwrap()
            .expose_secret(),
        b"root-password-123"
    );
    // One share alone does not give the key (the AEAD says so).
    let one = combine(&got[..1], 1).unwrap();
    let wrong = Key32::from_slice(&one).unwrap();
    assert!(barrier::decrypt(&wrong, value_aad, &ciphertext).is_err());
}

#[test]
fn root_key_recovery_needs_k_custodians_and_checks_the_result() {
    use vault_core::custodian::recovery::{open_share, recover, split as split_rk, RecoveryError};
    let mut people: Vec<Person> = ["alice", "bob", "carol"]
        .iter()
        .enumerate()
        .map(|(i, n)| person(n, &["security"], i as u32 + 1))
        .collect();
    let rk = vault_core::keys::RootKey::generate();
    let custodians: Vec<(String, PublicKey)> = people
        .iter()
        .map(|p| {
            (
                p.who.id.clone(),
                p.token.public_key(Slot::KeyManagement).unwrap(),
            )
        })
        .collect();
    let bundle = split_rk(&rk, "app-1", &custodians, 2, &mut rand::rngs::OsRng).unwrap();
    let open = |p: &mut Person, b: &vault_core::custodian::recovery::Bundle| {
        let pk = p.token.public_key(Slot::KeyManagement).unwrap();
        let id = p.who.id.clone();
        let mut ecdh = |e: &PublicKey| p.token.ecdh(e).map_err(|x| x.to_string());
        open_share(b, &id, &pk, &mut ecdh)
    };
    let a = open(&mut people[0], &bundle).unwrap();
    let c = open(&mut people[2], &bundle).unwrap();
    assert!(recover(&bundle, &[a, c]).unwrap().ct_eq(&rk));
    // One share is not enough; shares from another bundle fail the check.
    let a = open(&mut people[0], &bundle).unwrap();
    assert!(matches!(
        recover(&bundle, &[a]),
        Err(RecoveryError::Shamir(_))
    ));
    let other = split_rk(
        &vault_core::keys::RootKey::generate(),
        "app-1",
        &custodians,
        2,
        &mut rand::rngs::OsRng,
    )
    .unwrap();
    let a = open(&mut people[0], &bundle).unwrap();
    let b2 = open(&mut people[1], &other).unwrap();
    assert_eq!(
        recover(&bundle, &[a, b2]).err(),
        Some(RecoveryError::CheckFailed)
    );
    // A share moved to another appliance's bundle does not open.
    let mut moved = bundle.clone();
    moved.appliance_id = "app-2".into();
    assert!(matches!(
        open(&mut people[0], &moved),
        Err(RecoveryError::Envelope(..))
    ));
    // Someone not in the bundle.
    let mut zed = person("zed", &["security"], 9);
    assert!(matches!(
        open(&mut zed, &bundle),
        Err(RecoveryError::UnknownCustodian(_))
    ));
}

#[test]
fn the_recovery_request_file_round_trips_and_binds_one_appliance() {
    use p256::pkcs8::DecodePrivateKey as _;
    use vault_core::custodian::ecies::{key_fingerprint, one_time_key};
    use vault_core::custodian::recovery::{
        parse_request_file, request_file, split as split_rk, RecoveryError, RecoveryRequest,
    };
    let custodians: Vec<(String, PublicKey)> = ["alice", "bob"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = person(n, &["security"], i as u32 + 1);
            (
                n.to_string(),
                p.token.public_key(Slot::KeyManagement).unwrap(),
            )
        })
        .collect();
    let bundle = split_rk(
        &vault_core::keys::RootKey::generate(),
        "app-1",
        &custodians,
        2,
        &mut rand::rngs::OsRng,
    )
    .unwrap();
    let (pem, public) = one_time_key(&mut rand::rngs::OsRng).unwrap();
    // The PEM is the private key of the public point.
    let sk = SecretKey::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(
        sk.public_key(),
        PublicKey::from_sec1_bytes(&public).unwrap()
    );
    let fp = key_fingerprint(&public);
    assert_eq!(fp.len(), 64);
    assert!(fp
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_ne!(
        fp,
        key_fingerprint(&one_time_key(&mut rand::rngs::OsRng).unwrap().1)
    );
    let req = RecoveryRequest {
        appliance_id: "app-1".into(),
        nonce: [7; 32],
        reason: "drill".into(),
        created_at: 1,
        expires_at: 2,
        recipient_key: public,
    };
    let file = request_file(&req, &bundle.to_json());
    let (r2, b2) = parse_request_file(&file).unwrap();
    assert_eq!((r2.id(), &b2), (req.id(), &bundle));
    // A request for another appliance than its bundle, or a broken file.
    let mut other = file.clone();
    other["request"]["appliance_id"] = "app-2".into();
    assert_eq!(
        parse_request_file(&other).err(),
        Some(RecoveryError::WrongAppliance)
    );
    let mut broken = file;
    broken["bundle"] = serde_json::json!("nope");
    assert!(matches!(
        parse_request_file(&broken),
        Err(RecoveryError::Malformed(_))
    ));
}

/// A governance vote signs the change text: a signature over one change
/// does not verify for another, nor as a plain approval of the same
/// request.
#[test]
fn a_governance_vote_binds_the_change() {
    let mut alice = person("alice", &["security"], 11);
    let mut req = request("g1", "app-1");
    req.change = Some(r#"{"change":"recovery","group":"security","k":2,"recipients":[]}"#.into());
    let sig = sign(&mut alice, &req, Decision::Approve);
    let mut other = req.clone();
    other.change = Some(r#"{"change":"recovery","group":"security","k":3,"recipients":[]}"#.into());
    let mut plain = req.clone();
    plain.change = None;
    for (r, ok) in [(&req, true), (&other, false), (&plain, false)] {
        let mut t = Tally::new(r.clone(), policy());
        assert_eq!(
            t.vote(&alice.who, Decision::Approve, &sig, 1_100).is_ok(),
            ok,
            "{:?}",
            r.change
        );
    }
}

/// Genesis: every named custodian must approve; others may not vote.
#[test]
fn a_genesis_tally_needs_everyone() {
    let mut alice = person("alice", &["security"], 21);
    let mut bob = person("bob", &["dba"], 22);
    let mut mallory = person("mallory", &["security"], 23);
    let req = request("g2", "app-1");
    let mut t = Tally::with_everyone(req.clone(), vec!["alice".into(), "bob".into()]);
    assert_eq!(
        cast(&mut t, &mut mallory, &req, Decision::Approve, 1_100).err(),
        Some(VoteError::NotInPolicy)
    );
    let s = cast(&mut t, &mut alice, &req, Decision::Approve, 1_100).unwrap();
    assert_eq!(s, Status::Pending(vec![("all-custodians".into(), 1)]));
    let s = cast(&mut t, &mut bob, &req, Decision::Approve, 1_200).unwrap();
    assert_eq!(s, Status::Approved);
    // Nobody to sign is never approved.
    let empty = Tally::with_everyone(req.clone(), vec![]);
    assert!(matches!(empty.status(1_100), Status::Pending(_)));
}
