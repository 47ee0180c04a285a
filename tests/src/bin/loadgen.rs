//! Closed-loop load generator for checkout-style reads over mTLS.
//!
//! N workers, each with one keep-alive TLS connection, send requests back to
//! back for a fixed duration after a warm-up; latencies are recorded per
//! request. The same tool drives vaultd (`POST /v1/secrets/P/checkout`) and
//! OpenBao (`GET /v1/secret/data/P` with a token from cert auth), so both
//! are measured with the same client, TLS stack and connection count.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hyper::Method;
use serde_json::json;
use vault_client::Client;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Target {
    Vaultd,
    Openbao,
}

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    #[arg(long)]
    addr: String,
    #[arg(long)]
    cacert: PathBuf,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// Secret path (vaultd) or KV path under secret/ (OpenBao).
    #[arg(long)]
    path: String,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Label for the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

async fn openbao_token(client: &Client) -> anyhow::Result<String> {
    let r = client
        .request(
            Method::POST,
            "/v1/auth/cert/login",
            Some(&json!({"name": "pam"})),
        )
        .await?;
    anyhow::ensure!(
        r.status == 200,
        "cert login failed: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    Ok(r.json()?["auth"]["client_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no token"))?
        .to_owned())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = Client::from_files(&a.addr, &a.cacert, Some((&a.cert, &a.key)))?;
    let token = match a.target {
        Target::Openbao => Some(openbao_token(&client).await?),
        Target::Vaultd => None,
    };
    let start = Instant::now();
    let warm_end = start + Duration::from_secs(a.warmup);
    let end = warm_end + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        let client = client.clone();
        let token = token.clone();
        let path = a.path.clone();
        let target = a.target;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut conn = client.connect().await?;
            let body = json!({"reason": "benchmark", "ttl_seconds": 60});
            let vpath = format!("/v1/secrets/{path}/checkout");
            let bpath = format!("/v1/secret/data/{path}");
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = match target {
                    Target::Vaultd => conn.request(Method::POST, &vpath, Some(&body)).await,
                    Target::Openbao => {
                        conn.request_with(
                            Method::GET,
                            &bpath,
                            &[("x-vault-token", token.as_deref().unwrap_or(""))],
                            None,
                        )
                        .await
                    }
                };
                let ok = matches!(&r, Ok(resp) if resp.status == 200);
                if r.is_err() {
                    conn = client.connect().await?;
                }
                if t0 >= warm_end {
                    if ok {
                        lat.push(t0.elapsed().as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            anyhow::Ok((lat, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await??;
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64) * p).ceil() as usize;
        all[i.clamp(1, all.len()) - 1] as f64 / 1000.0
    };
    let out = json!({
        "label": a.label,
        "target": if a.target == Target::Vaultd { "vaultd" } else { "openbao" },
        "connections": a.connections,
        "seconds": a.seconds,
        "requests": all.len(),
        "errors": errors,
        "rps": all.len() as f64 / a.seconds as f64,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    });
    println!("{out}");
    Ok(())
}
