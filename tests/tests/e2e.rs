//! The real vaultd binary, its own swtpm and SoftHSM token, real mTLS.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hyper::Method;
use serde_json::json;
use vault_client::Client;
use vault_e2e::{checkout, json_of, put, req, runtime, Appliance, Options};

#[test]
fn checkout_round_trip_and_separation_of_duties() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "pam01");
    let pam2 = a.issue("pam", "pam02");
    let auditor = a.issue("auditor", "aud1");
    let admin = a.admin();

    let r = put(&writer, "prod/db/root", "s3cr3t-value", false);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["version"], 1);

    let r = checkout(&pam, "prod/db/root");
    assert_eq!(r.status, 200);
    let v = json_of(&r);
    assert_eq!(v["value"], "s3cr3t-value");
    assert_eq!(v["version"], 1);
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    let id = v["checkout_id"].as_str().unwrap().to_owned();

    // Metadata never carries the value, for any role.
    for c in [&writer, &pam, &auditor, &admin] {
        let r = req(c, Method::GET, "/v1/secrets/prod/db/root", None);
        assert_eq!(r.status, 200);
        assert!(!String::from_utf8_lossy(&r.body).contains("s3cr3t-value"));
        assert_eq!(json_of(&r)["metadata"]["owner"], "e2e");
    }
    // Only pam checks out; only writer writes.
    for c in [&writer, &admin, &auditor] {
        let r = checkout(c, "prod/db/root");
        assert_eq!(r.status, 403);
        assert_eq!(r.error_code().as_deref(), Some("forbidden"));
        assert!(!String::from_utf8_lossy(&r.body).contains("s3cr3t"));
    }
    for c in [&pam, &admin, &auditor] {
        assert_eq!(put(c, "prod/db/root", "x", false).status, 403);
    }
    // Checkin belongs to the principal that checked out.
    let r = req(
        &pam2,
        Method::POST,
        &format!("/v1/checkouts/{id}/checkin"),
        None,
    );
    assert_eq!(r.status, 403);
    let r = req(
        &pam,
        Method::POST,
        &format!("/v1/checkouts/{id}/checkin"),
        None,
    );
    assert_eq!(r.status, 200);
    let r = req(
        &pam,
        Method::POST,
        &format!("/v1/checkouts/{id}/checkin"),
        None,
    );
    assert_eq!(r.error_code().as_deref(), Some("already_checked_in"));

    // Exclusive secrets: one checkout at a time.
    assert_eq!(put(&writer, "prod/cloud/root", "root-pw", true).status, 200);
    let r = checkout(&pam, "prod/cloud/root");
    assert_eq!(r.status, 200);
    let id = json_of(&r)["checkout_id"].as_str().unwrap().to_owned();
    let r = checkout(&pam2, "prod/cloud/root");
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code().as_deref(), Some("checked_out"));
    assert!(!String::from_utf8_lossy(&r.body).contains("root-pw"));
    req(
        &pam,
        Method::POST,
        &format!("/v1/checkouts/{id}/checkin"),
        None,
    );
    assert_eq!(checkout(&pam2, "prod/cloud/root").status, 200);

    // New versions; list by prefix.
    assert_eq!(
        json_of(&put(&writer, "prod/db/root", "v2", false))["version"],
        2
    );
    assert_eq!(json_of(&checkout(&pam, "prod/db/root"))["value"], "v2");
    let r = req(&auditor, Method::GET, "/v1/secrets?prefix=prod/", None);
    let v = json_of(&r);
    let paths: Vec<_> = v["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["prod/cloud/root", "prod/db/root"]);
    assert_eq!(checkout(&pam, "nope/missing").status, 404);

    // The access log never contains a secret value.
    let log = a.log();
    assert!(log.contains("checkout"), "log: {log}");
    for secret in ["s3cr3t-value", "root-pw", "\"v2\""] {
        assert!(!log.contains(secret), "secret {secret} in log");
    }
}

#[test]
fn bad_input_gets_stable_json_errors() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    let rt = runtime();
    let raw = |c: &Client, m: Method, path: &str, body: &str| {
        rt.block_on(async {
            let mut conn = c.connect().await.unwrap();
            // Send a body that is not valid JSON through a Value string hack:
            // the client only sends JSON, so use a string that parses as JSON
            // but has the wrong shape when `body` is not JSON.
            let v: serde_json::Value =
                serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.into()));
            conn.request(m, path, Some(&v)).await.unwrap()
        })
    };
    let cases: Vec<(Client, Method, String, String, u16, &str)> = vec![
        (
            writer.clone(),
            Method::PUT,
            "/v1/secrets/a//b".into(),
            r#"{"value":"x"}"#.into(),
            400,
            "invalid_path",
        ),
        (
            writer.clone(),
            Method::PUT,
            "/v1/secrets/a/../b".into(),
            r#"{"value":"x"}"#.into(),
            400,
            "invalid_path",
        ),
        (
            writer.clone(),
            Method::PUT,
            "/v1/secrets/ok".into(),
            r#"{"valu":"x"}"#.into(),
            400,
            "invalid_json",
        ),
        (
            writer.clone(),
            Method::PUT,
            "/v1/secrets/ok".into(),
            r#"not json"#.into(),
            400,
            "invalid_json",
        ),
        (
            writer.clone(),
            Method::PUT,
            "/v1/secrets/ok".into(),
            r#"{"value":"x","metadata":[1]}"#.into(),
            400,
            "invalid_metadata",
        ),
        (
            writer.clone(),
            Method::PUT,
            "/v1/secrets/ok".into(),
            format!(r#"{{"value":"{}"}}"#, "x".repeat(70_000)),
            413,
            "value_too_large",
        ),
        (
            writer.clone(),
            Method::PUT,
            "/v1/secrets/ok".into(),
            format!(r#"{{"value":"{}"}}"#, "x".repeat(200_000)),
            413,
            "body_too_large",
        ),
        (
            pam.clone(),
            Method::POST,
            "/v1/secrets/ok/checkout".into(),
            r#"{"reason":""}"#.into(),
            400,
            "invalid_reason",
        ),
        (
            pam.clone(),
            Method::POST,
            "/v1/secrets/ok/checkout".into(),
            r#"{"reason":"r","ttl_seconds":0}"#.into(),
            400,
            "invalid_ttl",
        ),
        (
            pam.clone(),
            Method::POST,
            "/v1/secrets/ok/checkout".into(),
            r#"{"reason":"r","ttl_seconds":99999999}"#.into(),
            400,
            "invalid_ttl",
        ),
        (
            pam.clone(),
            Method::POST,
            "/v1/checkouts/not-a-uuid/checkin".into(),
            "{}".into(),
            400,
            "invalid_checkout_id",
        ),
        (
            pam.clone(),
            Method::GET,
            "/v1/nope".into(),
            "{}".into(),
            404,
            "not_found",
        ),
        (
            pam.clone(),
            Method::DELETE,
            "/v1/sys/health".into(),
            "{}".into(),
            405,
            "method_not_allowed",
        ),
    ];
    for (c, m, path, body, status, code) in cases {
        let r = raw(&c, m.clone(), &path, &body);
        assert_eq!(
            r.status,
            status,
            "{m} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.error_code().as_deref(), Some(code), "{m} {path}");
    }
    // An error message never echoes the submitted value.
    let r = raw(
        &writer,
        Method::PUT,
        "/v1/secrets/ok",
        r#"{"value":12345678901,"x":"hunter2"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(!String::from_utf8_lossy(&r.body).contains("hunter2"));
    // The OpenAPI document served is the one built from the route table
    // (vaultd/server/tests/openapi.rs checks it against the router).
    let r = req(&pam, Method::GET, "/v1/openapi.json", None);
    let doc = json_of(&r);
    assert_eq!(doc["openapi"], "3.0.3");
    assert_eq!(
        doc,
        vaultd::api::openapi_document(&vaultd::api::routes::TABLE)
    );
    assert_eq!(
        doc["paths"]["/v1/governance/genesis"]["post"]["x-roles"],
        json!(["admin"])
    );
    // Metrics count errors by code.
    let prom = a.issue("metrics", "prom");
    let m = String::from_utf8(req(&prom, Method::GET, "/metrics", None).body.to_vec()).unwrap();
    assert!(
        m.contains("vaultd_errors_total{code=\"invalid_path\"} 2"),
        "{m}"
    );
}

#[test]
fn restart_unseals_automatically_and_keeps_values() {
    let mut a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/a", "alpha", false).status, 200);
    a.restart();
    let r = req(&pam, Method::GET, "/v1/sys/seal-status", None);
    assert_eq!(json_of(&r)["sealed"], false, "{}", a.log());
    assert_eq!(json_of(&checkout(&pam, "svc/a"))["value"], "alpha");
}

#[test]
fn pcr_change_leaves_the_vault_sealed() {
    let mut a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/a", "alpha", false).status, 200);
    a.stop();
    vault_tpm::extend_pcr(&a.tpm.tcti(), 7, b"a different bootloader").unwrap();
    a.spawn();
    a.wait_ready();
    let s = json_of(&req(&pam, Method::GET, "/v1/sys/seal-status", None));
    assert_eq!(s["sealed"], true);
    assert_eq!(s["reason"]["code"], "tpm_pcr_mismatch", "{s}");
    let r = checkout(&pam, "svc/a");
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code().as_deref(), Some("sealed"));
    assert!(!String::from_utf8_lossy(&r.body).contains("alpha"));
    assert_eq!(put(&writer, "svc/b", "beta", false).status, 503);
    let h = req(&pam, Method::GET, "/v1/sys/health", None);
    assert_eq!(h.status, 503);
    // Unseal retry still fails with the same cause.
    let r = req(&a.admin(), Method::POST, "/v1/sys/unseal", None);
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code().as_deref(), Some("tpm_pcr_mismatch"));
}

#[test]
fn wrong_pin_is_its_own_reason_and_unseal_retries_after_the_fix() {
    let mut a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/a", "alpha", false).status, 200);
    a.stop();
    std::fs::write(a.pin_file(), "999999\n").unwrap();
    a.spawn();
    a.wait_ready();
    let s = json_of(&req(&pam, Method::GET, "/v1/sys/seal-status", None));
    assert_eq!(s["reason"]["code"], "pkcs11_pin_incorrect", "{s}");
    assert!(!s.to_string().contains("999999"), "PIN in status");
    assert!(!a.log().contains("999999"), "PIN in log");
    assert_eq!(checkout(&pam, "svc/a").status, 503);
    // Only admin may ask for an unseal.
    assert_eq!(req(&pam, Method::POST, "/v1/sys/unseal", None).status, 403);
    std::fs::write(a.pin_file(), format!("{}\n", vault_e2e::PIN)).unwrap();
    let r = req(&a.admin(), Method::POST, "/v1/sys/unseal", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&checkout(&pam, "svc/a"))["value"], "alpha");
}

#[test]
fn missing_tpm_leaves_the_vault_sealed() {
    let mut a = Appliance::start(Options::default());
    let pam = a.issue("pam", "p1");
    a.stop();
    a.tpm.stop();
    a.spawn();
    a.wait_ready();
    let s = json_of(&req(&pam, Method::GET, "/v1/sys/seal-status", None));
    assert_eq!(s["reason"]["code"], "tpm_unavailable", "{s}");
    assert_eq!(checkout(&pam, "x").error_code().as_deref(), Some("sealed"));
}

#[test]
fn flipped_ciphertext_byte_is_an_integrity_error() {
    let mut a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "svc/a", "alpha", false).status, 200);
    assert_eq!(put(&writer, "svc/b", "bravo", false).status, 200);
    a.stop();
    {
        let c = rusqlite::Connection::open(a.db_path()).unwrap();
        let mut ct: Vec<u8> = c
            .query_row(
                "SELECT ciphertext FROM secret_versions WHERE path = 'svc/a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n = ct.len();
        ct[n - 5] ^= 0x01;
        c.execute(
            "UPDATE secret_versions SET ciphertext = ?1 WHERE path = 'svc/a'",
            [ct],
        )
        .unwrap();
        // Swap svc/b's row content onto svc/c's identity: must not decrypt either.
        c.execute(
            "INSERT INTO secrets SELECT 'svc/c', exclusive, current_version, metadata, created_at, updated_at, tier, approvals, custody, max_lease_seconds, NULL, NULL FROM secrets WHERE path = 'svc/b'",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO secret_versions SELECT 'svc/c', version, key_version, wrapped_dek, ciphertext, created_at, created_by, NULL, NULL FROM secret_versions WHERE path = 'svc/b'",
            [],
        )
        .unwrap();
    }
    a.spawn();
    a.wait_ready();
    for path in ["svc/a", "svc/c"] {
        let r = checkout(&pam, path);
        assert_eq!(r.status, 500, "{path}");
        assert_eq!(r.error_code().as_deref(), Some("integrity"), "{path}");
    }
    assert_eq!(json_of(&checkout(&pam, "svc/b"))["value"], "bravo");
    assert!(
        a.log().contains("integrity"),
        "integrity failure not logged"
    );
    // No checkout was recorded for the failed reads.
    let info = json_of(&req(&pam, Method::GET, "/v1/secrets/svc/a", None));
    assert_eq!(info["open_checkouts"].as_array().unwrap().len(), 0);
}

#[test]
fn kill_9_during_writes_loses_nothing_acknowledged() {
    let mut a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let writer = writer.clone();
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = runtime();
                rt.block_on(async {
                    let Ok(mut conn) = writer.connect().await else {
                        return;
                    };
                    for i in 0.. {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            return;
                        }
                        let path = format!("load/t{t}/s{i}");
                        let value = format!("value-{t}-{i}");
                        match conn
                            .request(
                                Method::PUT,
                                &format!("/v1/secrets/{path}"),
                                Some(&json!({"value": value})),
                            )
                            .await
                        {
                            Ok(r) if r.status == 200 => {
                                acked.lock().unwrap().insert(path, value);
                            }
                            _ => return,
                        }
                    }
                })
            })
        })
        .collect();
    // Let the stream run, then pull the plug.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while acked.lock().unwrap().len() < 300 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    a.kill9();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 300,
        "only {} writes acknowledged before the kill",
        acked.len()
    );
    a.spawn();
    a.wait_ready();
    let rt = runtime();
    rt.block_on(async {
        let mut conn = pam.connect().await.unwrap();
        for (path, value) in &acked {
            let r = conn
                .request(
                    Method::POST,
                    &format!("/v1/secrets/{path}/checkout"),
                    Some(&json!({"reason": "verify"})),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "acknowledged write {path} lost");
            assert_eq!(r.json().unwrap()["value"], value.as_str(), "{path}");
        }
    });
}

#[test]
fn keyring_rotation_is_online_and_rewraps() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    let admin = a.admin();
    for i in 0..50 {
        assert_eq!(
            put(&writer, &format!("k/{i}"), &format!("v{i}"), false).status,
            200
        );
    }
    assert_eq!(
        req(&writer, Method::POST, "/v1/sys/keyring/rotate", None).status,
        403
    );
    let r = req(&admin, Method::POST, "/v1/sys/keyring/rotate", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["active_version"], 2);
    // Reads work during and after the rewrap; new writes use version 2.
    for i in 0..50 {
        assert_eq!(
            json_of(&checkout(&pam, &format!("k/{i}")))["value"],
            format!("v{i}")
        );
    }
    put(&writer, "k/new", "fresh", false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let s = json_of(&req(&admin, Method::GET, "/v1/sys/keyring", None));
        if s["pending_rewrap"] == 0 {
            assert_eq!(s["versions"][1]["secret_versions"], 51, "{s}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rewrap did not finish: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let info = json_of(&req(&pam, Method::GET, "/v1/secrets/k/0", None));
    assert_eq!(info["versions"][0]["keyring_version"], 2);
    assert_eq!(json_of(&checkout(&pam, "k/0"))["value"], "v0");
}

#[test]
fn missing_token_and_corrupt_blob_have_their_own_reasons() {
    let mut a = Appliance::start(Options::default());
    let pam = a.issue("pam", "p1");
    let status =
        |a: &Appliance| json_of(&req(&a.admin(), Method::GET, "/v1/sys/seal-status", None));

    // The token is gone (its directory emptied).
    a.stop();
    let tokens = a.dir.path().join("softhsm").join("tokens");
    let moved = a.dir.path().join("tokens.away");
    std::fs::rename(&tokens, &moved).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    a.spawn();
    a.wait_ready();
    let s = status(&a);
    assert_eq!(s["reason"]["code"], "pkcs11_token_missing", "{s}");
    assert_eq!(checkout(&pam, "x").error_code().as_deref(), Some("sealed"));
    a.stop();
    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&moved, &tokens).unwrap();

    // The sealed root key blob in the database is damaged.
    {
        let c = rusqlite::Connection::open(a.db_path()).unwrap();
        let raw: Vec<u8> = c
            .query_row(
                "SELECT value FROM meta WHERE key = 'sealed_root'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let tpm = v["tpm"].as_str().unwrap().to_owned();
        // Flip one character of the TPM blob's base64.
        let mut chars: Vec<char> = tpm.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        v["tpm"] = serde_json::Value::String(chars.into_iter().collect());
        c.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'sealed_root'",
            [serde_json::to_vec(&v).unwrap()],
        )
        .unwrap();
    }
    a.spawn();
    a.wait_ready();
    let s = status(&a);
    assert_eq!(s["reason"]["code"], "seal_blob_corrupt", "{s}");
    assert_eq!(checkout(&pam, "x").error_code().as_deref(), Some("sealed"));
}

/// Issue 11, finding 9: a secret whose last segment is `checkout` is checked
/// out, and named, by its whole path (the route strips one `/checkout`).
#[test]
fn a_secret_named_checkout_keeps_its_whole_path() {
    let a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    assert_eq!(put(&writer, "db", "the-db", false).status, 200);
    assert_eq!(
        put(&writer, "db/checkout", "the-checkout", false).status,
        200
    );
    let r = checkout(&pam, "db/checkout");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_of(&r);
    assert_eq!(
        (v["path"].as_str(), v["value"].as_str()),
        (Some("db/checkout"), Some("the-checkout"))
    );
    let v = json_of(&checkout(&pam, "db"));
    assert_eq!(
        (v["path"].as_str(), v["value"].as_str()),
        (Some("db"), Some("the-db"))
    );
    // A checkout of a path ending in /checkout/checkout is not a checkout of `db`.
    let r = req(
        &pam,
        Method::POST,
        "/v1/secrets/db/checkout/checkout/checkout",
        Some(json!({"reason": "x"})),
    );
    assert_eq!(r.error_code().as_deref(), Some("not_found"));
}
