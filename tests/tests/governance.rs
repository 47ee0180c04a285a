//! The custodian quorum over the control plane, tried as the attacker in
//! each role (issue 11, findings 1 and 2): an admin alone cannot configure
//! the recovery bundle, enrol a custodian or change the governance rule; a
//! custodian cannot approve for another or apply; someone who edits the
//! data file cannot turn a pending or edited change into an applied one.
//! Against the real vaultd, with software tokens attested by a test root.

use hyper::Method;
use serde_json::{json, Value};
use vault_core::custodian::approval::Decision;
use vault_core::custodian::token::SoftToken;
use vault_e2e::piv::{
    approve_and_apply, enroll_body, enroll_custodians, genesis, issue_governed, propose, vote,
    TestRoot,
};
use vault_e2e::{checkout, json_of, key_and_csr, put, req, Appliance};

fn code(r: &vault_client::Response) -> (u16, String) {
    (r.status, r.error_code().unwrap_or_default())
}

fn apply(a: &Appliance, id: &str) -> vault_client::Response {
    req(
        &a.admin(),
        Method::POST,
        &format!("/v1/requests/{id}/apply"),
        None,
    )
}

fn custodian_names(a: &Appliance) -> Vec<String> {
    json_of(&req(&a.admin(), Method::GET, "/v1/custodians", None))["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn sql(a: &Appliance, statement: &str, id: &str) {
    let c = rusqlite::Connection::open(a.db_path()).unwrap();
    assert_eq!(c.execute(statement, [id]).unwrap(), 1, "{statement}");
}

#[test]
fn no_admin_alone_changes_who_holds_the_root_key_or_who_approves() {
    let root = TestRoot::new("Test PIV Root");
    let mut a = Appliance::start(root.options());
    let admin = a.admin();
    let mut alice = root.token(4001);
    let mut bob = root.token(4002);
    let mut carol = root.token(4003);
    for (n, t) in [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ] {
        let r = req(
            &admin,
            Method::POST,
            "/v1/custodians",
            Some(enroll_body(n, &["security"], t)),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        a.issue("custodian", n);
    }
    let c_alice = a.client("alice");
    // A second admin, issued before genesis (after it, an admin certificate
    // is itself a governance change).
    let other = a.issue("admin", "admin2");

    // ---- before genesis: nothing that needs the quorum goes through.
    let st = json_of(&req(&c_alice, Method::GET, "/v1/governance", None));
    assert_eq!(st["established"], false);
    assert_eq!(st["custodians"].as_array().unwrap().len(), 3);
    let r = req(
        &admin,
        Method::POST,
        "/v1/sys/recovery",
        Some(json!({"group": "security", "k": 2})),
    );
    assert_eq!(code(&r), (409, "governance_required".into()));
    let r = req(
        &admin,
        Method::PUT,
        "/v1/governance/rule",
        Some(json!({"rule": [{"group": "security", "k": 2}], "reason": "r"})),
    );
    assert_eq!(code(&r), (409, "governance_required".into()));
    // A rule one person meets, or one nobody can meet, is refused.
    for (rule, want) in [
        (json!([{"group": "security", "k": 1}]), "invalid_policy"),
        (json!([]), "invalid_policy"),
        (json!([{"group": "security", "k": 4}]), "quorum_unreachable"),
    ] {
        let r = req(
            &admin,
            Method::POST,
            "/v1/governance/genesis",
            Some(json!({"rule": rule, "reason": "ceremony"})),
        );
        assert_eq!(code(&r).1, want, "{rule}");
    }
    // Genesis needs every member: two of three is not enough.
    let g = propose(
        &a,
        Method::POST,
        "/v1/governance/genesis",
        json!({"rule": [{"group": "security", "k": 2}], "reason": "ceremony"}),
    );
    for (who, t) in [("alice", &mut alice), ("bob", &mut bob)] {
        let r = vote(&a.client(who), t, who, &g, Decision::Approve, None);
        assert_eq!(r.status, 200);
    }
    assert_eq!(code(&apply(&a, &g)), (409, "pending_approval".into()));
    // A custodian may not apply, nor collect it as a checkout.
    let r = req(
        &c_alice,
        Method::POST,
        &format!("/v1/requests/{g}/apply"),
        None,
    );
    assert_eq!(r.status, 403);
    // A status edited in the data file is not a quorum: the apply counts
    // the signed votes again.
    a.stop();
    sql(
        &a,
        "UPDATE requests SET status = 'approved' WHERE id = ?1",
        &g,
    );
    a.spawn();
    a.wait_ready();
    assert_eq!(code(&apply(&a, &g)), (409, "pending_approval".into()));
    let st = json_of(&req(&admin, Method::GET, "/v1/governance", None));
    assert_eq!(st["established"], false, "{st}");
    sql(
        &a,
        "UPDATE requests SET status = 'pending' WHERE id = ?1",
        &g,
    );
    let r = vote(
        &a.client("carol"),
        &mut carol,
        "carol",
        &g,
        Decision::Approve,
        None,
    );
    assert_eq!(r.status, 200);
    let r = apply(&a, &g);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["change"], "genesis");
    assert_eq!(code(&apply(&a, &g)), (409, "already_collected".into()));
    let st = json_of(&req(&admin, Method::GET, "/v1/governance", None));
    assert_eq!(st["established"], true);
    assert_eq!(st["rule"], json!([{"group": "security", "k": 2}]));
    let r = req(
        &admin,
        Method::POST,
        "/v1/governance/genesis",
        Some(json!({"rule": [{"group": "security", "k": 2}], "reason": "again"})),
    );
    assert_eq!(code(&r), (409, "governance_established".into()));

    // ---- an admin enrols a YubiKey it holds: only a proposal.
    let mut mallory = root.token(4666);
    let r = req(
        &admin,
        Method::POST,
        "/v1/custodians",
        Some(enroll_body("mallory", &["security"], &mut mallory)),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let enrol = json_of(&r)["request_id"].as_str().unwrap().to_owned();
    assert!(!custodian_names(&a).contains(&"mallory".to_string()));
    assert_eq!(code(&apply(&a, &enrol)), (409, "pending_approval".into()));
    // The shown change carries the keys that would be enrolled.
    let shown = json_of(&req(
        &c_alice,
        Method::GET,
        &format!("/v1/requests/{enrol}"),
        None,
    ));
    let change: Value = serde_json::from_str(shown["change"].as_str().unwrap()).unwrap();
    assert_eq!(change["change"], "enroll_custodian");
    assert_eq!(change["custodian"]["name"], "mallory");
    // One custodian denies: vetoed, whatever the others say.
    let r = vote(
        &a.client("bob"),
        &mut bob,
        "bob",
        &enrol,
        Decision::Deny,
        None,
    );
    assert_eq!(r.status, 200);
    let r = vote(
        &c_alice,
        &mut alice,
        "alice",
        &enrol,
        Decision::Approve,
        None,
    );
    assert_eq!(code(&r).1, "request_closed");
    assert_eq!(code(&apply(&a, &enrol)), (409, "request_denied".into()));
    assert!(!custodian_names(&a).contains(&"mallory".to_string()));

    // ---- the recovery bundle: proposed, approved by two, then the data
    // file is edited to send the shares elsewhere: the signatures no
    // longer cover the change, and nothing is applied.
    let rec = propose(
        &a,
        Method::POST,
        "/v1/sys/recovery",
        json!({"group": "security", "k": 2, "reason": "bundle"}),
    );
    for (who, t) in [("alice", &mut alice), ("bob", &mut bob)] {
        let r = vote(&a.client(who), t, who, &rec, Decision::Approve, None);
        assert_eq!(r.status, 200);
    }
    a.stop();
    sql(
        &a,
        "UPDATE requests SET change = replace(change, '\"k\":2', '\"k\":3') WHERE id = ?1",
        &rec,
    );
    a.spawn();
    a.wait_ready();
    assert_eq!(code(&apply(&a, &rec)), (500, "integrity".into()));
    let r = req(&admin, Method::GET, "/v1/sys/recovery", None);
    assert_eq!(r.status, 404, "no bundle was made");
    a.stop();
    sql(
        &a,
        "UPDATE requests SET change = replace(change, '\"k\":3', '\"k\":2') WHERE id = ?1",
        &rec,
    );
    a.spawn();
    a.wait_ready();
    // Another admin certificate cannot apply what the first proposed.
    let r = req(
        &other,
        Method::POST,
        &format!("/v1/requests/{rec}/apply"),
        None,
    );
    assert_eq!(r.status, 403);
    let r = apply(&a, &rec);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["result"]["k"], 2);
    assert_eq!(
        req(&admin, Method::GET, "/v1/sys/recovery", None).status,
        200
    );

    // ---- a change computed from an older custodian set is refused: a
    // recovery bundle proposed before dave joined would leave him out.
    let stale = propose(
        &a,
        Method::POST,
        "/v1/sys/recovery",
        json!({"group": "security", "k": 2, "reason": "rebuild"}),
    );
    let mut dave = root.token(4004);
    let enrol_dave = propose(
        &a,
        Method::POST,
        "/v1/custodians",
        enroll_body("dave", &["security"], &mut dave),
    );
    let r = approve_and_apply(
        &a,
        &enrol_dave,
        &mut [("alice", &mut alice), ("carol", &mut carol)],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(custodian_names(&a).contains(&"dave".to_string()));
    let r = approve_and_apply(&a, &stale, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(code(&r), (409, "custodians_changed".into()));

    // ---- the rule itself: approved under the current rule.
    let rule = propose(
        &a,
        Method::PUT,
        "/v1/governance/rule",
        json!({"rule": [{"group": "security", "k": 3}], "reason": "four of us now"}),
    );
    let r = approve_and_apply(&a, &rule, &mut [("bob", &mut bob), ("carol", &mut carol)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let st = json_of(&req(&admin, Method::GET, "/v1/governance", None));
    assert_eq!(st["rule"], json!([{"group": "security", "k": 3}]));

    // ---- every step is in the audit log.
    let entries = a.audit_entries();
    let has = |action: &str, change: &str, error: &str| {
        entries.iter().any(|e| {
            e.action == action
                && e.error == error
                && (change.is_empty()
                    || e.details.get("change").map(String::as_str) == Some(change))
        })
    };
    for (action, change, error) in [
        ("governance.propose", "genesis", ""),
        ("governance.propose", "enroll_custodian", ""),
        ("governance.propose", "recovery", ""),
        ("governance.propose", "set_rule", ""),
        ("governance.apply", "genesis", ""),
        ("governance.apply", "recovery", ""),
        ("governance.apply", "enroll_custodian", ""),
        ("governance.apply", "set_rule", ""),
        ("governance.apply", "", "pending_approval"),
        ("governance.apply", "", "request_denied"),
        ("governance.apply", "", "integrity"),
        ("governance.apply", "", "custodians_changed"),
        ("recovery.configure", "", "governance_required"),
    ] {
        assert!(
            has(action, change, error),
            "no audit entry {action} {change} {error:?}"
        );
    }
}

/// A custodian token that is not one of the custodians cannot vote on a
/// genesis; a genesis computed before another enrolment is refused.
#[test]
fn genesis_is_signed_by_exactly_the_enrolled_set() {
    let root = TestRoot::new("Test PIV Root");
    let a = Appliance::start(root.options());
    let admin = a.admin();
    let mut tokens: Vec<(&str, SoftToken)> = ["alice", "bob"]
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, root.token(5000 + i as u32)))
        .collect();
    for (n, t) in tokens.iter_mut() {
        let r = req(
            &admin,
            Method::POST,
            "/v1/custodians",
            Some(enroll_body(n, &["security"], t)),
        );
        assert_eq!(r.status, 200);
        a.issue("custodian", n);
    }
    let g = propose(
        &a,
        Method::POST,
        "/v1/governance/genesis",
        json!({"rule": [{"group": "security", "k": 2}], "reason": "ceremony"}),
    );
    // Carol is enrolled after the genesis was proposed: she is not in it,
    // may not sign it, and the genesis no longer matches the set.
    let mut carol = root.token(5009);
    let r = req(
        &admin,
        Method::POST,
        "/v1/custodians",
        Some(enroll_body("carol", &["security"], &mut carol)),
    );
    assert_eq!(r.status, 200);
    a.issue("custodian", "carol");
    let r = vote(
        &a.client("carol"),
        &mut carol,
        "carol",
        &g,
        Decision::Approve,
        None,
    );
    assert_eq!(code(&r), (403, "not_in_policy".into()));
    let mut members: Vec<(&str, &mut SoftToken)> =
        tokens.iter_mut().map(|(n, t)| (*n, t)).collect();
    let r = approve_and_apply(&a, &g, &mut members);
    assert_eq!(code(&r), (409, "custodians_changed".into()));
    members.push(("carol", &mut carol));
    genesis(&a, json!([{"group": "security", "k": 2}]), &mut members);
    let st = json_of(&req(&admin, Method::GET, "/v1/governance", None));
    assert_eq!(st["custodians"].as_array().unwrap().len(), 3);
}

/// After genesis one admin can no longer issue itself a PAM (or admin)
/// certificate, nor remove or lower the approvals a secret needs: those are
/// governance changes. Issuing a writer or a custodian certificate and
/// narrowing a policy stay immediate.
#[test]
fn certificates_that_disclose_and_relaxed_policies_need_the_quorum() {
    let root = TestRoot::new("Test PIV Root");
    let a = Appliance::start(root.options());
    let admin = a.admin();
    let writer = a.issue("writer", "w1");
    let mut alice = root.token(6001);
    let mut bob = root.token(6002);
    enroll_custodians(
        &a,
        &["security"],
        &mut [("alice", &mut alice), ("bob", &mut bob)],
    );
    assert_eq!(put(&writer, "prod/db", "db-pw", false).status, 200);
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/prod/db",
        Some(json!({"approvals": [{"group": "security", "k": 2}]})),
    );
    assert_eq!(r.status, 200);
    genesis(
        &a,
        json!([{"group": "security", "k": 2}]),
        &mut [("alice", &mut alice), ("bob", &mut bob)],
    );

    // ---- a PAM certificate for a key the admin holds: only a proposal.
    let (_key, csr) = key_and_csr("evil-pam");
    let r = req(
        &admin,
        Method::POST,
        "/v1/sys/certs",
        Some(json!({"name": "evil-pam", "role": "pam", "csr_pem": csr})),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v = json_of(&r);
    assert!(v.get("certificate_pem").is_none(), "no certificate: {v}");
    let evil = v["request_id"].as_str().unwrap().to_owned();
    let principals = json_of(&req(&admin, Method::GET, "/v1/sys/principals", None));
    assert!(
        !principals.to_string().contains("evil-pam"),
        "no principal before approval"
    );
    assert_eq!(code(&apply(&a, &evil)), (409, "pending_approval".into()));
    let r = vote(
        &a.client("alice"),
        &mut alice,
        "alice",
        &evil,
        Decision::Deny,
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(code(&apply(&a, &evil)), (409, "request_denied".into()));
    // An admin certificate too; a CSR that does not parse is refused before
    // anything is proposed.
    let (_, csr) = key_and_csr("admin2");
    let r = req(
        &admin,
        Method::POST,
        "/v1/sys/certs",
        Some(json!({"name": "admin2", "role": "admin", "csr_pem": csr})),
    );
    assert_eq!(r.status, 202);
    // A custodian certificate is issued at once, and is worth nothing
    // without the YubiKey enrolled under its name: the admin holding one
    // for alice cannot vote as her.
    // (Its files replace alice's own in the test's certificate directory:
    // both certificates are alice's, her votes still need her token.)
    let fake_alice = a.issue("custodian", "alice");
    let mut mallory = root.token(6666);
    let (_, csr) = key_and_csr("pam-x");
    let r = req(
        &admin,
        Method::POST,
        "/v1/sys/certs",
        Some(json!({"name": "pam-x", "role": "pam", "csr_pem": csr})),
    );
    let pending = json_of(&r)["request_id"].as_str().unwrap().to_owned();
    let r = vote(
        &fake_alice,
        &mut mallory,
        "alice",
        &pending,
        Decision::Approve,
        None,
    );
    assert_eq!(code(&r), (400, "bad_signature".into()));
    let r = req(
        &admin,
        Method::POST,
        "/v1/sys/certs",
        Some(json!({"name": "p9", "role": "pam", "csr_pem": "not a CSR"})),
    );
    assert_eq!(code(&r), (400, "invalid_csr".into()));
    // A writer or an auditor is still issued at once.
    a.issue("writer", "w2");
    a.issue("auditor", "aud2");
    // With the quorum, the PAM server gets its certificate, and it works.
    let pam = issue_governed(
        &a,
        "pam",
        "pam01",
        &mut [("alice", &mut alice), ("bob", &mut bob)],
    );
    let r = checkout(&pam, "prod/db");
    assert_eq!(r.status, 202, "the secret still needs its approvals");

    // ---- policies: asking for more is immediate, asking for less is not.
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/prod/db",
        Some(json!({"approvals": [{"group": "security", "k": 2}, {"group": "ops", "k": 0}]})),
    );
    assert_eq!(r.status, 400, "k = 0 is not a rule");
    for (approvals, want) in [
        (json!([]), 202),
        (json!([{"group": "security", "k": 1}]), 202),
        (json!([{"group": "security", "k": 2}]), 200),
    ] {
        let r = req(
            &admin,
            Method::PUT,
            "/v1/policies/prod/db",
            Some(json!({"approvals": approvals, "reason": "maintenance"})),
        );
        assert_eq!(
            r.status,
            want,
            "{approvals}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let info = json_of(&req(&admin, Method::GET, "/v1/secrets/prod/db", None));
    assert_eq!(
        info["approvals"],
        json!([{"group": "security", "k": 2}]),
        "nothing relaxed without the quorum: {info}"
    );
    // A prefix policy removed: also a relaxation.
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/prod/",
        Some(json!({"approvals": [{"group": "security", "k": 1}]})),
    );
    assert_eq!(r.status, 200, "a new prefix policy asks for more");
    let id = propose(
        &a,
        Method::PUT,
        "/v1/policies/prod/",
        json!({"approvals": []}),
    );
    let r = approve_and_apply(&a, &id, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let pp = json_of(&req(&admin, Method::GET, "/v1/policies", None));
    assert_eq!(pp["prefix_policies"], json!([]), "{pp}");
    // A relaxation approved for one policy does not apply over another:
    // the admin narrows after the proposal, the apply is refused.
    let id = propose(
        &a,
        Method::PUT,
        "/v1/policies/prod/db",
        json!({"approvals": [{"group": "security", "k": 1}], "reason": "night shift"}),
    );
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/prod/db",
        Some(json!({"approvals": [{"group": "security", "k": 2}, {"group": "dba", "k": 1}]})),
    );
    assert_eq!(r.status, 409, "dba has no custodians: unreachable");
    let mut carol = root.token(6003);
    let enrol = propose(
        &a,
        Method::POST,
        "/v1/custodians",
        enroll_body("carol", &["dba"], &mut carol),
    );
    let r = approve_and_apply(&a, &enrol, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(r.status, 200);
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/prod/db",
        Some(json!({"approvals": [{"group": "security", "k": 2}, {"group": "dba", "k": 1}]})),
    );
    assert_eq!(r.status, 200, "narrowing is immediate");
    let r = approve_and_apply(&a, &id, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(code(&r), (409, "policy_changed".into()));
    let info = json_of(&req(&admin, Method::GET, "/v1/secrets/prod/db", None));
    assert_eq!(
        info["approvals"],
        json!([{"group": "security", "k": 2}, {"group": "dba", "k": 1}])
    );
    let entries = a.audit_entries();
    for change in ["issue_certificate", "set_approvals"] {
        assert!(
            entries.iter().any(|e| e.action == "governance.apply"
                && e.details.get("change").map(String::as_str) == Some(change)),
            "no governance.apply of {change}"
        );
    }
}

/// Genesis starts with an admin whose key never existed on the box:
/// `vaultd init --admin-csr` signs the operator's CSR and writes only the
/// certificate and the CA (THREAT-MODEL item 21).
#[test]
fn the_first_admin_key_is_made_off_the_box() {
    let mut a = Appliance::create(vault_e2e::Options::default());
    let operator = tempfile::tempdir().unwrap();
    let (key, csr) = key_and_csr("admin");
    let csr_file = operator.path().join("admin.csr");
    std::fs::write(&csr_file, &csr).unwrap();
    let bad = operator.path().join("bad.csr");
    std::fs::write(&bad, "not a CSR").unwrap();
    let init = |csr: &std::path::Path| {
        a.command(vault_e2e::vaultd_bin())
            .arg("--config")
            .arg(&a.config)
            .args(["init", "--json", "--out"])
            .arg(&a.certs)
            .arg("--admin-csr")
            .arg(csr)
            .output()
            .unwrap()
    };
    let o = init(&bad);
    assert!(!o.status.success(), "a bad CSR is refused");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("certificate request"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Nothing was initialised by the refused attempt: this one succeeds.
    let o = init(&csr_file);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["admin_key"], Value::Null, "{report}");
    assert!(a.certs.join("admin.pem").exists() && a.certs.join("ca.pem").exists());
    assert!(
        !a.certs.join("admin-key.pem").exists(),
        "no admin key on the box"
    );
    // The operator's own key (from their machine) and the certificate.
    std::fs::write(a.certs.join("admin-key.pem"), key.serialize_pem()).unwrap();
    a.spawn();
    a.wait_ready();
    let r = req(&a.admin(), Method::GET, "/v1/sys/principals", None);
    assert_eq!(r.status, 200);
}

/// Removing a custodian or changing its groups is a governance change after
/// genesis, and is refused when it would leave something that needs
/// custodians unable ever to be approved. A removed custodian no longer
/// votes, and its keys never come back under another name.
#[test]
fn removing_and_regrouping_custodians() {
    let root = TestRoot::new("Test PIV Root");
    let a = Appliance::start(root.options());
    let admin = a.admin();
    let writer = a.issue("writer", "w1");
    let mut alice = root.token(7001);
    let mut bob = root.token(7002);
    let mut carol = root.token(7003);
    let mut dave = root.token(7004);
    for (n, g, t) in [
        ("alice", "security", &mut alice),
        ("bob", "security", &mut bob),
        ("carol", "security", &mut carol),
        ("dave", "dba", &mut dave),
    ] {
        let r = req(
            &admin,
            Method::POST,
            "/v1/custodians",
            Some(enroll_body(n, &[g], t)),
        );
        assert_eq!(r.status, 200);
        a.issue("custodian", n);
    }
    assert_eq!(put(&writer, "prod/db", "v", false).status, 200);
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/prod/db",
        Some(json!({"approvals": [{"group": "dba", "k": 1}]})),
    );
    assert_eq!(r.status, 200);
    // Before genesis: immediate, but never to a set that cannot approve.
    let r = req(&admin, Method::DELETE, "/v1/custodians/dave", None);
    assert_eq!(code(&r).0, 409, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(code(&r).1, "quorum_unreachable");
    assert!(String::from_utf8_lossy(&r.body).contains("prod/db"));
    let r = req(
        &admin,
        Method::PUT,
        "/v1/custodians/carol/groups",
        Some(json!({"groups": ["security", "ops"]})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = req(&admin, Method::DELETE, "/v1/custodians/nobody", None);
    assert_eq!(r.status, 404);
    genesis(
        &a,
        json!([{"group": "security", "k": 2}]),
        &mut [
            ("alice", &mut alice),
            ("bob", &mut bob),
            ("carol", &mut carol),
            ("dave", &mut dave),
        ],
    );

    // ---- after genesis: proposals.
    let (_, csr) = key_and_csr("pam01");
    let pending = propose(
        &a,
        Method::POST,
        "/v1/sys/certs",
        json!({"name": "pam01", "role": "pam", "csr_pem": csr}),
    );
    let r = vote(
        &a.client("carol"),
        &mut carol,
        "carol",
        &pending,
        Decision::Approve,
        None,
    );
    assert_eq!(r.status, 200);
    let r = req(
        &admin,
        Method::DELETE,
        "/v1/custodians/carol?reason=left%20the%20company",
        None,
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let remove = json_of(&r)["request_id"].as_str().unwrap().to_owned();
    assert!(custodian_names(&a).contains(&"carol".to_string()));
    let r = approve_and_apply(&a, &remove, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(!custodian_names(&a).contains(&"carol".to_string()));
    // Carol's certificate still opens a connection, but her key no longer
    // votes, and her earlier approval no longer counts.
    let r = vote(
        &a.client("carol"),
        &mut carol,
        "carol",
        &pending,
        Decision::Approve,
        None,
    );
    assert_eq!(code(&r), (403, "not_a_custodian".into()));
    let shown = json_of(&req(
        &admin,
        Method::GET,
        &format!("/v1/requests/{pending}"),
        None,
    ));
    assert_eq!(
        shown["needs"],
        json!([{"group": "security", "remaining": 2}]),
        "{shown}"
    );
    // With alice and bob left, removing either would leave security:2
    // unreachable.
    let r = req(&admin, Method::DELETE, "/v1/custodians/bob", None);
    assert_eq!(code(&r), (409, "quorum_unreachable".into()));
    // Dave joins security too: a governance change.
    let r = req(
        &admin,
        Method::PUT,
        "/v1/custodians/dave/groups",
        Some(json!({"groups": ["dba", "security"], "reason": "cover"})),
    );
    assert_eq!(r.status, 202);
    let regroup = json_of(&r)["request_id"].as_str().unwrap().to_owned();
    let change: Value = serde_json::from_str(json_of(&r)["change"].as_str().unwrap()).unwrap();
    assert_eq!(change["previous"], json!(["dba"]));
    let r = approve_and_apply(
        &a,
        &regroup,
        &mut [("alice", &mut alice), ("bob", &mut bob)],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let st = json_of(&req(&admin, Method::GET, "/v1/governance", None));
    let dave_groups = st["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "dave")
        .unwrap()["groups"]
        .clone();
    assert_eq!(dave_groups, json!(["dba", "security"]));
    // Carol's YubiKey cannot come back under another name.
    let enrol = propose(
        &a,
        Method::POST,
        "/v1/custodians",
        enroll_body("carol2", &["security"], &mut carol),
    );
    let r = approve_and_apply(&a, &enrol, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(code(&r), (409, "key_already_enrolled".into()));
    let entries = a.audit_entries();
    for change in ["remove_custodian", "set_custodian_groups"] {
        assert!(
            entries.iter().any(|e| e.action == "governance.apply"
                && e.details.get("change").map(String::as_str) == Some(change)),
            "no governance.apply of {change}"
        );
    }
    assert!(entries
        .iter()
        .any(|e| e.action == "custodian.remove" && e.error == "quorum_unreachable"));
    assert!(entries
        .iter()
        .any(|e| e.action == "custodian.groups" && e.error.is_empty()));
}
