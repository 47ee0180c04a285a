//! Issue 12, leases (first part): the reaper ends checkouts at their TTL,
//! audits `checkout.expire`, frees an exclusive secret, and ends at start the
//! leases that expired while vaultd was down.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;
use vault_core::audit::entry::Entry;
use vault_e2e::{json_of, put, req, Appliance, Options};

fn entries(a: &Appliance) -> Vec<Entry> {
    let c = rusqlite::Connection::open_with_flags(
        a.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut st = c
        .prepare("SELECT entry FROM audit_log ORDER BY idx")
        .unwrap();
    let rows = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|b| Entry::parse(&b.unwrap()).unwrap())
        .collect();
    rows
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
