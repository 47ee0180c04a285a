//! Issue 11, finding 6 (first part): approval policies on path prefixes.
//! A prefix is gated before its first secret exists, so a secret written
//! under it later is never checked out without the approvals; a prefix
//! policy adds to a secret's own (AND), and removing a secret's own
//! approvals does not ungate it.

use hyper::Method;
use serde_json::json;
use vault_e2e::piv::{enroll_body, TestRoot};
use vault_e2e::{checkout, json_of, put, req, Appliance};

fn code(r: &vault_client::Response) -> (u16, String) {
    (r.status, r.error_code().unwrap_or_default())
}

#[test]
fn a_prefix_gated_before_its_secrets_exist_gates_every_later_secret() {
    let root = TestRoot::new("Test PIV Root");
    let a = Appliance::start(root.options());
    let admin = a.admin();
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "pam01");
    let auditor = a.issue("auditor", "aud1");
    for (i, (n, g)) in [("alice", "security"), ("bob", "security"), ("carol", "dba")]
        .into_iter()
        .enumerate()
    {
        let mut t = root.token(4001 + i as u32);
        let r = req(
            &admin,
            Method::POST,
            "/v1/custodians",
            Some(enroll_body(n, &[g], &mut t)),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let set = |path: &str, approvals: serde_json::Value| {
        req(
            &admin,
            Method::PUT,
            &format!("/v1/policies/{path}"),
            Some(json!({ "approvals": approvals })),
        )
    };
    // Checked like any policy: reachable by the enrolled custodians, a
    // valid path, admins only.
    assert_eq!(
        code(&set("prod/", json!([{"group": "security", "k": 3}]))),
        (409, "quorum_unreachable".into())
    );
    assert_eq!(
        code(&set("prod//", json!([{"group": "security", "k": 1}]))),
        (400, "invalid_path".into())
    );
    let r = req(
        &writer,
        Method::PUT,
        "/v1/policies/prod/",
        Some(json!({"approvals": []})),
    );
    assert_eq!(r.status, 403);
    // Gated before anything exists under it.
    let r = set("prod/", json!([{"group": "security", "k": 2}]));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let listed = json_of(&req(&auditor, Method::GET, "/v1/policies", None));
    assert_eq!(listed["prefix_policies"][0]["prefix"], "prod/");
    assert_eq!(listed["prefix_policies"][0]["set_by"], "admin");
    // A secret written afterwards is gated at once.
    assert_eq!(put(&writer, "prod/db/root", "pw-1", false).status, 200);
    let r = checkout(&pam, "prod/db/root");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert!(!String::from_utf8_lossy(&r.body).contains("pw-1"));
    let v = json_of(&r);
    assert_eq!(v["status"], "pending_approval");
    assert_eq!(
        v["needs"],
        json!([{"group": "security", "remaining": 2}]),
        "{v}"
    );
    // Outside the prefix (a string prefix, not a path prefix) nothing changes.
    assert_eq!(put(&writer, "production", "open", false).status, 200);
    assert_eq!(checkout(&pam, "production").status, 200);
    // The secret's own approvals add to the prefix's; removing its own
    // leaves the prefix's in force.
    let r = set("prod/db/root", json!([{"group": "dba", "k": 1}]));
    assert_eq!(r.status, 200);
    let meta = json_of(&req(
        &auditor,
        Method::GET,
        "/v1/secrets/prod/db/root",
        None,
    ));
    assert_eq!(
        meta["effective_approvals"],
        json!([{"group": "dba", "k": 1}, {"group": "security", "k": 2}])
    );
    assert_eq!(meta["prefix_policies"][0]["prefix"], "prod/");
    assert_eq!(set("prod/db/root", json!([])).status, 200);
    assert_eq!(checkout(&pam, "prod/db/root").status, 202);
    // Removing the prefix policy is audited, and only then is it open.
    let r = set("prod/", json!([]));
    assert_eq!(r.status, 200);
    assert_eq!(code(&set("prod/", json!([]))), (404, "not_found".into()));
    let r = checkout(&pam, "prod/db/root");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sets: Vec<vault_core::audit::entry::Entry> = a
        .audit_entries()
        .into_iter()
        .filter(|e| {
            e.action == "policy.set"
                && e.target == "prod/"
                && e.outcome == vault_core::audit::entry::Outcome::Success
        })
        .collect();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0].details["scope"], "prefix");
    assert_eq!(sets[1].details["approvals"], "[]");
}
