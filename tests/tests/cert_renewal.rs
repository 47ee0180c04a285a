//! Issue 14, item 8: certificates that expire without locking anyone out.
//! Client certificates renew from a CSR inside their renewal window (same
//! name and role, the old one revoked at the new one's first use, what it
//! held moved over); the server certificate is reissued before it expires
//! and on an admin's request. Time is moved with the debug build's test
//! clock (`VAULTD_TEST_CLOCK_FILE`), which the TLS handshake uses too.
//! Abuse: a thief who renews a stolen certificate loses the renewal when
//! the stolen one is revoked; a renewal cannot change name or role; an
//! expired certificate cannot renew.

use hyper::Method;
use serde_json::{json, Value};
use vault_client::Client;
use vault_e2e::{json_of, key_and_csr, runtime, Appliance, Options};

const DAY: i64 = 86_400;

fn call(c: &Client, method: Method, path: &str, body: Option<Value>) -> vault_client::Response {
    runtime()
        .block_on(c.request(method, path, body.as_ref()))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An appliance on the test clock, at +0.
fn appliance(extra: &str) -> Appliance {
    let mut a = Appliance::start(Options {
        extra_config: extra.into(),
        ..Options::default()
    });
    a.set_clock(0);
    a.restart();
    a
}

/// Renews `name`'s certificate through the API with `c` (its current
/// client) at clock `offset`: the new certificate and key replace its
/// files; returns the answer and the new client.
fn renew(a: &Appliance, name: &str, c: &Client, offset: i64) -> (Value, Client) {
    let (key, csr) = key_and_csr(name);
    let r = call(
        c,
        Method::POST,
        "/v1/sys/certs/renew",
        Some(json!({ "csr_pem": csr })),
    );
    assert_eq!(
        r.status,
        200,
        "renew {name}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let v = json_of(&r);
    a.keep(name, v["certificate_pem"].as_str().unwrap(), &key);
    (v, a.client_at(name, offset))
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_certificate_renews_in_its_window_and_the_old_one_dies_at_first_use() {
    let a = appliance("");
    let writer = a.issue("writer", "w1");
    let pam_old = a.issue("pam", "p1");
    assert_eq!(
        vault_e2e::put(&writer, "svc/db", "alpha", false).status,
        200
    );
    let r = vault_e2e::checkout(&pam_old, "svc/db");
    assert_eq!(r.status, 200);
    let checkout_id = json_of(&r)["checkout_id"].as_str().unwrap().to_owned();
    let old_fp = json_of(&call(&a.admin(), Method::GET, "/v1/sys/principals", None))["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p1")
        .unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();

    // Too early: the window is the last 30 days of 90.
    let (_, csr) = key_and_csr("p1");
    let r = call(
        &pam_old,
        Method::POST,
        "/v1/sys/certs/renew",
        Some(json!({ "csr_pem": csr })),
    );
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (409, Some("renewal_too_early")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.cert_expires_in, None, "no warning outside the window");

    // Day 70: every answer warns, and the metrics count who is due.
    a.set_clock(70 * DAY);
    let r = call(&pam_old, Method::GET, "/v1/checkouts", None);
    assert_eq!(r.status, 200);
    let left = r.cert_expires_in.expect("the warning header");
    assert!((19 * DAY..=20 * DAY + 3600).contains(&left), "{left}");
    let admin = a.client_at("admin", 70 * DAY);
    let m = String::from_utf8_lossy(&call(&admin, Method::GET, "/metrics", None).body).into_owned();
    for role in ["admin", "pam", "writer"] {
        assert_eq!(
            metric(
                &m,
                &format!("vaultd_client_certificates_renewal_due{{role=\"{role}\"}}")
            ),
            Some(1.0),
            "{role}: {m}"
        );
    }
    let admin_expiry = metric(&m, "vaultd_admin_certificate_expiry_timestamp_seconds ").unwrap();
    assert!(
        metric(&m, "vaultd_server_certificate_expiry_timestamp_seconds ").unwrap() > admin_expiry
    );

    // vaultctl warns on an ordinary command, then renews in place.
    let o = a.vaultctl("p1", &["lease", "list"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("warning: your client certificate expires in 19 days")
            || stderr.contains("warning: your client certificate expires in 20 days"),
        "{stderr}"
    );
    let o = a.vaultctl("p1", &["--json", "lease", "list"], None);
    let w: Value = serde_json::from_str(String::from_utf8_lossy(&o.stderr).trim()).unwrap();
    assert_eq!(w["warning"]["code"], "certificate_expiring");
    let o = a.vaultctl("p1", &["--json", "cert", "renew"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let renewed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(renewed["role"], "pam");
    assert_eq!(renewed["name"], "p1");
    assert_eq!(renewed["renewed"], old_fp.as_str());
    let new_fp = renewed["fingerprint"].as_str().unwrap().to_owned();
    assert_ne!(new_fp, old_fp);
    // As long as the old certificate lasted (90 days), from day 70.
    let not_after = time::OffsetDateTime::parse(
        renewed["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() + 70 * DAY;
    assert!((now + 89 * DAY..=now + 90 * DAY + 60).contains(&not_after));

    // The old certificate works until the new one is used...
    assert_eq!(
        call(&pam_old, Method::GET, "/v1/checkouts", None).status,
        200
    );
    let pam_new = a.client_at("p1", 70 * DAY);
    // ...whose first request retires it and takes over its checkout.
    let r = call(
        &pam_new,
        Method::POST,
        &format!("/v1/checkouts/{checkout_id}/checkin"),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.cert_expires_in, None,
        "the new certificate is not in its window"
    );
    let r = call(&pam_old, Method::GET, "/v1/checkouts", None);
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (403, Some("revoked_certificate"))
    );
    // The renewal kept the role: still pam, nothing more.
    assert_eq!(vault_e2e::checkout(&pam_new, "svc/db").status, 200);
    let r = vault_e2e::put(&pam_new, "svc/db", "mine", false);
    assert_eq!(r.status, 403);
    let m = String::from_utf8_lossy(&call(&admin, Method::GET, "/metrics", None).body).into_owned();
    assert_eq!(
        metric(&m, "vaultd_client_certificates_renewal_due{role=\"pam\"}"),
        Some(0.0)
    );

    // The admin renews too; at day 95 the unrenewed writer is locked out
    // (the handshake refuses its expired certificate) and the admin is not.
    renew(&a, "admin", &admin, 70 * DAY);
    a.set_clock(95 * DAY);
    let admin = a.client_at("admin", 95 * DAY);
    assert_eq!(
        call(&admin, Method::GET, "/v1/sys/principals", None).status,
        200
    );
    let w = a.client_at("w1", 95 * DAY);
    match runtime().block_on(w.request(Method::GET, "/v1/secrets", None)) {
        Err(_) => {}
        Ok(r) => assert_eq!(
            (r.status, r.error_code().as_deref()),
            (403, Some("certificate_expired"))
        ),
    }

    // The audit log has both steps of each renewal.
    let entries = a.audit_entries();
    let issue = entries
        .iter()
        .find(|e| {
            e.action == "cert.renew"
                && e.details.get("step").map(String::as_str) == Some("issue")
                && e.principal == "p1"
                && e.outcome == vault_core::audit::entry::Outcome::Success
        })
        .expect("cert.renew issue");
    assert_eq!(issue.details["renewed"], old_fp);
    assert_eq!(issue.details["fingerprint"], new_fp);
    let first_use = entries
        .iter()
        .find(|e| {
            e.action == "cert.renew"
                && e.details.get("step").map(String::as_str) == Some("first_use")
                && e.principal == "p1"
        })
        .expect("cert.renew first_use");
    assert_eq!(first_use.fingerprint, new_fp);
    assert_eq!(first_use.details["revoked"], old_fp);
    assert!(entries
        .iter()
        .any(|e| e.action == "cert.renew" && e.error == "renewal_too_early"));
}

#[test]
fn a_renewal_cannot_outlive_a_revocation_change_its_role_or_revive_an_expired_certificate() {
    let a = appliance("");
    a.issue("pam", "p2");
    a.issue("writer", "w2");
    a.issue("auditor", "au1");
    a.set_clock(65 * DAY);
    let owner = a.client_at("p2", 65 * DAY);
    // The thief has a copy of p2's key and certificate.
    let thief_copy = a.client_at("p2", 65 * DAY);

    // The CSR's subject is ignored: a renewal keeps name and role.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "admin");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "admin");
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    let r = call(
        &thief_copy,
        Method::POST,
        "/v1/sys/certs/renew",
        Some(json!({ "csr_pem": csr })),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let stolen = json_of(&r);
    assert_eq!(
        (stolen["name"].as_str(), stolen["role"].as_str()),
        (Some("p2"), Some("pam"))
    );
    let thief = Client::new_at(
        &a.addr(),
        &a.ca_pem(),
        Some((
            stolen["certificate_pem"].as_str().unwrap(),
            &key.serialize_pem(),
        )),
        65 * DAY,
    )
    .unwrap();
    let old_fp = stolen["renewed"].as_str().unwrap().to_owned();
    let r = call(&thief, Method::GET, "/v1/sys/principals", None);
    assert_eq!(r.status, 403, "a renewed pam certificate is no admin");
    // That first use retired the stolen certificate: its owner is locked
    // out and notices.
    let r = call(&owner, Method::GET, "/v1/checkouts", None);
    assert_eq!(r.error_code().as_deref(), Some("revoked_certificate"));
    // The admin revokes the stolen certificate, and with it the renewal.
    let admin = a.client_at("admin", 65 * DAY);
    let r = call(
        &admin,
        Method::POST,
        &format!("/v1/sys/principals/{old_fp}/revoke"),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = call(&thief, Method::GET, "/v1/checkouts", None);
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (403, Some("revoked_certificate"))
    );
    let revoke = a
        .audit_entries()
        .into_iter()
        .rfind(|e| e.action == "principal.revoke")
        .unwrap();
    assert!(
        revoke.details["revoked"].contains(stolen["fingerprint"].as_str().unwrap()),
        "{:?}",
        revoke.details
    );

    // A renewal whose answer was lost (its key never reached the
    // holder) is replaced by the next one: revoked, never usable.
    let w = a.client_at("w2", 65 * DAY);
    let (lost, _) = renew(&a, "w2", &w, 65 * DAY);
    let (second, second_client) = renew(&a, "w2", &w, 65 * DAY);
    assert_eq!(second["replaced"], json!([lost["fingerprint"]]));
    let rows = json_of(&call(&admin, Method::GET, "/v1/sys/principals", None));
    let revoked = |fp: &Value| {
        rows["principals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["fingerprint"] == *fp)
            .map(|p| p["revoked"].clone())
            .unwrap()
    };
    assert_eq!(revoked(&lost["fingerprint"]), true);
    assert_eq!(revoked(&second["fingerprint"]), false);
    assert_eq!(
        call(&second_client, Method::GET, "/v1/secrets", None).status,
        200
    );

    // An expired certificate cannot renew: past day 90 the handshake
    // refuses it (or the pipeline does). (The admin renews to keep the
    // clock observable.)
    renew(&a, "admin", &admin, 65 * DAY);
    a.set_clock(100 * DAY);
    let late = a.client_at("au1", 100 * DAY);
    let (_, csr) = key_and_csr("au1");
    match runtime().block_on(late.request(
        Method::POST,
        "/v1/sys/certs/renew",
        Some(&json!({ "csr_pem": csr })),
    )) {
        Err(_) => {}
        Ok(r) => assert_eq!(r.error_code().as_deref(), Some("certificate_expired")),
    }
}

/// Reads the served server certificate, as an admin renewing its own
/// certificate every 80 days to keep up with the clock.
fn server_cert(c: &Client) -> Value {
    let r = call(c, Method::GET, "/v1/sys/server-cert", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    json_of(&r)
}

#[test]
fn the_server_certificate_is_reissued_before_it_expires_and_on_request() {
    // Reissued when fewer than 365 days are left (of 825).
    let mut a = appliance("[tls]\nserver_cert_renew_days = 365\n");
    let first = server_cert(&a.admin());
    let f0 = first["fingerprint"].as_str().unwrap().to_owned();
    assert!(first["names"]
        .as_array()
        .unwrap()
        .contains(&json!("127.0.0.1")));

    // Keep an admin alive across 470 days by renewing it.
    let mut admin = a.admin();
    let mut day = 0;
    while day < 470 {
        day = (day + 80).min(470);
        a.set_clock(day * DAY);
        admin = a.client_at("admin", day * DAY);
        if day < 470 {
            admin = renew(&a, "admin", &admin, day * DAY).1;
        }
    }
    // Due now: the renewer replaces it within seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let reissued = loop {
        let v = server_cert(&admin);
        if v["fingerprint"] != f0.as_str() {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "not reissued: {v}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(reissued["names"], first["names"], "the same names");
    assert!(reissued["expires_in_seconds"].as_i64().unwrap() > 800 * DAY);
    let on_disk = std::fs::read_to_string(a.dir.path().join("data/server.pem")).unwrap();
    let der = vaultd::tls::certs("server certificate", &on_disk).unwrap();
    assert_eq!(
        vaultd::ca::fingerprint(der[0].as_ref()),
        reissued["fingerprint"].as_str().unwrap()
    );
    let entry = a
        .audit_entries()
        .into_iter()
        .find(|e| e.action == "cert.server_reissue")
        .expect("cert.server_reissue");
    assert_eq!(entry.details["trigger"], "expiry");
    assert_eq!(entry.details["previous"], f0);
    assert_eq!(entry.principal, vaultd::audit::Who::system().principal);
    let status = json_of(&call(&admin, Method::GET, "/v1/sys/seal-status", None));
    assert_eq!(status["server_certificate"]["reissue_due"], false);

    // On request, with other names; bad names and other roles refused.
    let r = call(
        &admin,
        Method::POST,
        "/v1/sys/server-cert",
        Some(json!({"names": ["vault.example.test", "10.1.2.3"]})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let named = json_of(&r);
    for n in [
        "localhost",
        "127.0.0.1",
        "::1",
        "vault.example.test",
        "10.1.2.3",
    ] {
        assert!(
            named["names"].as_array().unwrap().contains(&json!(n)),
            "{named}"
        );
    }
    let r = call(
        &admin,
        Method::POST,
        "/v1/sys/server-cert",
        Some(json!({"names": ["*.example.test"]})),
    );
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (400, Some("invalid_names"))
    );
    let pam = a.issue_at("pam", "p3", 470 * DAY);
    let r = call(&pam, Method::POST, "/v1/sys/server-cert", Some(json!({})));
    assert_eq!(r.status, 403);
    assert_eq!(server_cert(&admin)["fingerprint"], named["fingerprint"]);
    let admin_entry = a
        .audit_entries()
        .into_iter()
        .rfind(|e| {
            e.action == "cert.server_reissue"
                && e.outcome == vault_core::audit::entry::Outcome::Success
        })
        .unwrap();
    assert_eq!(admin_entry.details["trigger"], "admin");
    assert!(admin_entry.details["names"].contains("vault.example.test"));

    // A reissue interrupted before its key was renamed is discarded at
    // start; the pair in place is served.
    a.stop();
    std::fs::write(a.dir.path().join("data/server-key.pem.new"), "partial").unwrap();
    std::fs::write(a.dir.path().join("data/server.pem.new"), "partial").unwrap();
    a.spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = runtime().block_on(admin.request(Method::GET, "/v1/sys/server-cert", None)) {
            assert_eq!(json_of(&r)["fingerprint"], named["fingerprint"]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", a.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!a.dir.path().join("data/server-key.pem.new").exists());
    assert!(!a.dir.path().join("data/server.pem.new").exists());
}
