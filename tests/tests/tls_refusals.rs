//! Certificates the appliance must refuse: none, another CA, expired,
//! unregistered, revoked, and a valid one with the wrong role.
//!
//! This binary signs certificates in-process with the appliance's CA key
//! in its SoftHSM token (to make an expired one), so it sets SOFTHSM2_CONF
//! once, before any PKCS#11 call, and holds a single test.

use hyper::Method;
use time::{Duration, OffsetDateTime};
use vault_client::Client;
use vault_core::policy::Role;
use vault_core::secret::Pin;
use vault_e2e::{checkout, json_of, put, req, runtime, Appliance, Options, PIN, TOKEN};
use vault_hsm::softhsm::SOFTHSM2_MODULE;
use vault_hsm::{Pkcs11Config, Pkcs11Signer};
use vaultd::ca;

fn refused(c: &Client) -> Result<u16, String> {
    // TLS 1.3 reports a refused client certificate on the first read, so a
    // refusal may surface at connect or at the request.
    runtime()
        .block_on(async { c.request(Method::GET, "/v1/sys/seal-status", None).await })
        .map(|r| r.status)
        .map_err(|e| e.to_string())
}

#[test]
fn unacceptable_certificates_are_refused_and_logged() {
    let a = Appliance::start(Options::default());
    std::env::set_var("SOFTHSM2_CONF", a.hsm.conf_path());
    let writer = a.issue("writer", "w1");
    assert_eq!(put(&writer, "t/s", "tls-secret", false).status, 200);
    let ca_pem = a.ca_pem();

    // 1. No client certificate.
    let anon = Client::new(&a.addr(), &ca_pem, None).unwrap();
    assert!(refused(&anon).is_err(), "no client cert accepted");

    // 2. A certificate from another CA (same subject and role as a real one).
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut other_params = rcgen::CertificateParams::default();
    other_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    other_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vaultd appliance CA");
    let other_ca = rcgen::CertifiedIssuer::self_signed(other_params, other_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut lp = rcgen::CertificateParams::default();
    lp.distinguished_name.push(rcgen::DnType::CommonName, "p1");
    lp.distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "pam");
    lp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = lp.signed_by(&leaf_key, &other_ca).unwrap();
    let foreign = Client::new(
        &a.addr(),
        &ca_pem,
        Some((&leaf.pem(), &leaf_key.serialize_pem())),
    )
    .unwrap();
    assert!(refused(&foreign).is_err(), "foreign CA accepted");

    // 3. Expired and 4. unregistered certificates, signed by the real CA key in the token.
    let signer = Pkcs11Signer::open(
        &Pkcs11Config {
            module: SOFTHSM2_MODULE.into(),
            token_label: TOKEN.into(),
            key_label: "vaultd-ca".into(),
        },
        &Pin::new(PIN.into()),
        "vaultd-ca",
    )
    .unwrap();
    let key = ca::HsmCaKey::new(signer);
    let issuer = ca::issuer(&ca_pem, &key).unwrap();
    let now = OffsetDateTime::now_utc();
    let (expired, expired_key) = ca::issue_client_keypair(
        &issuer,
        "p-old",
        Role::Pam,
        now - Duration::days(30),
        now - Duration::days(1),
    )
    .unwrap();
    let expired_client = Client::new(
        &a.addr(),
        &ca_pem,
        Some((&expired.cert_pem, expired_key.expose_pem())),
    )
    .unwrap();
    assert!(
        refused(&expired_client).is_err(),
        "expired certificate accepted"
    );

    let (unreg, unreg_key) = ca::issue_client_keypair(
        &issuer,
        "p-ghost",
        Role::Pam,
        now - Duration::minutes(1),
        now + Duration::days(1),
    )
    .unwrap();
    let ghost = Client::new(
        &a.addr(),
        &ca_pem,
        Some((&unreg.cert_pem, unreg_key.expose_pem())),
    )
    .unwrap();
    let r = checkout(&ghost, "t/s");
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code().as_deref(), Some("unknown_principal"));

    // 5. Wrong role at the checkout endpoint.
    let r = checkout(&writer, "t/s");
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code().as_deref(), Some("forbidden"));

    // 6. Revoked.
    let pam = a.issue("pam", "p-revoked");
    assert_eq!(checkout(&pam, "t/s").status, 200);
    let list = json_of(&req(&a.admin(), Method::GET, "/v1/sys/principals", None));
    let fp = list["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p-revoked")
        .unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = req(
        &a.admin(),
        Method::POST,
        &format!("/v1/sys/principals/{fp}/revoke"),
        None,
    );
    assert_eq!(r.status, 200);
    let r = checkout(&pam, "t/s");
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code().as_deref(), Some("revoked_certificate"));

    // The last admin cannot be revoked; a name keeps its role.
    let list = json_of(&req(&a.admin(), Method::GET, "/v1/sys/principals", None));
    let admin_fp = list["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = req(
        &a.admin(),
        Method::POST,
        &format!("/v1/sys/principals/{admin_fp}/revoke"),
        None,
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code().as_deref(), Some("last_admin"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, "w1");
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    let r = req(
        &a.admin(),
        Method::POST,
        "/v1/sys/certs",
        Some(serde_json::json!({"name": "w1", "role": "pam", "csr_pem": csr})),
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code().as_deref(), Some("name_in_use"));

    // Refusals are logged and counted; none of them disclosed the value.
    let log = a.log();
    assert!(log.contains("TLS handshake refused"), "{log}");
    assert!(log.contains("unknown principal"), "{log}");
    assert!(log.contains("permission denied"), "{log}");
    assert!(!log.contains("tls-secret"));
    let m =
        String::from_utf8(req(&a.admin(), Method::GET, "/metrics", None).body.to_vec()).unwrap();
    let failures: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("vaultd_tls_handshake_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 3, "{m}");
}
