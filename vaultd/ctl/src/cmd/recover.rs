//! `vaultctl recover share`: a custodian's part of restoring the root key
//! on a new box when the appliance's TPM or HSM is lost (docs/CUSTODIANS.md).
//!
//! The operator starts and finishes the recovery on the appliance with
//! `vaultd recover begin` and `vaultd recover finish` (they open the data
//! file, which this workstation tool never links). In between, each
//! custodian, offline, shows the request, signs it with the YubiKey (9c),
//! opens their share of the bundle (9d ECDH) and re-seals it to the
//! operator's one-time key.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use vault_core::custodian::approval::Decision;
use vault_core::custodian::ecies::key_fingerprint;
use vault_core::custodian::recovery::{self, Bundle, RecoveryRequest};
use vault_core::custodian::token::{CustodianToken, Slot};

use crate::cmd::custodian::{open_token, read_pin};
use crate::util::{out, read_json_file, write_public, Outcome};

#[derive(Subcommand)]
pub enum RecoverCmd {
    /// A custodian's answer (offline, with their YubiKey): approve the
    /// request and forward their share to the operator's one-time key.
    Share(ShareArgs),
}

#[derive(Args)]
pub struct ShareArgs {
    request: PathBuf,
    /// Your custodian name.
    #[arg(long = "as")]
    as_name: String,
    #[arg(long)]
    serial: Option<u32>,
    #[arg(long)]
    pin_file: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

/// `recover share REQUEST --as NAME --out FILE`: the request shown in full
/// on stderr, the answer written to FILE for the operator.
pub fn share(j: bool, a: ShareArgs) -> Outcome {
    let (req, bundle) = read_request(&a.request)?;
    eprint!("{}", describe(&req, &bundle));
    let mut t = open_token(a.serial)?;
    let pin = read_pin(a.pin_file.as_deref())?;
    let answer = answer(&req, &bundle, &a.as_name, &mut t, &pin)?;
    let file = &a.out;
    write_public(file, &serde_json::to_string_pretty(&answer)?)?;
    out(j, &answer, |_| {
        println!(
            "answer written to {}: give it to the operator",
            file.display()
        )
    });
    Ok(Ok(()))
}

/// The request file (`vaultd recover begin`'s output).
pub fn read_request(p: &Path) -> anyhow::Result<(RecoveryRequest, Bundle)> {
    recovery::parse_request_file(&read_json_file(p)?).map_err(|e| anyhow!("{}: {e}", p.display()))
}

pub fn describe(req: &RecoveryRequest, bundle: &Bundle) -> String {
    format!(
        "RECOVERY of appliance {}\nrequest   {}\nreason    {}\nexpires   unix {}\nneeds     {} of {}\none-time key SHA-256 {}\n  (compare with the operator out of band: your share of the ROOT KEY is sealed to this key)\n",
        req.appliance_id,
        req.id(),
        req.reason,
        req.expires_at,
        bundle.k,
        bundle
            .shares
            .iter()
            .map(|s| s.custodian.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        key_fingerprint(&req.recipient_key),
    )
}

/// A custodian's answer: the signed approval and the forwarded share.
pub fn answer(
    req: &RecoveryRequest,
    bundle: &Bundle,
    me: &str,
    t: &mut dyn CustodianToken,
    pin: &vault_core::secret::Pin,
) -> anyhow::Result<Value> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if now >= req.expires_at {
        bail!("the recovery request has expired");
    }
    t.verify_pin(pin).map_err(|e| anyhow!("YubiKey: {e}"))?;
    eprintln!("touch your YubiKey if it blinks");
    let signature = t
        .sign(&req.approval().message(Decision::Approve, me))
        .map_err(|e| anyhow!("YubiKey sign: {e}"))?;
    let kex = t
        .public_key(Slot::KeyManagement)
        .map_err(|e| anyhow!("YubiKey: {e}"))?;
    t.verify_pin(pin).map_err(|e| anyhow!("YubiKey: {e}"))?;
    let mut ecdh = |e: &p256::PublicKey| t.ecdh(e).map_err(|x| x.to_string());
    let envelope =
        recovery::forward_share(bundle, req, me, &kex, &mut ecdh, &mut rand::rngs::OsRng)
            .map_err(|e| anyhow!("your share: {e}"))?;
    Ok(json!({
        "request_id": req.id(),
        "custodian": me,
        "signature": B64.encode(signature),
        "envelope": B64.encode(envelope),
    }))
}
