//! Custodians against the real vaultd: attested enrolment, signed k-of-n
//! approvals for a gated checkout, and the sealed (break-glass) tier whose
//! value the appliance cannot open. Custodian tokens are software tokens
//! whose keys are attested by a throw-away test attestation root that the
//! daemon is configured to trust (the YubiKey token itself is tested in
//! vaultd/piv against a virtual PIV card).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hyper::Method;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::{PublicKey, SecretKey};
use serde_json::{json, Value};
use vault_client::Client;
use vault_core::custodian::approval::Decision;
use vault_core::custodian::token::{CustodianToken, Slot, SoftToken};
use vault_core::custodian::{recovery, sealed};
use vault_core::secret::Pin;
use vault_e2e::piv::{enroll_body, genesis, propose, shown, vote, TestRoot};
use vault_e2e::{json_of, put, req, Appliance};

fn code(r: &vault_client::Response) -> String {
    r.error_code().unwrap_or_default()
}

#[test]
fn attested_enrolment_signed_quorum_and_break_glass() {
    let root = TestRoot::new("Test PIV Root");
    let a = Appliance::start(root.options());
    let admin = a.admin();
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "pam01");
    let auditor = a.issue("auditor", "aud1");
    let c_alice = a.issue("custodian", "alice");
    let c_bob = a.issue("custodian", "bob");
    let c_carol = a.issue("custodian", "carol");
    let c_mallory = a.issue("custodian", "mallory");
    let mut alice = root.token(1001);
    let mut bob = root.token(1002);
    let mut carol = root.token(1003);

    // ---- enrolment
    for (n, g, t) in [
        ("alice", vec!["security"], &mut alice),
        ("bob", vec!["security"], &mut bob),
        ("carol", vec!["security", "dba"], &mut carol),
    ] {
        let r = req(
            &admin,
            Method::POST,
            "/v1/custodians",
            Some(enroll_body(n, &g, t)),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = json_of(&r);
        assert_eq!(v["pin_policy"], "once");
        assert_eq!(v["touch_policy"], "always");
        assert_eq!(v["firmware"], "5.4.3");
    }
    let r = req(
        &admin,
        Method::POST,
        "/v1/custodians",
        Some(enroll_body("alice", &["x"], &mut alice)),
    );
    assert_eq!((r.status, code(&r).as_str()), (409, "already_enrolled"));
    let r = req(
        &admin,
        Method::POST,
        "/v1/custodians",
        Some(enroll_body("dave", &["x"], &mut alice)),
    );
    assert_eq!((r.status, code(&r).as_str()), (409, "key_already_enrolled"));
    // A key attested by a root the appliance does not trust.
    let mut rogue = TestRoot::new("Rogue Root").token(666);
    let r = req(
        &admin,
        Method::POST,
        "/v1/custodians",
        Some(enroll_body("eve", &["security"], &mut rogue)),
    );
    assert_eq!(
        (r.status, code(&r).as_str()),
        (400, "unknown_attestation_root")
    );
    // No attestation chain at all.
    let mut body = enroll_body("eve", &["security"], &mut rogue);
    body["intermediates"] = json!([]);
    let r = req(&admin, Method::POST, "/v1/custodians", Some(body));
    assert_eq!(r.status, 400);
    // 9c and 9d from different devices.
    let mut body = enroll_body("eve", &["security"], &mut root.token(2001));
    body["key_management_attestation"] =
        json!(B64.encode(root.token(2002).attest(Slot::KeyManagement).unwrap()));
    let r = req(&admin, Method::POST, "/v1/custodians", Some(body));
    assert_eq!((r.status, code(&r).as_str()), (400, "attestation_mismatch"));
    // Only admins enrol.
    let r = req(
        &c_alice,
        Method::POST,
        "/v1/custodians",
        Some(enroll_body("zed", &["x"], &mut root.token(3001))),
    );
    assert_eq!(r.status, 403);
    let list = json_of(&req(&auditor, Method::GET, "/v1/custodians", None));
    assert_eq!(list["custodians"].as_array().unwrap().len(), 3);

    // ---- the root key split 2-of-3 among security (recovery bundle), a
    // governance change: refused before genesis.
    let r = req(
        &admin,
        Method::POST,
        "/v1/sys/recovery",
        Some(json!({"group": "security", "k": 1})),
    );
    assert_eq!(r.status, 400);
    let r = req(
        &c_alice,
        Method::POST,
        "/v1/sys/recovery",
        Some(json!({"group": "security", "k": 2})),
    );
    assert_eq!(r.status, 403);
    let r = req(
        &admin,
        Method::POST,
        "/v1/sys/recovery",
        Some(json!({"group": "security", "k": 2})),
    );
    assert_eq!((r.status, code(&r).as_str()), (409, "governance_required"));
    genesis(
        &a,
        json!([{"group": "security", "k": 2}]),
        &mut [
            ("alice", &mut alice),
            ("bob", &mut bob),
            ("carol", &mut carol),
        ],
    );
    let id = propose(
        &a,
        Method::POST,
        "/v1/sys/recovery",
        json!({"group": "security", "k": 2, "reason": "first bundle"}),
    );
    let r =
        vault_e2e::piv::approve_and_apply(&a, &id, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_of(&req(&c_bob, Method::GET, "/v1/sys/recovery", None));
    let bundle = recovery::Bundle::from_json(&v).unwrap();
    assert_eq!(bundle.shares.len(), 3);
    let mut opened = Vec::new();
    for (who, t) in [("alice", &mut alice), ("carol", &mut carol)] {
        let kex = t.public_key(Slot::KeyManagement).unwrap();
        let mut ecdh = |e: &PublicKey| t.ecdh(e).map_err(|x| x.to_string());
        opened.push(recovery::open_share(&bundle, who, &kex, &mut ecdh).unwrap());
    }
    // The check value is an HMAC under the real root key: two custodians'
    // shares rebuild it, one does not.
    assert!(recovery::recover(&bundle, &opened[..1]).is_err());
    assert!(recovery::recover(&bundle, &opened).is_ok());

    // ---- a checkout that needs 2 of security
    assert_eq!(
        put(&writer, "prod/db/root", "db-root-pw", false).status,
        200
    );
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/prod/db/root",
        Some(json!({"approvals": [{"group": "security", "k": 4}]})),
    );
    assert_eq!((r.status, code(&r).as_str()), (409, "quorum_unreachable"));
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/prod/db/root",
        Some(json!({"approvals": [{"group": "security", "k": 2}]})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = req(
        &writer,
        Method::PUT,
        "/v1/policies/prod/db/root",
        Some(json!({"approvals": []})),
    );
    assert_eq!(r.status, 403);

    let r = vault_e2e::checkout(&pam, "prod/db/root");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert!(!String::from_utf8_lossy(&r.body).contains("db-root-pw"));
    let v = json_of(&r);
    assert_eq!(v["status"], "pending_approval");
    let id = v["request_id"].as_str().unwrap().to_owned();
    let collect = |c: &Client| req(c, Method::POST, &format!("/v1/requests/{id}/collect"), None);
    let r = collect(&pam);
    assert_eq!((r.status, code(&r).as_str()), (409, "pending_approval"));

    let r = vote(&c_alice, &mut alice, "alice", &id, Decision::Approve, None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["status"], "pending_approval");
    // Counted once.
    let r = vote(&c_alice, &mut alice, "alice", &id, Decision::Approve, None);
    assert_eq!((r.status, code(&r).as_str()), (409, "duplicate_vote"));
    // A signature made by another custodian's key, or for another decision.
    let v = json_of(&req(
        &c_bob,
        Method::GET,
        &format!("/v1/requests/{id}"),
        None,
    ));
    let wrong = alice
        .sign(&shown(&v).message(Decision::Approve, "bob"))
        .unwrap();
    let r = req(
        &c_bob,
        Method::POST,
        &format!("/v1/requests/{id}/vote"),
        Some(json!({"decision": "approve", "signature": B64.encode(&wrong)})),
    );
    assert_eq!((r.status, code(&r).as_str()), (400, "bad_signature"));
    let deny_sig = bob.sign(&shown(&v).message(Decision::Deny, "bob")).unwrap();
    let r = req(
        &c_bob,
        Method::POST,
        &format!("/v1/requests/{id}/vote"),
        Some(json!({"decision": "approve", "signature": B64.encode(&deny_sig)})),
    );
    assert_eq!((r.status, code(&r).as_str()), (400, "bad_signature"));
    // A custodian certificate without an enrolled key.
    let mut m = SoftToken::new(9, "123456");
    m.verify_pin(&Pin::new("123456".into())).unwrap();
    let r = vote(&c_mallory, &mut m, "mallory", &id, Decision::Approve, None);
    assert_eq!((r.status, code(&r).as_str()), (403, "not_a_custodian"));
    // Pam cannot vote; custodians cannot collect.
    let r = vote(&pam, &mut alice, "alice", &id, Decision::Approve, None);
    assert_eq!(r.status, 403);

    let r = vote(&c_bob, &mut bob, "bob", &id, Decision::Approve, None);
    assert_eq!(r.status, 200);
    assert_eq!(json_of(&r)["status"], "approved");
    let r = vote(&c_carol, &mut carol, "carol", &id, Decision::Approve, None);
    assert_eq!((r.status, code(&r).as_str()), (409, "request_closed"));
    assert_eq!(collect(&c_alice).status, 403);
    let r = collect(&pam);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["value"], "db-root-pw");
    let r = collect(&pam);
    assert_eq!((r.status, code(&r).as_str()), (409, "already_collected"));

    // A denial vetoes.
    let id2 = json_of(&vault_e2e::checkout(&pam, "prod/db/root"))["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = vote(&c_carol, &mut carol, "carol", &id2, Decision::Deny, None);
    assert_eq!(json_of(&r)["status"], "denied");
    let r = req(
        &pam,
        Method::POST,
        &format!("/v1/requests/{id2}/collect"),
        None,
    );
    assert_eq!((r.status, code(&r).as_str()), (409, "request_denied"));

    // ---- the sealed tier
    let r = req(
        &writer,
        Method::PUT,
        "/v1/secrets/breakglass/cloud-root",
        Some(
            json!({"value": "cloud-root-Pa55", "tier": "sealed", "custody": {"group": "security", "k": 2}}),
        ),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = req(
        &writer,
        Method::PUT,
        "/v1/secrets/breakglass/cloud-root",
        Some(json!({"value": "downgrade"})),
    );
    assert_eq!((r.status, code(&r).as_str()), (409, "tier_mismatch"));
    let r = vault_e2e::checkout(&pam, "breakglass/cloud-root");
    assert_eq!((r.status, code(&r).as_str()), (409, "sealed_tier"));

    // What the appliance holds: ciphertext and shares sealed to the
    // custodians' 9d keys, no wrapped data key, the value nowhere on disk.
    {
        let db = rusqlite::Connection::open_with_flags(
            a.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let (kv, wrapped): (i64, Vec<u8>) = db
            .query_row(
                "SELECT key_version, wrapped_dek FROM secret_versions WHERE path = 'breakglass/cloud-root'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((kv, wrapped.len()), (0, 0));
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM sealed_shares WHERE path = 'breakglass/cloud-root'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 3);
    }
    for f in std::fs::read_dir(a.db_path().parent().unwrap()).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap_or_default();
        assert!(
            !bytes.windows(15).any(|w| w == b"cloud-root-Pa55"),
            "the sealed value is on disk in clear"
        );
    }

    let one_time = SecretKey::random(&mut rand::rngs::OsRng);
    let one_pub = one_time
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let r = req(
        &pam,
        Method::POST,
        "/v1/secrets/breakglass/cloud-root/breakglass",
        Some(
            json!({"reason": "INC-7 cloud account locked", "recipient_key": B64.encode(&one_pub)}),
        ),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let bg = json_of(&r)["request_id"].as_str().unwrap().to_owned();

    let forward = |c: &Client, t: &mut SoftToken, who: &str| -> Vec<u8> {
        let v = json_of(&req(c, Method::GET, &format!("/v1/requests/{bg}"), None));
        let env = B64.decode(v["your_share"].as_str().unwrap()).unwrap();
        let rk =
            PublicKey::from_sec1_bytes(&B64.decode(v["recipient_key"].as_str().unwrap()).unwrap())
                .unwrap();
        let kex = t.public_key(Slot::KeyManagement).unwrap();
        let mut ecdh = |e: &PublicKey| t.ecdh(e).map_err(|x| x.to_string());
        sealed::forward_share(
            &env,
            &kex,
            &mut ecdh,
            &bg,
            v["path"].as_str().unwrap(),
            v["version"].as_u64().unwrap(),
            who,
            &rk,
            &mut rand::rngs::OsRng,
        )
        .unwrap()
    };
    // An approval must carry the share; and a signature over another
    // recipient key (an appliance swapping in its own key) does not verify.
    let r = vote(&c_alice, &mut alice, "alice", &bg, Decision::Approve, None);
    assert_eq!((r.status, code(&r).as_str()), (400, "share_required"));
    let share_a = forward(&c_alice, &mut alice, "alice");
    let v = json_of(&req(
        &c_alice,
        Method::GET,
        &format!("/v1/requests/{bg}"),
        None,
    ));
    let mut swapped = shown(&v);
    swapped.recipient_key = Some(
        SecretKey::random(&mut rand::rngs::OsRng)
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
    );
    let sig = alice
        .sign(&swapped.message(Decision::Approve, "alice"))
        .unwrap();
    let r = req(
        &c_alice,
        Method::POST,
        &format!("/v1/requests/{bg}/vote"),
        Some(
            json!({"decision": "approve", "signature": B64.encode(sig), "share": B64.encode(&share_a)}),
        ),
    );
    assert_eq!((r.status, code(&r).as_str()), (400, "bad_signature"));

    let r = vote(
        &c_alice,
        &mut alice,
        "alice",
        &bg,
        Decision::Approve,
        Some(share_a),
    );
    assert_eq!(json_of(&r)["status"], "pending_approval");
    let share_c = forward(&c_carol, &mut carol, "carol");
    let r = vote(
        &c_carol,
        &mut carol,
        "carol",
        &bg,
        Decision::Approve,
        Some(share_c),
    );
    assert_eq!(
        json_of(&r)["status"],
        "approved",
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    let r = req(
        &pam,
        Method::POST,
        &format!("/v1/requests/{bg}/collect"),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(!String::from_utf8_lossy(&r.body).contains("cloud-root-Pa55"));
    let v = json_of(&r);
    let shares: Vec<(String, Vec<u8>)> = v["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["custodian"].as_str().unwrap().to_owned(),
                B64.decode(s["envelope"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    let ct = B64.decode(v["ciphertext"].as_str().unwrap()).unwrap();
    let k = v["k"].as_u64().unwrap() as usize;
    assert_eq!(k, 2);
    let value = sealed::open(&one_time, &bg, "breakglass/cloud-root", 1, k, &shares, &ct).unwrap();
    assert_eq!(value.expose_secret(), b"cloud-root-Pa55");
    // One custodian's share is not enough.
    assert!(sealed::open(
        &one_time,
        &bg,
        "breakglass/cloud-root",
        1,
        k,
        &shares[..1],
        &ct
    )
    .is_err());
    let r = req(
        &pam,
        Method::POST,
        &format!("/v1/requests/{bg}/collect"),
        None,
    );
    assert_eq!((r.status, code(&r).as_str()), (409, "already_collected"));

    // ---- every step is in the audit log, and no value is.
    let cp = json_of(&req(
        &auditor,
        Method::GET,
        "/v1/audit/entries?start=0&end=1000",
        None,
    ));
    let mut actions = Vec::new();
    for e in cp["entries"].as_array().unwrap() {
        let raw = B64.decode(e["entry"].as_str().unwrap()).unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert!(!text.contains("cloud-root-Pa55") && !text.contains("db-root-pw"));
        let d: Value = serde_json::from_str(&text).unwrap();
        // A sealed-tier write carries no value HMAC (it is keyed from the root key).
        if d["action"] == "secret.write" && d["details"]["tier"] == "sealed" {
            assert_eq!(d["hmac"], json!({}), "{text}");
        }
        actions.push((
            d["action"].as_str().unwrap().to_owned(),
            d["outcome"].as_str().unwrap_or("").to_owned(),
            d["error"].as_str().unwrap_or("").to_owned(),
        ));
    }
    for (act, err) in [
        ("custodian.enroll", ""),
        ("custodian.enroll", "already_enrolled"),
        ("custodian.enroll", "unknown_attestation_root"),
        ("policy.set", ""),
        ("approval.request", ""),
        ("approval.vote", ""),
        ("approval.vote", "duplicate_vote"),
        ("approval.vote", "bad_signature"),
        ("request.collect", ""),
        ("request.collect", "already_collected"),
        ("breakglass.request", ""),
        ("breakglass.collect", ""),
        ("recovery.configure", "governance_required"),
        ("governance.propose", ""),
        ("governance.apply", ""),
        ("secret.checkout", "sealed_tier"),
    ] {
        assert!(
            actions.iter().any(|(a, _, e)| a == act && e == err),
            "no audit entry {act} {err:?} in {actions:?}"
        );
    }
}

/// The custodian's genuine 9c key as an rcgen signer: what a custodian
/// holding one real YubiKey can do with it (sign anything, with the PIN).
struct SlotKeySigner {
    token: std::cell::RefCell<SoftToken>,
    point: Vec<u8>,
}

impl rcgen::PublicKeyData for SlotKeySigner {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for SlotKeySigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.token
            .borrow_mut()
            .sign(msg)
            .map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// Issue 11's "software keys pass as YubiKeys": a custodian with one
/// genuine (attested) key signs, with its 9c key, "attestations" for two
/// software keys claiming touch and PIN always and another serial, and
/// offers its own 9c attestation as their issuer. Refused with
/// `attestation_issuer_not_ca`. Also: the default device policy (touch and
/// PIN always) refuses keys attested otherwise and accepts keys that meet
/// it.
#[test]
fn forged_attestations_and_the_default_device_policy_are_refused() {
    let root = TestRoot::new("Test PIV Root");
    let a = Appliance::start(root.default_options());
    let admin = a.admin();
    let enroll = |body: Value| req(&admin, Method::POST, "/v1/custodians", Some(body));

    let mut mallory = root.token_with(4001, [3, 2]);
    let genuine_9c = mallory.attest(Slot::Signature).unwrap();
    let f9 = mallory.attestation_intermediate().unwrap();
    let point = mallory
        .public_key(Slot::Signature)
        .unwrap()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let signer = SlotKeySigner {
        token: std::cell::RefCell::new(mallory),
        point,
    };
    // The forged leaves name the 9c attestation as issuer, as they must to
    // chain.
    let issuer = rcgen::Issuer::from_ca_cert_der(&genuine_9c.clone().into(), &signer).unwrap();
    let fake = SoftToken::new(9999, "123456");
    let forge = |slot: Slot, name: &str| {
        root.attest_by(&fake.public_key(slot).unwrap(), name, 9999, [3, 2], &issuer)
    };
    let body = json!({
        "name": "sock-puppet",
        "groups": ["security"],
        "signature_attestation": B64.encode(forge(Slot::Signature, "9c")),
        "key_management_attestation": B64.encode(forge(Slot::KeyManagement, "9d")),
        "intermediates": [B64.encode(&genuine_9c), B64.encode(&f9)],
    });
    let r = enroll(body);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (400, "attestation_issuer_not_ca"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    // PIN once (what TestRoot::token attests), touch never: refused by the
    // defaults.
    for (serial, policy) in [(4002, [2, 2]), (4003, [3, 1])] {
        let r = enroll(enroll_body(
            &format!("lax{serial}"),
            &["security"],
            &mut root.token_with(serial, policy),
        ));
        assert_eq!((r.status, code(&r).as_str()), (400, "device_policy"));
    }
    // The genuine key that meets the policy enrols; so does cached touch.
    let mut mallory = signer.token.into_inner();
    let r = enroll(enroll_body("mallory", &["security"], &mut mallory));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = enroll(enroll_body(
        "cached",
        &["security"],
        &mut root.token_with(4004, [3, 3]),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let auditor = a.issue("auditor", "aud1");
    let list = json_of(&req(&auditor, Method::GET, "/v1/custodians", None));
    let mut names: Vec<&str> = list["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cached", "mallory"]);
}

/// An expired request takes no vote and gives no value; a signature of the
/// wrong curve is refused; both refusals are audited.
#[test]
fn expired_requests_and_wrong_curve_signatures_are_refused() {
    let root = TestRoot::new("Test PIV Root");
    let a = Appliance::start(vault_e2e::Options {
        extra_config: format!(
            "[custodians]\nattestation_roots = [\"{}\"]\nrequest_ttl_secs = 1\n\
             # software tokens verify the PIN once per session\n\
             require_pin_always = false\n",
            root.root_path().display()
        ),
        ..vault_e2e::Options::default()
    });
    let admin = a.admin();
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "pam01");
    let auditor = a.issue("auditor", "aud1");
    let c_alice = a.issue("custodian", "alice");
    let mut alice = root.token(7001);
    let r = req(
        &admin,
        Method::POST,
        "/v1/custodians",
        Some(enroll_body("alice", &["security"], &mut alice)),
    );
    assert_eq!(r.status, 200);
    assert_eq!(put(&writer, "p/x", "v", false).status, 200);
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/p/x",
        Some(json!({"approvals": [{"group": "security", "k": 1}]})),
    );
    assert_eq!(r.status, 200);

    // A P-384-sized signature (48-byte r and s) is not a P-256 signature.
    let id = json_of(&vault_e2e::checkout(&pam, "p/x"))["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut der = vec![0x30, 0x64, 0x02, 0x30];
    der.extend([0x11; 48]);
    der.extend([0x02, 0x30]);
    der.extend([0x22; 48]);
    let r = req(
        &c_alice,
        Method::POST,
        &format!("/v1/requests/{id}/vote"),
        Some(json!({"decision": "approve", "signature": B64.encode(&der)})),
    );
    assert_eq!((r.status, code(&r).as_str()), (400, "bad_signature"));

    // Expiry: the request lives one second.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = vote(&c_alice, &mut alice, "alice", &id, Decision::Approve, None);
    assert_eq!((r.status, code(&r).as_str()), (409, "request_expired"));
    let v = json_of(&req(&pam, Method::GET, &format!("/v1/requests/{id}"), None));
    assert_eq!(v["status"], "expired");
    let r = req(
        &pam,
        Method::POST,
        &format!("/v1/requests/{id}/collect"),
        None,
    );
    assert_eq!((r.status, code(&r).as_str()), (409, "request_expired"));

    let entries = json_of(&req(
        &auditor,
        Method::GET,
        "/v1/audit/entries?start=0&end=1000",
        None,
    ));
    let seen: Vec<(String, String)> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["decoded"]["action"].as_str().unwrap().to_owned(),
                e["decoded"]["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (act, err) in [
        ("approval.vote", "bad_signature"),
        ("approval.vote", "request_expired"),
        ("request.collect", "request_expired"),
    ] {
        assert!(
            seen.iter().any(|(x, e)| x == act && e == err),
            "no audit entry {act} {err}: {seen:?}"
        );
    }
}
