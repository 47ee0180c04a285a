//! `vaultctl breakglass` (pam): a break-glass request for a sealed secret,
//! with a one-time key pair made here, and opening the approved material
//! locally with that key.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::{Args, Subcommand};
use hyper::Method;
use p256::pkcs8::DecodePrivateKey as _;
use p256::SecretKey;
use serde_json::{json, Value};
use vault_core::custodian::ecies::key_fingerprint;
use vault_core::custodian::sealed;

use crate::cli::ConnArgs;
use crate::util::{call, enc, out, server, write_private, Outcome};

#[derive(Subcommand)]
pub enum BreakglassCmd {
    /// Open a break-glass request (pam): makes a one-time key pair and keeps
    /// its private half in `--key-out` (mode 0600) until `open`.
    Request(RequestArgs),
    /// Collect an approved break-glass request and decrypt it locally.
    /// Prints the value (or writes it to --out, mode 0600).
    Open(OpenArgs),
}

#[derive(Args)]
pub struct RequestArgs {
    path: String,
    #[arg(long)]
    reason: String,
    #[arg(long)]
    key_out: PathBuf,
}

#[derive(Args)]
pub struct OpenArgs {
    id: String,
    /// The one-time key `request --key-out` wrote. (Not `--key`: that is
    /// the client key.)
    #[arg(long)]
    one_time_key: PathBuf,
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `breakglass request PATH --reason R --key-out F`: the one-time key is
/// removed again if the request is refused.
pub async fn request(c: &ConnArgs, j: bool, a: RequestArgs) -> Outcome {
    let RequestArgs {
        path,
        reason,
        key_out,
    } = a;
    if key_out.exists() {
        bail!(
            "{} exists: refusing to overwrite a one-time key",
            key_out.display()
        );
    }
    let (pem, public) = one_time_key()?;
    write_private(&key_out, &pem)?;
    let body = json!({"reason": reason, "recipient_key": B64.encode(&public)});
    let v = match call(
        c,
        Method::POST,
        &format!("/v1/secrets/{}/breakglass", enc(&path)),
        Some(body),
    )
    .await?
    {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&key_out);
            return Ok(Err(e));
        }
    };
    out(j, &v, |v| {
        println!(
            "break-glass request {} for {} v{} (needs {}); one-time key in {} (SHA-256 of its public key {}: tell the custodians)",
            v["request_id"].as_str().unwrap_or("?"),
            path,
            v["version"],
            v["needs"],
            key_out.display(),
            key_fingerprint(&public),
        )
    });
    Ok(Ok(()))
}

/// `breakglass open ID --one-time-key F [--out FILE]`: the value on stdout
/// (or in FILE, mode 0600); the one-time key is removed after.
pub async fn open(c: &ConnArgs, a: OpenArgs) -> Outcome {
    let key = &a.one_time_key;
    if !key.exists() {
        bail!("{}: no such one-time key", key.display());
    }
    let v = server!(
        call(
            c,
            Method::POST,
            &format!("/v1/requests/{}/collect", enc(&a.id)),
            None
        )
        .await?
    );
    let value = open_collected(&v, key)?;
    let text = std::str::from_utf8(value.expose_secret())
        .map_err(|_| anyhow!("the value is not UTF-8"))?;
    match &a.out {
        Some(p) => {
            write_private(p, text)?;
            eprintln!("value written to {}", p.display());
        }
        None => println!("{text}"),
    }
    // The one-time key has done its job.
    let _ = std::fs::remove_file(key);
    Ok(Ok(()))
}

/// A fresh one-time key: the PKCS#8 PEM for the file and the public point.
fn one_time_key() -> anyhow::Result<(zeroize::Zeroizing<String>, Vec<u8>)> {
    vault_core::custodian::ecies::one_time_key(&mut rand::rngs::OsRng)
        .map_err(|_| anyhow!("encoding the one-time key"))
}

/// Opens collected break-glass material with the one-time key.
fn open_collected(v: &Value, key_file: &Path) -> anyhow::Result<vault_core::secret::SecretBytes> {
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(key_file).with_context(|| key_file.display().to_string())?,
    );
    let sk = SecretKey::from_pkcs8_pem(&pem)
        .map_err(|_| anyhow!("{}: not a P-256 PKCS#8 key", key_file.display()))?;
    let shares: Vec<(String, Vec<u8>)> = v["shares"]
        .as_array()
        .ok_or_else(|| anyhow!("no shares in the answer"))?
        .iter()
        .map(|s| -> anyhow::Result<_> {
            Ok((
                s["custodian"].as_str().unwrap_or_default().to_owned(),
                B64.decode(s["envelope"].as_str().unwrap_or_default())?,
            ))
        })
        .collect::<Result<_, _>>()?;
    let ct = B64.decode(v["ciphertext"].as_str().unwrap_or_default())?;
    let k = v["k"]
        .as_u64()
        .ok_or_else(|| anyhow!("no k in the answer"))? as usize;
    sealed::open(
        &sk,
        v["request_id"].as_str().unwrap_or_default(),
        v["path"].as_str().unwrap_or_default(),
        v["version"].as_u64().unwrap_or_default(),
        k,
        &shares,
        &ct,
    )
    .map_err(|e| anyhow!("opening the value: {e}"))
}
