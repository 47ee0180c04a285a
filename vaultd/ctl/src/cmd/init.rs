//! `vaultctl init`: the first-boot ceremony of a flashed appliance, run
//! remotely over its one-time TLS identity (pinned by fingerprint): the
//! admin key is made here, the appliance signs its certificate.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};
use vault_client::Client;

use crate::cli::ConnArgs;
use crate::util::{decode, key_and_csr, out, server, write_private, write_public, Outcome};

#[derive(Args)]
pub struct InitArgs {
    /// Refused with a pointer to `vaultd init` (the local ceremony
    /// opens the seal devices and the data file: the daemon's job).
    #[arg(long, hide = true, conflicts_with_all = ["pin_fingerprint", "code"])]
    config: Option<PathBuf>,
    /// SHA-256 of the appliance's bootstrap certificate, from its console.
    #[arg(long, requires = "code")]
    pin_fingerprint: Option<String>,
    /// The one-time init code from the appliance's console.
    #[arg(long, requires = "pin_fingerprint")]
    code: Option<String>,
    /// Directory for the first admin's certificate and key, and the CA.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "admin")]
    admin_name: String,
}

/// `init --pin-fingerprint FP --code CODE --out DIR`; `--config` (the
/// local ceremony) is refused with a pointer to `vaultd init`.
pub async fn init(c: &ConnArgs, j: bool, a: InitArgs) -> Outcome {
    match a {
        InitArgs {
            config: Some(_), ..
        } => bail!(
            "the local ceremony runs on the appliance, as the daemon: `vaultd --config FILE init --out DIR`"
        ),
        InitArgs {
            config: None,
            pin_fingerprint: Some(fp),
            code: Some(code),
            out: dir,
            admin_name,
        } => remote_init(j, &c.addr, &fp, &code, &dir, &admin_name).await,
        InitArgs { .. } => {
            bail!("init needs --pin-fingerprint and --code (the appliance's console shows them); the local ceremony is `vaultd init`")
        }
    }
}

/// The ceremony itself: CSR to the pinned bootstrap identity, the answer's
/// CA and admin certificate written beside the new key, then a check that
/// the new credentials work.
async fn remote_init(
    json: bool,
    addr: &str,
    fingerprint: &str,
    code: &str,
    dir: &Path,
    admin_name: &str,
) -> Outcome {
    let (key_pem, csr) = key_and_csr(admin_name)?;
    let client = Client::pinned(addr, fingerprint)?;
    let body = json!({"code": code, "admin_name": admin_name, "csr_pem": csr});
    let resp = client
        .request(Method::POST, "/v1/sys/init", Some(&body))
        .await?;
    let v = server!(decode(&resp)?);
    let field = |k: &str| -> anyhow::Result<String> {
        v[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the appliance's answer has no {k}"))
    };
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let ca = dir.join("ca.pem");
    let cert = dir.join(format!("{admin_name}.pem"));
    let key_path = dir.join(format!("{admin_name}-key.pem"));
    write_private(&key_path, &key_pem)?;
    write_public(&cert, &field("admin_cert_pem")?)?;
    write_public(&ca, &field("ca_pem")?)?;
    let sealed = seal_status_with(addr, &ca, &cert, &key_path).await?;
    let report = json!({
        "appliance_id": v["appliance_id"], "seal_mode": v["seal_mode"],
        "ca_cert": ca, "admin_cert": cert, "admin_key": key_path,
        "admin_fingerprint": v["admin_fingerprint"], "seal_status": sealed,
    });
    out(json, &report, |r| print_report(r, &ca, &cert, &key_path));
    if sealed.is_null() {
        bail!("the appliance was initialised but its mTLS API did not answer with the new credentials within 30 s");
    }
    Ok(Ok(()))
}

/// The appliance now serves mTLS under its new CA: prove the new
/// credentials work before declaring success. The seal status, or null if
/// it did not answer within 30 s.
async fn seal_status_with(addr: &str, ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Value> {
    let c = Client::from_files(addr, ca, Some((cert, key)))?;
    for _ in 0..60 {
        if let Ok(r) = c.request(Method::GET, "/v1/sys/seal-status", None).await {
            if let Ok(Ok(s)) = decode(&r) {
                return Ok(s);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Ok(Value::Null)
}

fn print_report(r: &Value, ca: &Path, cert: &Path, key_path: &Path) {
    println!(
        "appliance {} initialised (seal mode {})",
        r["appliance_id"].as_str().unwrap_or(""),
        r["seal_mode"].as_str().unwrap_or("")
    );
    println!("  CA certificate : {}", ca.display());
    println!("  admin cert     : {}", cert.display());
    println!("  admin key      : {}", key_path.display());
    match r["seal_status"]["sealed"].as_bool() {
        Some(false) => {
            println!("  mTLS API       : answering with the new credentials, unsealed")
        }
        Some(true) => println!(
            "  mTLS API       : answering, but SEALED: {}",
            r["seal_status"]["reason"]
        ),
        None => println!("  mTLS API       : did not answer yet with the new credentials"),
    }
}
