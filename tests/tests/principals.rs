//! Issue 11, findings 5 and 9: a certificate's expiry is checked on every
//! request, not only at the handshake; a committed revocation takes effect
//! even when reading the principal table back fails; a checkout belongs to
//! the certificate that made it, not to its name; a revoked certificate is
//! refused under its principal.

use hyper::Method;
use vault_e2e::{checkout, json_of, put, req, Appliance, Options};

fn fingerprint_of(a: &Appliance, name: &str) -> String {
    let r = req(&a.admin(), Method::GET, "/v1/sys/principals", None);
    let v = json_of(&r);
    v["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no principal {name}: {v}"))["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn db(a: &Appliance) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(a.db_path()).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c
}

#[test]
fn a_principal_past_its_not_after_is_refused_on_every_request() {
    let mut a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/db", "alpha", false).status, 200);
    assert_eq!(checkout(&pam, "svc/db").status, 200);
    let fp = fingerprint_of(&a, "p1");
    // The table says the certificate has expired; the certificate itself
    // still passes the handshake (its own notAfter is in 90 days), which is
    // what a connection opened before expiry looks like.
    a.stop();
    let n = db(&a)
        .execute(
            "UPDATE principals SET not_after = strftime('%s','now') - 60 WHERE fingerprint = ?1",
            [&fp],
        )
        .unwrap();
    assert_eq!(n, 1);
    a.spawn();
    a.wait_ready();
    let r = checkout(&pam, "svc/db");
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (403, Some("certificate_expired")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(!String::from_utf8_lossy(&r.body).contains("alpha"));
    // Others are unaffected.
    assert_eq!(put(&writer, "svc/db", "beta", false).status, 200);
}

#[test]
fn a_revocation_holds_even_when_the_principal_table_cannot_be_read_back() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/db", "alpha", false).status, 200);
    assert_eq!(checkout(&pam, "svc/db").status, 200);
    let fp = fingerprint_of(&a, "p1");
    // Another row is edited to a role no build knows: re-reading the table
    // now fails (integrity).
    db(&a)
        .execute("UPDATE principals SET role = 'root' WHERE name = 'w1'", [])
        .unwrap();
    let r = req(
        &a.admin(),
        Method::POST,
        &format!("/v1/sys/principals/{fp}/revoke"),
        None,
    );
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (500, Some("integrity")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // The revocation was committed, and it is in force at once.
    let revoked: i64 = db(&a)
        .query_row(
            "SELECT revoked FROM principals WHERE fingerprint = ?1",
            [&fp],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(revoked, 1);
    let r = checkout(&pam, "svc/db");
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (403, Some("revoked_certificate"))
    );
}

#[test]
fn revoking_a_name_revokes_all_its_certificates_and_the_name_cannot_return_with_another_role() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    assert_eq!(put(&writer, "svc/db", "alpha", false).status, 200);
    // Two certificates for one PAM server (a renewal), and another server.
    let first = a.issue("pam", "p1");
    let second = a.issue("pam", "p1");
    let other = a.issue("pam", "p2");
    for c in [&first, &second, &other] {
        assert_eq!(checkout(c, "svc/db").status, 200);
    }
    let r = req(
        &a.admin(),
        Method::POST,
        "/v1/sys/principals/revoke",
        Some(serde_json::json!({"name": "p1"})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["revoked"].as_array().unwrap().len(), 2);
    for c in [&first, &second] {
        let r = checkout(c, "svc/db");
        assert_eq!(
            (r.status, r.error_code().as_deref()),
            (403, Some("revoked_certificate"))
        );
    }
    assert_eq!(checkout(&other, "svc/db").status, 200);
    // The same through vaultctl, for the other server.
    let fp2 = fingerprint_of(&a, "p2");
    let o = a.vaultctl("admin", &["cert", "revoke", "--name", "p2"], None);
    assert_eq!(vault_e2e::ok(&o), format!("revoked {fp2} (p2)\n"));
    assert_eq!(checkout(&other, "svc/db").status, 403);
    // Nothing left to revoke under that name; the last admin's name is kept.
    let again = req(
        &a.admin(),
        Method::POST,
        "/v1/sys/principals/revoke",
        Some(serde_json::json!({"name": "p1"})),
    );
    assert_eq!(again.error_code().as_deref(), Some("not_found"));
    let admin = req(
        &a.admin(),
        Method::POST,
        "/v1/sys/principals/revoke",
        Some(serde_json::json!({"name": "admin"})),
    );
    assert_eq!(admin.error_code().as_deref(), Some("last_admin"));
    // The revoked name does not come back as a writer.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, "p1");
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    let r = req(
        &a.admin(),
        Method::POST,
        "/v1/sys/certs",
        Some(serde_json::json!({"name": "p1", "role": "writer", "csr_pem": csr})),
    );
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (409, Some("name_in_use"))
    );
}

#[test]
fn a_second_certificate_of_a_name_does_not_inherit_its_checkouts() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let first = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/db", "alpha", true).status, 200);
    let r = checkout(&first, "svc/db");
    assert_eq!(r.status, 200);
    let id = json_of(&r)["checkout_id"].as_str().unwrap().to_owned();
    // The same name, the same role, a new key: a renewal, or an admin
    // issuing themselves a copy of a PAM server's identity.
    let second = a.issue("pam", "p1");
    for (what, path, body) in [
        ("checkin", format!("/v1/checkouts/{id}/checkin"), None),
        (
            "renew",
            format!("/v1/checkouts/{id}/renew"),
            Some(serde_json::json!({})),
        ),
    ] {
        let r = req(&second, Method::POST, &path, body);
        assert_eq!(
            (r.status, r.error_code().as_deref()),
            (403, Some("forbidden")),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // The checkout still holds the exclusive secret; its own certificate
    // checks it in.
    assert_eq!(
        checkout(&second, "svc/db").error_code().as_deref(),
        Some("checked_out")
    );
    let r = req(
        &first,
        Method::POST,
        &format!("/v1/checkouts/{id}/checkin"),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The lease names the certificate.
    let r = req(&a.admin(), Method::GET, "/v1/checkouts?state=all", None);
    let fps: Vec<String> = json_of(&r)["checkouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["fingerprint"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fps.len(), 1);
    assert_eq!(fps[0].len(), 64);
}

#[test]
fn a_revoked_certificate_is_refused_under_its_principal() {
    let a = Appliance::start(Options::default());
    let pam = a.issue("pam", "p1");
    let fp = fingerprint_of(&a, "p1");
    let r = req(
        &a.admin(),
        Method::POST,
        &format!("/v1/sys/principals/{fp}/revoke"),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = checkout(&pam, "svc/db");
    assert_eq!(r.error_code().as_deref(), Some("revoked_certificate"));
    let (principal, role, error): (String, String, String) = db(&a)
        .query_row(
            "SELECT entry FROM audit_log ORDER BY idx DESC LIMIT 1",
            [],
            |row| row.get::<_, Vec<u8>>(0),
        )
        .map(|b| {
            let e = vault_core::audit::entry::Entry::parse(&b).unwrap();
            (e.principal, e.role, e.error)
        })
        .unwrap();
    assert_eq!(
        (principal.as_str(), role.as_str(), error.as_str()),
        ("p1", "pam", "revoked_certificate")
    );
}
