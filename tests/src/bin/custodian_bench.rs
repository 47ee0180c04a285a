//! Server-side time of the custodian flows (`make bench-custodians`).
//!
//! Starts a real vaultd (swtpm + SoftHSM2, `VAULTD_BIN`, release build in
//! the make target), enrols three software custodians attested by a test
//! root, and runs, one after another on keep-alive mTLS connections:
//!
//! * a plain checkout (the baseline in the same run);
//! * a 2-of-3 approved checkout: open the request (202), two signed votes,
//!   collect;
//! * a 2-of-3 break-glass retrieval: open the request, for two custodians
//!   read the request (their share) and vote with the re-sealed share,
//!   collect.
//!
//! Only the HTTP round trips are timed (appliance time over loopback); the
//! custodians' signing and ECDH and the requester's decryption are client
//! work (on a YubiKey they wait for a human) and are excluded.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Parser;
use hyper::Method;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use serde_json::{json, Value};
use vault_client::{Client, Conn};
use vault_core::custodian::approval::Decision;
use vault_core::custodian::sealed;
use vault_core::custodian::token::{CustodianToken, Slot, SoftToken};
use vault_e2e::piv::{enroll_body, shown, TestRoot};
use vault_e2e::{put, req, Appliance};

#[derive(Parser)]
struct Args {
    /// Iterations of each flow.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
}

struct Timer(Vec<Duration>);

impl Timer {
    fn summary(&mut self) -> Value {
        self.0.sort();
        let q = |p: f64| {
            let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
            self.0[i].as_secs_f64() * 1000.0
        };
        json!({"n": self.0.len(), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0)})
    }
}

async fn call(c: &mut Conn, m: Method, path: &str, body: Option<Value>, t: &mut Duration) -> Value {
    let t0 = Instant::now();
    let r = c.request(m, path, body.as_ref()).await.expect(path);
    *t += t0.elapsed();
    assert!(
        (200..300).contains(&r.status),
        "{path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r.json().expect("JSON")
}

fn main() {
    let args = Args::parse();
    let root = TestRoot::new("Bench PIV Root");
    let a = Appliance::start(root.options());
    let admin = a.admin();
    let writer = a.issue("writer", "w1");
    let pam = a.issue("pam", "pam01");
    let names = ["alice", "bob", "carol"];
    let mut tokens: Vec<SoftToken> = (0..3).map(|i| root.token(500 + i)).collect();
    let mut clients: Vec<Client> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let r = req(
            &admin,
            Method::POST,
            "/v1/custodians",
            Some(enroll_body(n, &["security"], &mut tokens[i])),
        );
        assert_eq!(r.status, 200);
        clients.push(a.issue("custodian", n));
    }
    assert_eq!(
        put(&writer, "bench/plain", "plain-value", false).status,
        200
    );
    assert_eq!(
        put(&writer, "bench/gated", "gated-value", false).status,
        200
    );
    let r = req(
        &admin,
        Method::PUT,
        "/v1/policies/bench/gated",
        Some(json!({"approvals": [{"group": "security", "k": 2}]})),
    );
    assert_eq!(r.status, 200);
    let r = req(
        &writer,
        Method::PUT,
        "/v1/secrets/bench/sealed",
        Some(
            json!({"value": "sealed-value", "tier": "sealed", "custody": {"group": "security", "k": 2}}),
        ),
    );
    assert_eq!(r.status, 200);

    let rt = vault_e2e::runtime();
    let out = rt.block_on(async {
        let mut p = pam.connect().await.unwrap();
        let mut cs = Vec::new();
        for c in &clients {
            cs.push(c.connect().await.unwrap());
        }
        let body = json!({"reason": "bench", "ttl_seconds": 60});
        let (mut plain, mut approval, mut breakglass) =
            (Timer(vec![]), Timer(vec![]), Timer(vec![]));
        for _ in 0..args.iterations {
            // Plain checkout.
            let mut t = Duration::ZERO;
            let v = call(&mut p, Method::POST, "/v1/secrets/bench/plain/checkout", Some(body.clone()), &mut t).await;
            assert_eq!(v["value"], "plain-value");
            plain.0.push(t);

            // 2-of-3 approval.
            let mut t = Duration::ZERO;
            let v = call(&mut p, Method::POST, "/v1/secrets/bench/gated/checkout", Some(body.clone()), &mut t).await;
            let id = v["request_id"].as_str().unwrap().to_owned();
            for i in [0usize, 1] {
                let v = call(&mut cs[i], Method::GET, &format!("/v1/requests/{id}"), None, &mut t).await;
                let sig = tokens[i].sign(&shown(&v).message(Decision::Approve, names[i])).unwrap();
                call(
                    &mut cs[i],
                    Method::POST,
                    &format!("/v1/requests/{id}/vote"),
                    Some(json!({"decision": "approve", "signature": B64.encode(sig)})),
                    &mut t,
                )
                .await;
            }
            let v = call(&mut p, Method::POST, &format!("/v1/requests/{id}/collect"), None, &mut t).await;
            assert_eq!(v["value"], "gated-value");
            approval.0.push(t);

            // 2-of-3 break-glass.
            let mut t = Duration::ZERO;
            let one = p256::SecretKey::random(&mut rand::rngs::OsRng);
            let pk = one.public_key().to_encoded_point(false).as_bytes().to_vec();
            let v = call(
                &mut p,
                Method::POST,
                "/v1/secrets/bench/sealed/breakglass",
                Some(json!({"reason": "bench", "recipient_key": B64.encode(&pk)})),
                &mut t,
            )
            .await;
            let id = v["request_id"].as_str().unwrap().to_owned();
            for i in [0usize, 2] {
                let v = call(&mut cs[i], Method::GET, &format!("/v1/requests/{id}"), None, &mut t).await;
                let req = shown(&v);
                let sig = tokens[i].sign(&req.message(Decision::Approve, names[i])).unwrap();
                let env = B64.decode(v["your_share"].as_str().unwrap()).unwrap();
                let kex = tokens[i].public_key(Slot::KeyManagement).unwrap();
                let tok = &mut tokens[i];
                let mut ecdh = |e: &p256::PublicKey| tok.ecdh(e).map_err(|x| x.to_string());
                let fwd = sealed::forward_share(
                    &env, &kex, &mut ecdh, &id, &req.path, req.version, names[i],
                    &one.public_key(), &mut rand::rngs::OsRng,
                )
                .unwrap();
                call(
                    &mut cs[i],
                    Method::POST,
                    &format!("/v1/requests/{id}/vote"),
                    Some(json!({"decision": "approve", "signature": B64.encode(sig), "share": B64.encode(fwd)})),
                    &mut t,
                )
                .await;
            }
            let v = call(&mut p, Method::POST, &format!("/v1/requests/{id}/collect"), None, &mut t).await;
            breakglass.0.push(t);
            let shares: Vec<(String, Vec<u8>)> = v["shares"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["custodian"].as_str().unwrap().to_owned(),
                        B64.decode(s["envelope"].as_str().unwrap()).unwrap(),
                    )
                })
                .collect();
            let ct = B64.decode(v["ciphertext"].as_str().unwrap()).unwrap();
            let value = sealed::open(&one, &id, "bench/sealed", 1, 2, &shares, &ct).unwrap();
            assert_eq!(value.expose_secret(), b"sealed-value");
        }
        let (pl, ap, bg) = (plain.summary(), approval.summary(), breakglass.summary());
        json!({
            "plain_checkout": pl,
            "approval_2_of_3": ap,
            "breakglass_2_of_3": bg,
            "approval_vs_plain_p50": ap["p50_ms"].as_f64().unwrap() / pl["p50_ms"].as_f64().unwrap(),
            "breakglass_vs_plain_p50": bg["p50_ms"].as_f64().unwrap() / pl["p50_ms"].as_f64().unwrap(),
        })
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
