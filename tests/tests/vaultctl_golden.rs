//! Golden output of the real `vaultctl` against the real `vaultd`: for each
//! command, its exit code, stdout and stderr, human and `--json`, compared
//! with `tests/golden/vaultctl/<case>.txt`.
//!
//! What changes from run to run is redacted before the comparison: times
//! (`[TIME]`), SHA-256 fingerprints (`[FINGERPRINT]`), audit request ids and
//! certificate serials (`[ID]`), checkout and request ids (`[UUID]`),
//! custodians' public keys (`[KEY]`), request nonces (`[NONCE]`), Unix
//! times (`[UNIX]`), the appliance's temp dir (`[ROOT]`) and port
//! (`[PORT]`). In a golden file `[..]` also matches any text within a line
//! and `...` on its own line any lines.
//!
//! After an intended change of output, regenerate the files and review the
//! diff:
//!
//! ```text
//! cargo build -p vaultd -p vaultctl
//! SNAPSHOTS=overwrite cargo test -p vault-e2e --test vaultctl_golden
//! ```
//!
//! (The output of commands that need no appliance, help and usage errors
//! among them, is checked by `vaultd/ctl/tests/cli_tests.rs`.)

use std::path::PathBuf;
use std::process::Output;

use hyper::Method;
use regex::Regex;
use snapbox::{Assert, Data, Redactions};
use vault_e2e::piv::{enroll_body, TestRoot};
use vault_e2e::{json_of, ok, req, Appliance};

/// Runs vaultctl cases against one appliance and collects every mismatch,
/// so that one run reports (or, with `SNAPSHOTS=overwrite`, rewrites) all.
struct Golden<'a> {
    a: &'a Appliance,
    assert: Assert,
    dir: PathBuf,
    failures: Vec<String>,
}

impl<'a> Golden<'a> {
    fn new(a: &'a Appliance) -> Golden<'a> {
        let mut r = Redactions::new();
        let re = |s: &str| Regex::new(s).unwrap();
        r.insert("[ROOT]", a.dir.path().to_str().unwrap().to_owned())
            .unwrap();
        r.insert("[PORT]", re(r"127\.0\.0\.1:(?<redacted>\d+)"))
            .unwrap();
        r.insert(
            "[TIME]",
            re(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})"),
        )
        .unwrap();
        r.insert("[FINGERPRINT]", re(r"\b[0-9a-f]{64}\b")).unwrap();
        r.insert("[ID]", re(r"\b[0-9a-f]{32}\b")).unwrap();
        let field = |names: &str, value: &str| re(&format!(r#""({names})":(?<redacted>{value})"#));
        r.insert(
            "[KEY]",
            field("signature_key|key_management_key", r#""[^"]*""#),
        )
        .unwrap();
        r.insert("[NONCE]", field("nonce", r#""[^"]*""#)).unwrap();
        r.insert("[UNIX]", field("created_at|expires_at", r"\d+"))
            .unwrap();
        r.insert(
            "[UUID]",
            re(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"),
        )
        .unwrap();
        Golden {
            a,
            assert: Assert::new().action_env("SNAPSHOTS").redact_with(r),
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/vaultctl"),
            failures: Vec::new(),
        }
    }

    /// `vaultctl ARGS` as `who`, compared with `golden/vaultctl/<case>.txt`.
    fn check(&mut self, case: &str, who: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let o = ctl(self.a, who, args, stdin);
        let actual = transcript(who, args, &o);
        let path = self.dir.join(format!("{case}.txt"));
        let expected = Data::read_from(&path, None);
        if let Err(e) = self
            .assert
            .try_eq(Some(&case), Data::text(actual), expected)
        {
            self.failures.push(format!("{case}: {e}"));
        }
        o
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} golden case(s) differ (SNAPSHOTS=overwrite to regenerate):\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn ctl(a: &Appliance, who: &str, args: &[&str], stdin: Option<&str>) -> Output {
    a.vaultctl(who, args, stdin)
}

/// The command as a shell would show it, its exit code and both streams.
fn transcript(who: &str, args: &[&str], o: &Output) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            if a.is_empty()
                || a.contains(|c: char| !c.is_ascii_alphanumeric() && !"-_./:".contains(c))
            {
                format!("'{a}'")
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    format!(
        "# as {who}\n$ vaultctl {}\n? {}\n--- stdout\n{}--- stderr\n{}",
        quoted.join(" "),
        o.status
            .code()
            .map_or_else(|| "signal".to_owned(), |c| c.to_string()),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).unwrap()
}

#[test]
fn golden_output() {
    // Custodians' software tokens are attested by a test root the
    // appliance trusts (as in tests/tests/custodians.rs).
    let root = TestRoot::new("Test PIV Root");
    let a = Appliance::start(root.options());
    // Principals are listed by issue time (in seconds), then name: issued
    // in name order, they list the same whether or not a second passes.
    a.issue("auditor", "au1");
    a.issue("pam", "p1");
    a.issue("writer", "w1");
    let mut g = Golden::new(&a);

    g.check("status", "admin", &["status"], None);
    g.check("status-json", "admin", &["--json", "status"], None);
    g.check("cert-list", "admin", &["cert", "list"], None);
    g.check("cert-list-json", "admin", &["--json", "cert", "list"], None);

    let meta = r#"{"host":"db1"}"#;
    let put = [
        "secret",
        "put",
        "ops/root",
        "--metadata",
        meta,
        "--exclusive",
    ];
    g.check("secret-put", "w1", &put, Some("pa55word\n"));
    let put = ["--json", "secret", "put", "ops/db"];
    g.check("secret-put-json", "w1", &put, Some("s3cret\n"));
    g.check("secret-get", "p1", &["secret", "get", "ops/root"], None);
    let get = ["--json", "secret", "get", "ops/root"];
    g.check("secret-get-json", "p1", &get, None);
    g.check("secret-list", "p1", &["secret", "list"], None);
    let list = ["--json", "secret", "list", "--prefix", "ops/"];
    g.check("secret-list-json", "p1", &list, None);

    // The value alone on stdout, the lease on stderr; the exclusive secret
    // is then refused (exit 1) until checked in.
    let checkout = ["checkout", "ops/root", "--reason", "change window"];
    g.check("checkout", "p1", &checkout, None);
    let again = ["checkout", "ops/root", "--reason", "again"];
    g.check("checkout-refused-exclusive", "p1", &again, None);
    let o = g.check("secret-get-checked-out", "p1", &get, None);
    let id = json(&o)["open_checkouts"][0]["checkout_id"]
        .as_str()
        .unwrap()
        .to_owned();
    g.check("checkin", "p1", &["checkin", &id], None);
    let checkout = [
        "--json", "checkout", "ops/db", "--reason", "backup", "--ttl", "60",
    ];
    let o = g.check("checkout-json", "p1", &checkout, None);
    let id = json(&o)["checkout_id"].as_str().unwrap().to_owned();
    g.check("checkin-json", "p1", &["--json", "checkin", &id], None);
    // The wrong role: refused, exit 1 with the server's code.
    let checkout = ["checkout", "ops/root", "--reason", "x"];
    g.check("checkout-refused-writer", "w1", &checkout, None);

    g.check("keyring-status", "admin", &["keyring", "status"], None);
    let status = ["--json", "keyring", "status"];
    g.check("keyring-status-json", "admin", &status, None);
    g.check("audit-tail", "au1", &["audit", "tail", "-n", "3"], None);
    let tail = ["--json", "audit", "tail", "-n", "3"];
    g.check("audit-tail-json", "au1", &tail, None);
    g.check("requests-list-empty", "admin", &["requests", "list"], None);

    // A checkout gated by one approval of the security group: no value,
    // exit 1, and a pending request to approve and collect.
    for (name, serial) in [("alice", 1001), ("bob", 1002)] {
        let body = enroll_body(name, &["security"], &mut root.token(serial));
        let r = req(&a.admin(), Method::POST, "/v1/custodians", Some(body));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    g.check("custodian-list", "admin", &["custodian", "list"], None);
    let list = ["--json", "custodian", "list"];
    g.check("custodian-list-json", "admin", &list, None);
    let policy = ["policy", "ops/root", "--approvals", "security:1"];
    g.check("policy", "admin", &policy, None);
    let policy = ["--json", "policy", "ops/db", "--approvals", "security:2"];
    g.check("policy-json", "admin", &policy, None);
    let checkout = ["checkout", "ops/root", "--reason", "incident 42"];
    g.check("checkout-pending", "p1", &checkout, None);
    // (Listed while it is the only one: requests of the same second are
    // ordered by their random ids.)
    g.check("requests-list", "admin", &["requests", "list"], None);
    let list = ["--json", "requests", "list", "--status", "all"];
    let o = g.check("requests-list-json", "admin", &list, None);
    let id = json(&o)["requests"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    g.check("requests-show", "admin", &["requests", "show", &id], None);
    let checkout = ["--json", "checkout", "ops/db", "--reason", "incident 43"];
    g.check("checkout-pending-json", "p1", &checkout, None);
    let pending = json_of(&req(&a.admin(), Method::GET, "/v1/requests", None));
    assert_eq!(pending["requests"].as_array().unwrap().len(), 2);

    g.finish();
}
