//! Issue 12, leases (first part): the reaper ends checkouts at their TTL,
//! audits `checkout.expire`, frees an exclusive secret, and ends at start the
//! leases that expired while vaultd was down.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;
use vault_client::Response;
use vault_core::audit::entry::{Entry, Outcome};
use vault_e2e::{json_of, put, req, Appliance, Options};

fn entries(a: &Appliance) -> Vec<Entry> {
    a.audit_entries()
}

/// The `checkout.expire` entry of a checkout, waiting for the reaper (it
/// looks every 5 s) for at most 30 s.
fn expiry_of(a: &Appliance, checkout_id: &str) -> Entry {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = entries(a)
            .into_iter()
            .find(|e| e.action == "checkout.expire" && e.details["checkout_id"] == checkout_id)
        {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no checkout.expire for {checkout_id}\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn checkout_for(c: &vault_client::Client, path: &str, ttl: u64) -> String {
    let r = req(
        c,
        Method::POST,
        &format!("/v1/secrets/{path}/checkout"),
        Some(json!({"reason": "lease test", "ttl_seconds": ttl})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    json_of(&r)["checkout_id"].as_str().unwrap().to_owned()
}

#[test]
fn a_lease_ends_at_its_ttl_and_is_audited_once() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/db", "alpha", true).status, 200);
    let id = checkout_for(&pam, "svc/db", 1);
    let e = expiry_of(&a, &id);
    assert_eq!(
        (e.principal.as_str(), e.role.as_str(), e.target.as_str()),
        ("vaultd", "system", "svc/db")
    );
    assert_eq!(e.details["principal"], "p1");
    assert_eq!(e.details["version"], "1");
    // Once: a later look finds nothing more to end.
    std::thread::sleep(Duration::from_secs(6));
    let n = entries(&a)
        .iter()
        .filter(|e| e.action == "checkout.expire")
        .count();
    assert_eq!(n, 1);
    // The lease is over: check-in is refused, the exclusive secret is free.
    let r = req(
        &pam,
        Method::POST,
        &format!("/v1/checkouts/{id}/checkin"),
        None,
    );
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (409, Some("lease_expired"))
    );
    checkout_for(&pam, "svc/db", 60);
}

#[test]
fn a_lease_that_expired_while_vaultd_was_down_is_ended_at_start() {
    let mut a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/db", "alpha", false).status, 200);
    let id = checkout_for(&pam, "svc/db", 2);
    a.stop();
    assert!(
        !entries(&a).iter().any(|e| e.action == "checkout.expire"),
        "ended before its TTL"
    );
    std::thread::sleep(Duration::from_secs(3));
    a.spawn();
    a.wait_ready();
    let e = expiry_of(&a, &id);
    // Written by this run: after its daemon.start entry.
    let all = entries(&a);
    let last_start = all
        .iter()
        .filter(|e| e.action == "daemon.start")
        .map(|e| e.seq)
        .max()
        .unwrap();
    assert!(e.seq > last_start);
}

fn post(c: &vault_client::Client, path: &str, body: serde_json::Value) -> Response {
    req(c, Method::POST, path, Some(body))
}

fn code(r: &Response) -> (u16, Option<String>) {
    (r.status, r.error_code())
}

fn audit_of<'a>(all: &'a [Entry], action: &str, checkout_id: &str) -> Vec<&'a Entry> {
    all.iter()
        .filter(|e| e.action == action && e.target == checkout_id)
        .collect()
}

#[test]
fn a_lease_is_renewed_by_its_owner_up_to_the_secrets_maximum() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    let other = a.issue("pam", "p2");
    // A maximum above the appliance's limit (86,400 s) is refused.
    let r = req(
        &writer,
        Method::PUT,
        "/v1/secrets/svc/short",
        Some(json!({"value": "alpha", "max_lease_seconds": 86_401})),
    );
    assert_eq!(code(&r), (400, Some("invalid_ttl".into())));
    let r = req(
        &writer,
        Method::PUT,
        "/v1/secrets/svc/short",
        Some(json!({"value": "alpha", "max_lease_seconds": 300, "exclusive": true})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let meta = json_of(&req(&writer, Method::GET, "/v1/secrets/svc/short", None));
    assert_eq!(meta["max_lease_seconds"], 300);
    // A checkout longer than the maximum is refused, and records nothing.
    let r = post(
        &pam,
        "/v1/secrets/svc/short/checkout",
        json!({"reason": "too long", "ttl_seconds": 301}),
    );
    assert_eq!(code(&r), (409, Some("lease_max_exceeded".into())));
    let id = checkout_for(&pam, "svc/short", 60);
    let renew = |c, ttl: u64| {
        post(
            c,
            &format!("/v1/checkouts/{id}/renew"),
            json!({"ttl_seconds": ttl}),
        )
    };
    // Only the owner renews: another pam is refused by the store, an admin
    // by its role.
    assert_eq!(code(&renew(&other, 120)), (403, Some("forbidden".into())));
    let admin = a.admin();
    assert_eq!(code(&renew(&admin, 120)), (403, Some("forbidden".into())));
    let r = renew(&pam, 120);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let first = json_of(&r);
    assert_eq!(
        (first["renewals"].clone(), first["state"].clone()),
        (json!(1), json!("open"))
    );
    // Past the maximum it is capped at checkout + 300 s, then refused.
    let capped = json_of(&renew(&pam, 3_600));
    assert_eq!(capped["renewals"], 2);
    let lease: i64 = rusqlite::Connection::open(a.db_path())
        .unwrap()
        .query_row(
            "SELECT expires_at - created_at FROM checkouts WHERE id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(lease, 300);
    assert_eq!(
        code(&renew(&pam, 3_600)),
        (409, Some("lease_max_exceeded".into()))
    );
    let r = post(
        &pam,
        &format!("/v1/checkouts/{id}/renew"),
        json!({"ttl_seconds": 0}),
    );
    assert_eq!(code(&r), (400, Some("invalid_ttl".into())));
    // Each attempt is audited under the lease, the refusals as refusals.
    let all = entries(&a);
    let renewals = audit_of(&all, "checkout.renew", &id);
    let ok: Vec<_> = renewals
        .iter()
        .filter(|e| e.outcome == Outcome::Success)
        .collect();
    assert_eq!(ok.len(), 2, "{renewals:?}");
    assert_eq!(ok[0].details["path"], "svc/short");
    assert_eq!(ok[0].details["owner"], "p1");
    assert!(renewals
        .iter()
        .any(|e| e.principal == "p2" && e.outcome != Outcome::Success));
}

#[test]
fn an_admin_revokes_a_lease_with_a_reason_and_the_owner_cannot_use_it_after() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    let admin = a.admin();
    assert_eq!(put(&writer, "svc/db", "alpha", true).status, 200);
    let id = checkout_for(&pam, "svc/db", 600);
    let revoke = |c, body| post(c, &format!("/v1/checkouts/{id}/revoke"), body);
    // Not the owner, not without a reason.
    assert_eq!(
        code(&revoke(&pam, json!({"reason": "mine"}))),
        (403, Some("forbidden".into()))
    );
    assert_eq!(
        code(&revoke(&admin, json!({"reason": "  "}))),
        (400, Some("invalid_reason".into()))
    );
    let r = revoke(&admin, json!({"reason": "incident 4711: host compromised"}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_of(&r);
    assert_eq!(
        (
            v["state"].as_str(),
            v["revoked_by"].as_str(),
            v["principal"].as_str()
        ),
        (Some("revoked"), Some("admin"), Some("p1"))
    );
    assert_eq!(
        code(&revoke(&admin, json!({"reason": "again"}))),
        (409, Some("already_checked_in".into()))
    );
    // The owner can neither check in nor renew; the exclusive secret is free.
    let r = req(
        &pam,
        Method::POST,
        &format!("/v1/checkouts/{id}/checkin"),
        None,
    );
    assert_eq!(code(&r), (409, Some("already_checked_in".into())));
    let r = post(&pam, &format!("/v1/checkouts/{id}/renew"), json!({}));
    assert_eq!(code(&r), (409, Some("already_checked_in".into())));
    checkout_for(&pam, "svc/db", 60);
    let all = entries(&a);
    let revoked = audit_of(&all, "checkout.revoke", &id);
    let ok: Vec<_> = revoked
        .iter()
        .filter(|e| e.outcome == Outcome::Success)
        .collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(
        (ok[0].principal.as_str(), ok[0].role.as_str()),
        ("admin", "admin")
    );
    assert_eq!(ok[0].details["reason"], "incident 4711: host compromised");
    assert_eq!(ok[0].details["owner"], "p1");
    assert_eq!(ok[0].details["path"], "svc/db");
}

#[test]
fn checkouts_are_listed_by_filter_and_a_pam_principal_sees_only_its_own() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let p1 = a.issue("pam", "p1");
    let p2 = a.issue("pam", "p2");
    let auditor = a.issue("auditor", "aud1");
    assert_eq!(put(&writer, "db/one", "1", false).status, 200);
    assert_eq!(put(&writer, "ssh/two", "2", false).status, 200);
    let c1 = checkout_for(&p1, "db/one", 600);
    let c2 = checkout_for(&p2, "ssh/two", 600);
    let c3 = checkout_for(&p1, "ssh/two", 600);
    let r = req(
        &p1,
        Method::POST,
        &format!("/v1/checkouts/{c3}/checkin"),
        None,
    );
    assert_eq!(r.status, 200);
    let ids = |c, q: &str| -> Vec<String> {
        let r = req(c, Method::GET, &format!("/v1/checkouts{q}"), None);
        assert_eq!(r.status, 200, "{q}: {}", String::from_utf8_lossy(&r.body));
        json_of(&r)["checkouts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["checkout_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Open ones by default, newest first; state=all adds the checked-in one.
    let admin = a.admin();
    assert_eq!(ids(&admin, ""), [c2.clone(), c1.clone()]);
    assert_eq!(
        ids(&auditor, "?state=all"),
        [c3.clone(), c2.clone(), c1.clone()]
    );
    assert_eq!(
        ids(&auditor, "?path_prefix=ssh/&state=all"),
        [c3.clone(), c2.clone()]
    );
    assert_eq!(ids(&admin, "?principal=p2"), vec![c2.clone()]);
    // A pam principal: only its own, and it may not ask for another's.
    assert_eq!(ids(&p1, "?state=all"), [c3.clone(), c1.clone()]);
    let r = req(&p1, Method::GET, "/v1/checkouts?principal=p2", None);
    assert_eq!(code(&r), (403, Some("forbidden".into())));
    // Writers and custodians see no leases; bad filters are named.
    let r = req(&writer, Method::GET, "/v1/checkouts", None);
    assert_eq!(code(&r), (403, Some("forbidden".into())));
    for q in ["?state=closed", "?limit=0", "?before=x", "?colour=red"] {
        let r = req(&auditor, Method::GET, &format!("/v1/checkouts{q}"), None);
        assert_eq!(code(&r), (400, Some("invalid_query".into())), "{q}");
    }
    // Paging: two pages of one make the whole list.
    let page = json_of(&req(&auditor, Method::GET, "/v1/checkouts?limit=1", None));
    let next = page["next_before"].as_str().unwrap().to_owned();
    assert_eq!(
        ids(&auditor, &format!("?limit=1&before={next}")),
        vec![c1.clone()]
    );
    // vaultctl shows the same.
    let out = vault_e2e::ok(&a.vaultctl("aud1", &["lease", "list", "--all"], None));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().next().unwrap().starts_with(&c3), "{out}");
}
