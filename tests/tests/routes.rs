//! Every route × every role, against the daemon run in this process with
//! `vaultd::run(config, listener, shutdown)` on a port-0 listener (real
//! rustls mTLS over loopback, a real SoftHSM token, a real SQLite file).
//!
//! The expectations below are written by hand, from docs/API.md's roles, not
//! derived from the route table or the permission table: a route added to
//! the table without a line here fails the test, and so does a line here
//! that names no route. For every refusal the test also reads the newest
//! audit entry from the data file: no refusal goes unrecorded. A client
//! without a certificate never gets past the TLS handshake, on any route.

use std::collections::BTreeMap;

use hyper::Method;
use serde_json::json;
use vault_client::Client;
use vault_core::audit::entry::{Entry, Outcome};
use vault_e2e::{ok, Appliance, Options};
use vaultd::api::routes::{Route, TABLE};

/// Who may call a route: `Public` (anyone with or without a certificate),
/// or these roles.
#[derive(Debug, Clone, Copy)]
enum Who {
    Public,
    Roles(&'static [&'static str]),
}

const ROLES: [&str; 6] = ["admin", "writer", "pam", "auditor", "custodian", "metrics"];

fn expectations() -> BTreeMap<(&'static str, &'static str), Who> {
    use Who::*;
    const ALL: &[&str] = &["admin", "writer", "pam", "auditor", "custodian"];
    [
        (("GET", "/v1/sys/health"), Public),
        (("GET", "/v1/sys/seal-status"), Public),
        (("GET", "/v1/openapi.json"), Public),
        (("GET", "/metrics"), Roles(&["admin", "auditor", "metrics"])),
        (("POST", "/v1/sys/unseal"), Roles(&["admin"])),
        (("POST", "/v1/sys/certs"), Roles(&["admin"])),
        // Every role renews its own certificate.
        (("POST", "/v1/sys/certs/renew"), Roles(&ROLES)),
        (("GET", "/v1/sys/server-cert"), Roles(&["admin"])),
        (("POST", "/v1/sys/server-cert"), Roles(&["admin"])),
        (("GET", "/v1/sys/principals"), Roles(&["admin"])),
        (("POST", "/v1/sys/principals/revoke"), Roles(&["admin"])),
        (
            ("POST", "/v1/sys/principals/{fingerprint}/revoke"),
            Roles(&["admin"]),
        ),
        (("POST", "/v1/sys/update"), Roles(&["admin"])),
        (("GET", "/v1/sys/update"), Roles(&["admin"])),
        (("GET", "/v1/sys/keyring"), Roles(&["admin"])),
        (("POST", "/v1/sys/keyring/rotate"), Roles(&["admin"])),
        (("GET", "/v1/secrets"), Roles(ALL)),
        (("GET", "/v1/secrets/{*path}"), Roles(ALL)),
        (("PUT", "/v1/secrets/{*path}"), Roles(&["writer"])),
        (("POST", "/v1/secrets/{*path}"), Roles(&["pam"])),
        (("DELETE", "/v1/secrets/{*path}"), Roles(&["admin"])),
        (("GET", "/v1/rotation/{*path}"), Roles(&["admin"])),
        (("PUT", "/v1/rotation/{*path}"), Roles(&["admin"])),
        (("DELETE", "/v1/rotation/{*path}"), Roles(&["admin"])),
        (("POST", "/v1/rotation/{*path}"), Roles(&["admin"])),
        (("POST", "/v1/checkouts/{id}/checkin"), Roles(&["pam"])),
        (("POST", "/v1/checkouts/{id}/renew"), Roles(&["pam"])),
        (("POST", "/v1/checkouts/{id}/recordings"), Roles(&["pam"])),
        (("POST", "/v1/checkouts/{id}/revoke"), Roles(&["admin"])),
        (
            ("GET", "/v1/checkouts"),
            Roles(&["admin", "pam", "auditor"]),
        ),
        (
            ("GET", "/v1/custodians"),
            Roles(&["admin", "auditor", "custodian"]),
        ),
        (("POST", "/v1/custodians"), Roles(&["admin"])),
        (
            ("GET", "/v1/grants"),
            Roles(&["admin", "auditor", "custodian"]),
        ),
        (("POST", "/v1/grants"), Roles(&["admin"])),
        (("POST", "/v1/grants/remove"), Roles(&["admin"])),
        (("DELETE", "/v1/custodians/{name}"), Roles(&["admin"])),
        (("PUT", "/v1/custodians/{name}/groups"), Roles(&["admin"])),
        (("PUT", "/v1/policies/{*path}"), Roles(&["admin"])),
        (
            ("GET", "/v1/policies"),
            Roles(&["admin", "auditor", "custodian"]),
        ),
        (
            ("GET", "/v1/requests"),
            Roles(&["admin", "pam", "auditor", "custodian"]),
        ),
        (
            ("GET", "/v1/requests/{id}"),
            Roles(&["admin", "pam", "auditor", "custodian"]),
        ),
        (("POST", "/v1/requests/{id}/vote"), Roles(&["custodian"])),
        (("POST", "/v1/requests/{id}/collect"), Roles(&["pam"])),
        (("POST", "/v1/requests/{id}/apply"), Roles(&["admin"])),
        (
            ("GET", "/v1/governance"),
            Roles(&["admin", "auditor", "custodian"]),
        ),
        (("POST", "/v1/governance/genesis"), Roles(&["admin"])),
        (("PUT", "/v1/governance/rule"), Roles(&["admin"])),
        (
            ("GET", "/v1/sys/recovery"),
            Roles(&["admin", "auditor", "custodian"]),
        ),
        (("POST", "/v1/sys/recovery"), Roles(&["admin"])),
        (("GET", "/v1/audit/checkpoint"), Roles(&["auditor"])),
        (("POST", "/v1/audit/checkpoint"), Roles(&["auditor"])),
        (("GET", "/v1/audit/public-key"), Roles(&["auditor"])),
        (("GET", "/v1/audit/entries"), Roles(&["auditor"])),
        (("GET", "/v1/audit/proof/inclusion"), Roles(&["auditor"])),
        (("GET", "/v1/audit/proof/consistency"), Roles(&["auditor"])),
        (("POST", "/v1/audit/hash"), Roles(&["auditor"])),
    ]
    .into_iter()
    .collect()
}

/// A concrete URL for a route pattern.
fn url(r: &Route) -> String {
    r.path
        .replace("{*path}", "routes/x")
        .replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{fingerprint}", &"0".repeat(64))
        .replace("{name}", "nobody")
}

fn key_and_csr(name: &str) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

fn last_entry(a: &Appliance) -> Entry {
    let c = rusqlite::Connection::open_with_flags(
        a.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let bytes: Vec<u8> = c
        .query_row(
            "SELECT entry FROM audit_log ORDER BY idx DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    Entry::parse(&bytes).unwrap()
}

#[test]
fn every_route_with_every_role_gives_the_expected_answer_and_audit_entry() {
    let routes: std::collections::BTreeSet<(&str, &str)> =
        TABLE.iter().map(|r| (r.method.as_str(), r.path)).collect();
    let expected: std::collections::BTreeSet<(&str, &str)> =
        expectations().keys().copied().collect();
    let unexpected: Vec<_> = routes.difference(&expected).collect();
    assert!(
        unexpected.is_empty(),
        "routes with no expectation in this test: {unexpected:?}"
    );
    let missing: Vec<_> = expected.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "expectations for routes that do not exist: {missing:?}"
    );

    // A box: token, config, `vaultd init` (the real binary), then the daemon
    // in this process.
    let a = Appliance::create(Options {
        mode: "pkcs11",
        ..Options::default()
    });
    ok(&a.vaultd(&[
        "--config",
        a.config.to_str().unwrap(),
        "init",
        "--out",
        a.certs.to_str().unwrap(),
    ]));
    // The SoftHSM library reads its configuration from the environment of
    // this process; nothing else in this test binary uses another token.
    std::env::set_var("SOFTHSM2_CONF", a.hsm.conf_path());
    let config = vaultd::config::Config::load(&a.config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(vaultd::run(config, listener, async {
        let _ = stopped.await;
    }));
    let ca = a.ca_pem();
    let client = |cert: &str, key: &str| Client::new(&addr, &ca, Some((cert, key))).unwrap();
    let admin = client(
        &std::fs::read_to_string(a.certs.join("admin.pem")).unwrap(),
        &std::fs::read_to_string(a.certs.join("admin-key.pem")).unwrap(),
    );
    let send = |c: &Client, m: &Method, path: &str| {
        let body = (*m != Method::GET).then(|| json!({}));
        rt.block_on(async {
            let mut last = String::new();
            for _ in 0..200 {
                match c.request(m.clone(), path, body.as_ref()).await {
                    Ok(r) => return r,
                    Err(e) => {
                        last = e.to_string();
                        tokio::time::sleep(std::time::Duration::from_millis(25)).await
                    }
                }
            }
            panic!("{m} {path}: the daemon does not answer: {last}");
        })
    };
    let s = send(&admin, &Method::GET, "/v1/sys/seal-status");
    assert_eq!(s.json().unwrap()["sealed"], false, "the daemon unsealed");

    // One principal of every role, and a revoked one.
    let mut clients: Vec<(String, Client)> = vec![("admin".into(), admin.clone())];
    let issue = |role: &str, name: &str| -> (Client, String) {
        let (key, csr) = key_and_csr(name);
        let r = rt
            .block_on(admin.request(
                Method::POST,
                "/v1/sys/certs",
                // A pam certificate with a `*` grant: this test is about
                // roles, not grants (tests/grants.rs).
                Some(&vault_e2e::pam_body(name, role, &csr)),
            ))
            .unwrap();
        assert_eq!(r.status, 200, "issue {role}");
        let v = r.json().unwrap();
        let cert = v["certificate_pem"].as_str().unwrap().to_owned();
        let fp = v["fingerprint"].as_str().unwrap_or_default().to_owned();
        (client(&cert, &key.serialize_pem()), fp)
    };
    for role in &ROLES[1..] {
        clients.push((role.to_string(), issue(role, &format!("r-{role}")).0));
    }
    let (revoked, fp) = issue("pam", "r-revoked");
    let r = send(
        &admin,
        &Method::POST,
        &format!("/v1/sys/principals/{fp}/revoke"),
    );
    assert_eq!(r.status, 200);
    let anonymous = Client::new(&addr, &ca, None).unwrap();

    let mut checked = 0;
    for route in TABLE.iter() {
        let who = expectations()[&(route.method.as_str(), route.path)];
        let path = url(route);
        for (role, c) in &clients {
            let r = send(c, &route.method, &path);
            let allowed = match who {
                Who::Public => true,
                Who::Roles(rs) => rs.contains(&role.as_str()),
            };
            let what = format!("{} {} as {role}", route.method, route.path);
            if allowed {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{what}: refused ({}): {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            } else {
                assert_eq!(r.status, 403, "{what}");
                assert_eq!(r.error_code().as_deref(), Some("forbidden"), "{what}");
                let e = last_entry(&a);
                assert_eq!(
                    (e.action.as_str(), e.error.as_str(), e.outcome),
                    (route.audit.as_str(), "forbidden", Outcome::Denied),
                    "{what}: audit entry"
                );
                let name = if role == "admin" {
                    "admin".into()
                } else {
                    format!("r-{role}")
                };
                assert_eq!(e.principal, name, "{what}: who");
            }
            checked += 1;
        }
        // No certificate: the TLS handshake itself is refused.
        let r = rt.block_on(anonymous.request(route.method.clone(), &path, None));
        assert!(
            r.is_err(),
            "{} {} without a client certificate was answered",
            route.method,
            route.path
        );
        // A revoked certificate: the handshake succeeds, the principal does not.
        let r = send(&revoked, &route.method, &path);
        let what = format!("{} {} with a revoked certificate", route.method, route.path);
        if matches!(who, Who::Public) {
            assert!(r.status != 401 && r.status != 403, "{what}: {}", r.status);
        } else {
            assert_eq!(r.status, 403, "{what}");
            assert_eq!(
                r.error_code().as_deref(),
                Some("revoked_certificate"),
                "{what}"
            );
            let e = last_entry(&a);
            assert_eq!(
                (e.action.as_str(), e.error.as_str(), e.outcome),
                (route.audit.as_str(), "revoked_certificate", Outcome::Denied),
                "{what}: audit entry"
            );
        }
        checked += 2;
    }
    assert_eq!(checked, TABLE.len() * (ROLES.len() + 2));
    let _ = stop.send(());
    rt.block_on(server).unwrap().unwrap();
}

/// The routes that answer while the vault is sealed, written by hand (from
/// docs/API.md), not read from the table: every other route is refused by
/// the pipeline with 503 `sealed`, for a caller allowed to call it, and the
/// refusal is audited under the route's action.
const SERVED_WHILE_SEALED: &[(&str, &str)] = &[
    ("GET", "/v1/sys/health"),
    ("GET", "/v1/sys/seal-status"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/metrics"),
    ("POST", "/v1/sys/unseal"),
    ("GET", "/v1/sys/principals"),
    ("GET", "/v1/sys/server-cert"),
    ("POST", "/v1/sys/principals/revoke"),
    ("POST", "/v1/sys/principals/{fingerprint}/revoke"),
    ("POST", "/v1/sys/update"),
    ("GET", "/v1/sys/update"),
    ("GET", "/v1/sys/recovery"),
    ("GET", "/v1/audit/checkpoint"),
    ("POST", "/v1/audit/checkpoint"),
    ("GET", "/v1/audit/public-key"),
    ("GET", "/v1/audit/entries"),
    ("GET", "/v1/audit/proof/inclusion"),
    ("GET", "/v1/audit/proof/consistency"),
];

#[test]
fn a_sealed_vault_refuses_exactly_the_routes_that_need_it_unsealed() {
    use vault_e2e::req;
    let mut a = Appliance::start(Options::default());
    let mut clients: BTreeMap<&str, Client> = BTreeMap::new();
    clients.insert("admin", a.admin());
    for role in &ROLES[1..] {
        clients.insert(role, a.issue(role, &format!("s-{role}")));
    }
    // Another boot measurement: the TPM refuses the root key, the daemon
    // starts sealed.
    a.stop();
    vault_tpm::extend_pcr(&a.tpm.tcti(), 7, b"a different bootloader").unwrap();
    a.spawn();
    a.wait_ready();
    let s = req(&clients["admin"], Method::GET, "/v1/sys/seal-status", None);
    assert_eq!(s.json().unwrap()["sealed"], true, "{}", a.log());

    for route in TABLE.iter() {
        let key = (route.method.as_str(), route.path);
        let role = match expectations()[&key] {
            Who::Public => "admin",
            Who::Roles(rs) => rs[0],
        };
        let body = (route.method != Method::GET).then(|| json!({}));
        let r = req(&clients[role], route.method.clone(), &url(route), body);
        let what = format!("{} {} as {role} while sealed", route.method, route.path);
        if SERVED_WHILE_SEALED.contains(&key) {
            assert_ne!(r.error_code().as_deref(), Some("sealed"), "{what}");
        } else {
            assert_eq!(
                (r.status, r.error_code().as_deref()),
                (503, Some("sealed")),
                "{what}: {}",
                String::from_utf8_lossy(&r.body)
            );
            let e = last_entry(&a);
            assert_eq!(
                (e.action.as_str(), e.error.as_str()),
                (route.audit.as_str(), "sealed"),
                "{what}: audit entry"
            );
        }
    }
}
