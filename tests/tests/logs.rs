//! Issue 14, item 5: the daemon's logs. With `log.format = "json"` every
//! line parses and carries no secret; lines about a request carry its ID
//! (the same as in its audit entry); a log that is not a terminal has no
//! ANSI colour codes; libraries' chatter stays below the default level.

use hyper::Method;
use serde_json::{json, Value};
use vault_e2e::{checkout, json_of, put, req, Appliance, Options};

/// Writes, checks out and checks in values whose text is known, and makes
/// a few refusals; returns the values.
fn load(a: &Appliance) -> Vec<String> {
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    let values: Vec<String> = (0..5)
        .map(|i| format!("Canary-{i}-{:016x}", rand::random::<u64>()))
        .collect();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(put(&writer, &format!("logs/s{i}"), v, false).status, 200);
        let r = checkout(&pam, &format!("logs/s{i}"));
        assert_eq!(r.status, 200);
        let id = json_of(&r)["checkout_id"].as_str().unwrap().to_owned();
        let r = req(
            &pam,
            Method::POST,
            &format!("/v1/checkouts/{id}/checkin"),
            None,
        );
        assert_eq!(r.status, 200);
    }
    // Refusals: a writer checking out, a bad body carrying a canary.
    assert_eq!(checkout(&writer, "logs/s0").status, 403);
    let r = req(
        &writer,
        Method::PUT,
        "/v1/secrets/logs/bad",
        Some(json!({"value": values[0], "colour": "red"})),
    );
    assert_eq!(r.status, 400);
    values
}

#[test]
fn json_logs_parse_carry_request_ids_and_no_secrets() {
    let a = Appliance::start(Options {
        extra_config: "format = \"json\"\n".into(),
        ..Options::default()
    });
    let values = load(&a);
    let log = a.log();
    // The harness sends stdout and stderr to one file. stdout carries only
    // the operator's console status lines (`vaultd: UNSEALED …`, which the
    // appliance unit sends to the serial console); every line of the log
    // (stderr) is JSON.
    let (console, logged): (Vec<&str>, Vec<&str>) = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .partition(|l| l.starts_with("vaultd: "));
    assert_eq!(console.len(), 1, "{console:?}");
    assert!(console[0].starts_with("vaultd: UNSEALED, serving the mTLS API on "));
    let lines: Vec<Value> = logged
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 20, "{log}");
    for v in &values {
        assert!(!log.contains(v.as_str()), "a secret value is in the log");
    }
    assert!(!log.contains('\u{1b}'), "ANSI codes in a log file");
    // The handler's "checkin" line runs in the request's span: the same
    // request ID as the checkin's audit entry.
    let checkin_ids: Vec<String> = a
        .audit_entries()
        .into_iter()
        .filter(|e| e.action == "checkout.checkin")
        .map(|e| e.request_id)
        .collect();
    assert_eq!(checkin_ids.len(), 5);
    let logged: Vec<String> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "checkin")
        .map(|l| {
            l["span"]["request_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(logged, checkin_ids, "{log}");
    // Every access line names its request.
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "vaultd::access")
        .collect();
    assert!(access.len() >= 12);
    assert!(access.iter().all(|l| l["fields"]["request_id"]
        .as_str()
        .is_some_and(|s| s.len() == 32)));
}

#[test]
fn text_logs_have_no_colour_and_no_library_chatter() {
    let mut a = Appliance::start(Options::default());
    load(&a);
    // A restart unseals through the TPM again (tss-esapi's INFO chatter).
    a.restart();
    let log = a.log();
    assert!(log.contains("unsealed"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI codes in a log file:\n{log}");
    assert!(
        !log.contains("Closing context"),
        "tss-esapi chatter:\n{log}"
    );
    assert!(!log.contains("tss_esapi"), "{log}");
}
