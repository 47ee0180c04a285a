//! Access grants (issue 11, finding 6): a PAM server reaches only the paths
//! its name's grants cover; default deny for a new name; a grant is a
//! governance change after genesis; removal is immediate. Tried as the
//! admin, the PAM server itself, a writer and an auditor.

use hyper::Method;
use serde_json::json;
use vault_e2e::piv::{alice_and_bob_genesis, approve_and_apply, propose, proposed, TestRoot};
use vault_e2e::{checkout, json_of, key_and_csr, put, req, Appliance};

fn code(r: &vault_client::Response) -> (u16, String) {
    (r.status, r.error_code().unwrap_or_default())
}

fn grant(c: &vault_client::Client, principal: &str, prefix: &str) -> vault_client::Response {
    req(
        c,
        Method::POST,
        "/v1/grants",
        Some(json!({"principal": principal, "prefix": prefix})),
    )
}

fn ungrant(c: &vault_client::Client, principal: &str, prefix: &str) -> vault_client::Response {
    req(
        c,
        Method::POST,
        "/v1/grants/remove",
        Some(json!({"principal": principal, "prefix": prefix})),
    )
}

fn listed(c: &vault_client::Client) -> Vec<(String, String)> {
    json_of(&req(c, Method::GET, "/v1/grants", None))["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["principal"].as_str().unwrap().to_owned(),
                g["prefix"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A pam certificate with no grants, issued by the admin.
fn bare_pam(a: &Appliance, name: &str) -> vault_client::Client {
    let (key, csr) = key_and_csr(name);
    let r = req(
        &a.admin(),
        Method::POST,
        "/v1/sys/certs",
        Some(json!({"name": name, "role": "pam", "csr_pem": csr})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_of(&r);
    assert_eq!(v["grants"], json!([]));
    a.keep(name, v["certificate_pem"].as_str().unwrap(), &key)
}

#[test]
fn a_pam_server_reaches_only_what_its_grants_cover() {
    let root = TestRoot::new("Test PIV Root");
    let a = Appliance::start(root.options());
    let admin = a.admin();
    let writer = a.issue("writer", "w1");
    let aud = a.issue("auditor", "aud");
    for p in ["db/a", "db/b", "web/b", "dbx"] {
        assert_eq!(put(&writer, p, "v", false).status, 200);
    }
    // Default deny: a new PAM name reaches nothing, and learns nothing of
    // what exists (a missing path is refused the same way).
    let p1 = bare_pam(&a, "p1");
    assert_eq!(code(&checkout(&p1, "db/a")), (403, "not_granted".into()));
    assert_eq!(code(&checkout(&p1, "no/such")), (403, "not_granted".into()));
    assert!(listed(&admin).is_empty());

    // Nor from its metadata or listing.
    let meta = |c: &vault_client::Client, p: &str| {
        code(&req(c, Method::GET, &format!("/v1/secrets/{p}"), None))
    };
    let paths = |c: &vault_client::Client| -> Vec<String> {
        json_of(&req(c, Method::GET, "/v1/secrets?limit=2", None))["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(meta(&p1, "db/a"), (403, "not_granted".into()));
    assert_eq!(meta(&p1, "no/such"), (403, "not_granted".into()));
    assert!(paths(&p1).is_empty());

    // Before genesis the admin grants at once.
    assert_eq!(grant(&admin, "p1", "db/").status, 200);
    assert_eq!(meta(&p1, "db/a").0, 200);
    assert_eq!(meta(&p1, "db/none"), (404, "not_found".into()));
    assert_eq!(meta(&p1, "web/b"), (403, "not_granted".into()));
    // A page of 2 over db/a, db/b (both granted), then dbx, web/b (not).
    assert_eq!(paths(&p1), ["db/a", "db/b"]);
    let v = json_of(&req(&p1, Method::GET, "/v1/secrets?after=db/b", None));
    assert_eq!(v["secrets"], json!([]), "dbx and web/b are not listed");
    assert_eq!(paths(&writer), ["db/a", "db/b"], "others see every path");
    assert_eq!(checkout(&p1, "db/a").status, 200);
    assert_eq!(checkout(&p1, "db/b").status, 200);
    assert_eq!(
        code(&checkout(&p1, "dbx")),
        (403, "not_granted".into()),
        "db/ is no prefix of dbx"
    );
    assert_eq!(code(&checkout(&p1, "web/b")), (403, "not_granted".into()));
    assert_eq!(code(&checkout(&p1, "db/none")), (404, "not_found".into()));
    assert_eq!(grant(&admin, "p1", "web/b").status, 200);
    assert_eq!(checkout(&p1, "web/b").status, 200, "an exact path");
    assert_eq!(
        listed(&aud),
        [
            ("p1".to_string(), "db/".to_string()),
            ("p1".into(), "web/b".into())
        ]
    );

    // Refused: duplicates, bad prefixes, principals that are not PAM servers.
    assert_eq!(
        code(&grant(&admin, "p1", "db/")),
        (409, "grant_exists".into())
    );
    for bad in ["", "/", "db//", "../x", "db/*", "a b"] {
        assert_eq!(
            code(&grant(&admin, "p1", bad)),
            (400, "invalid_grant".into()),
            "{bad:?}"
        );
    }
    assert_eq!(
        code(&grant(&admin, "w1", "*")),
        (404, "not_found".into()),
        "a writer"
    );
    assert_eq!(
        code(&grant(&admin, "admin", "*")),
        (404, "not_found".into()),
        "the admin itself"
    );
    assert_eq!(
        code(&grant(&admin, "ghost", "*")),
        (404, "not_found".into())
    );
    let (_, csr) = key_and_csr("w9");
    let r = req(
        &admin,
        Method::POST,
        "/v1/sys/certs",
        Some(json!({"name": "w9", "role": "writer", "csr_pem": csr, "grants": ["*"]})),
    );
    assert_eq!(
        code(&r),
        (400, "invalid_grant".into()),
        "grants on a writer"
    );
    // Only the admin grants or removes: not the PAM server, a writer or an
    // auditor.
    for (who, c) in [("pam", &p1), ("writer", &writer), ("auditor", &aud)] {
        assert_eq!(grant(c, "p1", "*").status, 403, "{who}");
        assert_eq!(ungrant(c, "p1", "db/").status, 403, "{who}");
    }
    assert_eq!(req(&p1, Method::GET, "/v1/grants", None).status, 403);

    // Removal is immediate; removing what is not there is 404.
    assert_eq!(ungrant(&admin, "p1", "db/").status, 200);
    assert_eq!(code(&checkout(&p1, "db/a")), (403, "not_granted".into()));
    assert_eq!(
        code(&ungrant(&admin, "p1", "db/")),
        (404, "not_found".into())
    );

    // Issued with grants: they hold at once.
    let (key, csr) = key_and_csr("p2");
    let r = req(
        &admin,
        Method::POST,
        "/v1/sys/certs",
        Some(json!({"name": "p2", "role": "pam", "csr_pem": csr, "grants": ["db/b", "db/b"]})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(json_of(&r)["grants"], json!(["db/b"]), "sorted, once each");
    let p2 = a.keep("p2", json_of(&r)["certificate_pem"].as_str().unwrap(), &key);
    assert_eq!(checkout(&p2, "db/b").status, 200);
    assert_eq!(code(&checkout(&p2, "db/a")), (403, "not_granted".into()));
    // Revoked (every certificate of the name), the name loses its grants:
    // a certificate issued for it again reaches nothing.
    let r = req(
        &admin,
        Method::POST,
        "/v1/sys/principals/revoke",
        Some(json!({"name": "p2"})),
    );
    assert_eq!(r.status, 200);
    assert!(!listed(&admin).iter().any(|(p, _)| p == "p2"));
    let p2 = bare_pam(&a, "p2");
    assert_eq!(code(&checkout(&p2, "db/b")), (403, "not_granted".into()));
    assert_eq!(grant(&admin, "p2", "db/b").status, 200);

    // Audited: grants given and removed, refusals under their callers.
    let entries = a.audit_entries();
    let n = |action: &str, outcome: &str| {
        entries
            .iter()
            .filter(|e| e.action == action && format!("{:?}", e.outcome).to_lowercase() == outcome)
            .count()
    };
    assert_eq!(n("grant.add", "success"), 3);
    assert_eq!(n("grant.remove", "success"), 1);
    assert!(n("grant.add", "denied") >= 3);
    let issued = entries
        .iter()
        .find(|e| e.action == "cert.issue" && e.target == "p2")
        .unwrap();
    assert_eq!(issued.details["grants"], "db/b");

    // ---- after genesis: a grant is a governance change.
    let (mut alice, mut bob) = alice_and_bob_genesis(&a, &root, [4101, 4102]);
    let (id, change) = proposed(&grant(&admin, "p1", "*"));
    assert_eq!(
        change,
        json!({"change": "grant_access", "principal": "p1", "prefix": "*"})
    );
    // Not before the quorum approves.
    assert_eq!(code(&checkout(&p1, "db/a")), (403, "not_granted".into()));
    let r = approve_and_apply(&a, &id, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(checkout(&p1, "db/a").status, 200);
    // Removing stays immediate, and admin-only.
    assert_eq!(ungrant(&admin, "p1", "*").status, 200);
    assert_eq!(code(&checkout(&p1, "db/a")), (403, "not_granted".into()));
    // A pam certificate proposed with grants gets them when applied.
    let (_, csr) = key_and_csr("p3");
    let id = propose(
        &a,
        Method::POST,
        "/v1/sys/certs",
        json!({"name": "p3", "role": "pam", "csr_pem": csr, "grants": ["web/"]}),
    );
    let r = approve_and_apply(&a, &id, &mut [("alice", &mut alice), ("bob", &mut bob)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(listed(&admin).contains(&("p3".into(), "web/".into())));
}
