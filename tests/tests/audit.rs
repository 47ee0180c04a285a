//! The audit log end to end: the real daemon, a real export, vaultctl's
//! offline verifier, and proofs checked with only the published key.

use std::process::Command;

use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Value};
use vault_core::audit::entry::Entry;
use vault_core::audit::merkle::{leaf_hash, verify_consistency, verify_inclusion, Hash};
use vault_core::audit::note::Checkpoint;
use vault_e2e::{checkout, json_of, put, req, vaultctl_bin, Appliance, Options};

fn b64d(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| b64d(h.as_str().unwrap()).try_into().unwrap())
        .collect()
}

fn ctl(a: &Appliance, who: &str, args: &[&str]) -> std::process::Output {
    Command::new(vaultctl_bin())
        .env_clear()
        .env("VAULT_ADDR", a.addr())
        .env("VAULT_CACERT", a.certs.join("ca.pem"))
        .env("VAULT_CERT", a.certs.join(format!("{who}.pem")))
        .env("VAULT_KEY", a.certs.join(format!("{who}-key.pem")))
        .args(args)
        .output()
        .unwrap()
}

fn verify_json(
    a: &Appliance,
    dir: &std::path::Path,
    key: &std::path::Path,
    trusted: Option<&std::path::Path>,
) -> (i32, Value) {
    let mut args = vec![
        "--json",
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    if let Some(t) = trusted {
        args.extend(["--trusted-checkpoint", t.to_str().unwrap()]);
    }
    let o = ctl(a, "aud", &args);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
        panic!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap(), v)
}

fn read_records(p: &std::path::Path) -> Vec<Vec<u8>> {
    let d = std::fs::read(p).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i < d.len() {
        let n = u32::from_be_bytes(d[i..i + 4].try_into().unwrap()) as usize;
        out.push(d[i + 4..i + 4 + n].to_vec());
        i += 4 + n;
    }
    out
}

fn write_records(p: &std::path::Path, recs: &[Vec<u8>]) {
    let mut d = Vec::new();
    for r in recs {
        d.extend_from_slice(&(r.len() as u32).to_be_bytes());
        d.extend_from_slice(r);
    }
    std::fs::write(p, d).unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.join("checkpoints")).unwrap();
    std::fs::copy(from.join("entries.log"), to.join("entries.log")).unwrap();
    for f in std::fs::read_dir(from.join("checkpoints")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join("checkpoints").join(f.file_name())).unwrap();
    }
}

#[test]
fn checkout_refusal_and_unseal_are_provably_in_the_signed_log() {
    let mut a = Appliance::start(Options::default());
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "p1");
    let aud = a.issue("auditor", "aud");
    assert_eq!(put(&writer, "db/root", "hunter2-secret", false).status, 200);
    assert_eq!(checkout(&pam, "db/root").status, 200);
    assert_eq!(checkout(&writer, "db/root").status, 403); // refused: wrong role
    a.restart(); // unseal at start is audited
                 // Auditor-only API.
    assert_eq!(
        req(&pam, Method::GET, "/v1/audit/entries?start=0&end=10", None).status,
        403
    );

    // The published key, and a fresh signed checkpoint.
    let pk = json_of(&req(&aud, Method::GET, "/v1/audit/public-key", None));
    let pem = pk["public_key_pem"].as_str().unwrap().to_owned();
    let key_path = a.dir.path().join("audit.pub");
    std::fs::write(&key_path, &pem).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let spki = b64d(&body);
    let r = req(&aud, Method::POST, "/v1/audit/checkpoint", None);
    assert_eq!(r.status, 200);
    let note = String::from_utf8(r.body.to_vec()).unwrap();
    let cp = Checkpoint::verify(&note, pk["key_name"].as_str().unwrap(), &spki).unwrap();
    // vaultctl with the client key on the command line (`--key`) and the
    // audit key as `--audit-key`: neither may clobber the other.
    let certs = a.certs.clone();
    let o = Command::new(vaultctl_bin())
        .env_clear()
        .env("VAULT_ADDR", a.addr())
        .env("VAULT_CACERT", certs.join("ca.pem"))
        .args(["--cert", certs.join("aud.pem").to_str().unwrap()])
        .args(["--key", certs.join("aud-key.pem").to_str().unwrap()])
        .args(["--json", "audit", "show", "1"])
        .args(["--audit-key", key_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shown: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        shown["included_in_checkpoint"].as_u64().unwrap() >= 2,
        "{shown}"
    );
    assert_eq!(
        json_of(&req(&aud, Method::GET, "/v1/audit/public-key", None))["key_name"],
        cp.origin
    );

    // Find the three entries and prove each is in the signed tree.
    let v = json_of(&req(
        &aud,
        Method::GET,
        &format!("/v1/audit/entries?start=0&end={}", cp.size),
        None,
    ));
    let entries = v["entries"].as_array().unwrap();
    let find = |pred: &dyn Fn(&Entry) -> bool| -> (u64, Vec<u8>, Entry) {
        entries
            .iter()
            .map(|e| {
                let b = b64d(e["entry"].as_str().unwrap());
                (
                    e["index"].as_u64().unwrap(),
                    b.clone(),
                    Entry::parse(&b).unwrap(),
                )
            })
            .find(|(_, _, e)| pred(e))
            .expect("entry present")
    };
    let ok_checkout = find(&|e| {
        e.action == "secret.checkout" && e.outcome == vault_core::audit::entry::Outcome::Success
    });
    let refused = find(&|e| e.action == "secret.checkout" && e.error == "forbidden");
    let unseal = find(&|e| e.action == "sys.unseal");
    assert_eq!(ok_checkout.2.principal, "p1");
    assert_eq!(ok_checkout.2.target, "db/root");
    assert_eq!(refused.2.principal, "w1");
    assert_eq!(refused.2.role, "writer");
    for (idx, bytes, e) in [&ok_checkout, &refused, &unseal] {
        assert!(
            !String::from_utf8_lossy(bytes).contains("hunter2"),
            "secret in audit entry"
        );
        let p = json_of(&req(
            &aud,
            Method::GET,
            &format!(
                "/v1/audit/proof/inclusion?index={idx}&tree_size={}",
                cp.size
            ),
            None,
        ));
        verify_inclusion(&leaf_hash(bytes), *idx, cp.size, &hashes(&p), &cp.root)
            .unwrap_or_else(|err| panic!("{}: {err}", e.action));
    }
    // The write carries the value's HMAC, which `audit hash` reproduces.
    let write = find(&|e| e.action == "secret.write");
    let o = Command::new(vaultctl_bin())
        .env_clear()
        .env("VAULT_ADDR", a.addr())
        .env("VAULT_CACERT", a.certs.join("ca.pem"))
        .env("VAULT_CERT", a.certs.join("aud.pem"))
        .env("VAULT_KEY", a.certs.join("aud-key.pem"))
        .args(["audit", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"hunter2-secret")
                .unwrap();
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        write.2.hmac["value"]
    );

    // Consistency between an early and the current checkpoint.
    let p = json_of(&req(
        &aud,
        Method::GET,
        &format!("/v1/audit/proof/consistency?first=3&second={}", cp.size),
        None,
    ));
    let t = json_of(&req(
        &aud,
        Method::GET,
        "/v1/audit/entries?start=0&end=3",
        None,
    ));
    let mut cr = vault_core::audit::merkle::CompactRange::new();
    for e in t["entries"].as_array().unwrap() {
        cr.push(leaf_hash(&b64d(e["entry"].as_str().unwrap())));
    }
    verify_consistency(3, cp.size, &cr.root(), &cp.root, &hashes(&p)).unwrap();

    // Bad ranges are 400s with codes.
    for (path, code) in [
        ("/v1/audit/entries?start=5&end=5", "invalid_range"),
        (
            "/v1/audit/entries?start=999999&end=1000000",
            "invalid_range",
        ),
        ("/v1/audit/entries?start=0&end=5000", "invalid_range"),
        ("/v1/audit/entries?start=x&end=1", "invalid_query"),
        (
            &format!("/v1/audit/proof/inclusion?index={0}&tree_size={0}", cp.size),
            "invalid_index",
        ),
        (
            "/v1/audit/proof/inclusion?index=0&tree_size=0",
            "invalid_tree_size",
        ),
        (
            "/v1/audit/proof/inclusion?index=0&tree_size=99999999",
            "invalid_tree_size",
        ),
        (
            "/v1/audit/proof/consistency?first=0&second=2",
            "invalid_range",
        ),
        (
            "/v1/audit/proof/consistency?first=3&second=2",
            "invalid_range",
        ),
    ] {
        let r = req(&aud, Method::GET, path, None);
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.error_code().as_deref(), Some(code), "{path}");
    }

    // Export with vaultctl, verify offline, then tamper with copies.
    let dir = a.dir.path().join("export");
    let o = ctl(
        &a,
        "aud",
        &["audit", "export", "--out", dir.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, v) = verify_json(&a, &dir, &key_path, None);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    // Keep the auditor's checkpoint, add activity, export again (resume).
    let trusted = a.dir.path().join("trusted.note");
    let newest = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&newest, &trusted).unwrap();
    for i in 0..5 {
        checkout(&pam, "db/root");
        checkout(&writer, &format!("nope/{i}"));
    }
    let o = ctl(
        &a,
        "aud",
        &["audit", "export", "--out", dir.to_str().unwrap()],
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("exported 1"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let (code, v) = verify_json(&a, &dir, &key_path, Some(&trusted));
    assert_eq!(code, 0, "{v}");
    let n = v["entries"].as_u64().unwrap() as usize;
    assert!(n > 20);

    let tamper = |name: &str, f: &dyn Fn(&mut Vec<Vec<u8>>)| -> Value {
        let d = a.dir.path().join(format!("t-{name}"));
        copy_dir(&dir, &d);
        let mut recs = read_records(&d.join("entries.log"));
        f(&mut recs);
        write_records(&d.join("entries.log"), &recs);
        let (code, v) = verify_json(&a, &d, &key_path, Some(&trusted));
        assert_eq!(code, 5, "{name}: {v}");
        assert_eq!(v["ok"], false);
        v["failure"].clone()
    };
    let mid = n / 2;
    let f = tamper("flip", &|r| {
        let l = r[mid].len();
        r[mid][l - 10] ^= 0x04;
    });
    assert_eq!(
        (f["kind"].as_str(), f["index"].as_u64()),
        (Some("modified"), Some(mid as u64)),
        "{f}"
    );
    let f = tamper("delete", &|r| {
        r.remove(mid);
    });
    assert_eq!(
        (f["kind"].as_str(), f["index"].as_u64()),
        (Some("missing"), Some(mid as u64)),
        "{f}"
    );
    let f = tamper("swap", &|r| r.swap(mid, mid + 1));
    assert_eq!(
        (f["kind"].as_str(), f["index"].as_u64()),
        (Some("reordered"), Some(mid as u64)),
        "{f}"
    );
    let f = tamper("truncate", &|r| r.truncate(n - 3));
    assert_eq!(
        (f["kind"].as_str(), f["index"].as_u64()),
        (Some("truncated"), Some(n as u64 - 3)),
        "{f}"
    );
    let f = tamper("append", &|r| {
        let prev = leaf_hash(r.last().unwrap());
        let mut e = Entry::parse(r.last().unwrap()).unwrap();
        e.seq += 1;
        e.prev = prev.iter().map(|b| format!("{b:02x}")).collect();
        e.principal = "mallory".into();
        r.push(serde_json::to_vec(&e).unwrap());
    });
    assert_eq!(
        (f["kind"].as_str(), f["index"].as_u64()),
        (Some("appended"), Some(n as u64)),
        "{f}"
    );
    // A missing key or directory is a usage error (exit 2), not a pass.
    let o = ctl(
        &a,
        "aud",
        &[
            "audit",
            "verify",
            dir.to_str().unwrap(),
            "--key",
            "/nonexistent.pem",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let _ = json!({});
}

#[test]
fn vaultd_refuses_to_start_on_a_log_edited_offline() {
    let mut a = Appliance::start(Options::default());
    let pam = a.issue("pam", "p1");
    checkout(&pam, "nope");
    a.stop(); // clean shutdown signs a checkpoint covering everything
    {
        let c = rusqlite::Connection::open(a.db_path()).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM audit_checkpoints", [], |r| r.get(0))
            .unwrap();
        assert!(n >= 1, "no checkpoint at shutdown");
        // Rewrite entry 1 and recompute its stored leaf hash, as an attacker
        // with write access to the database would.
        let bytes: Vec<u8> = c
            .query_row("SELECT entry FROM audit_log WHERE idx = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        let mut e = Entry::parse(&bytes).unwrap();
        e.principal = "someone-else".into();
        let forged = serde_json::to_vec(&e).unwrap();
        c.execute(
            "UPDATE audit_log SET entry = ?1, leaf_hash = ?2 WHERE idx = 1",
            rusqlite::params![forged, leaf_hash(&forged).to_vec()],
        )
        .unwrap();
    }
    let o = a
        .command(vault_e2e::vaultd_bin())
        .arg("--config")
        .arg(&a.config)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not match its signed checkpoint"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
