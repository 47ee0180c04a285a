//! `vaultctl recover`: k custodians restore the root key on a new box when
//! the appliance's TPM or HSM is lost (docs/CUSTODIANS.md).
//!
//! 1. `begin` (operator, on the new box, vaultd stopped, the old data file
//!    in place): reads the recovery bundle from the data file, makes a
//!    one-time P-256 key and writes a request file for the custodians.
//! 2. `share` (each custodian, offline): shows the request, signs it with
//!    the YubiKey (9c), opens their share of the bundle (9d ECDH) and
//!    re-seals it to the one-time key.
//! 3. `finish` (operator): checks each custodian's signature against the
//!    key enrolled in the data file, opens k shares, checks the rebuilt key
//!    against the bundle's check value, then seals it under the new TPM
//!    and/or token and makes a new CA, audit key and admin
//!    ([`vaultd::init::recover`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Subcommand;
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::{json, Value};
use vault_core::custodian::approval::{verify_vote, Custodian, Decision};
use vault_core::custodian::recovery::{self, Bundle, RecoveryRequest};
use vault_core::custodian::token::{CustodianToken, Slot};
use vault_store::{Store, StoreOptions};

#[derive(Subcommand)]
pub enum RecoverCmd {
    /// Start a recovery on a new box (local, vaultd stopped): writes the
    /// request file for the custodians and the one-time key.
    Begin {
        /// vaultd configuration of the new box (its data_dir holds the old data file).
        #[arg(long, env = "VAULTD_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        reason: String,
        /// The request file for the custodians.
        #[arg(long)]
        out: PathBuf,
        /// The one-time private key (mode 0600); keep it on this box.
        #[arg(long)]
        key_out: PathBuf,
        /// How long custodians have to answer.
        #[arg(long, default_value_t = 24)]
        hours: u32,
    },
    /// A custodian's answer (offline, with their YubiKey): approve the
    /// request and forward their share to the operator's one-time key.
    Share {
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
    },
    /// Finish on the new box: check the answers, rebuild the root key, seal
    /// it under this box's devices, make a new CA, audit key and admin.
    Finish {
        #[arg(long, env = "VAULTD_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        request: PathBuf,
        #[arg(long)]
        one_time_key: PathBuf,
        /// Where the new admin's certificate, key and the new CA go.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "admin")]
        admin_name: String,
        /// The custodians' answer files.
        #[arg(required = true)]
        answers: Vec<PathBuf>,
    },
}

/// The request file: the request and the bundle it is for.
pub fn read_request(p: &Path) -> anyhow::Result<(RecoveryRequest, Bundle)> {
    let v = crate::read_json_file(p)?;
    let req = RecoveryRequest::from_json(&v["request"]).map_err(|e| anyhow!("{e}"))?;
    let bundle = Bundle::from_json(&v["bundle"]).map_err(|e| anyhow!("{e}"))?;
    if bundle.appliance_id != req.appliance_id {
        bail!("the request and its bundle name different appliances");
    }
    Ok((req, bundle))
}

fn open_store(config: &Path) -> anyhow::Result<(vaultd::config::Config, Store)> {
    let cfg = vaultd::config::Config::load(config)?;
    let db = cfg.db_path();
    if !db.exists() {
        bail!(
            "{}: no data file (copy the old appliance's data file or backup there)",
            db.display()
        );
    }
    let store = Store::open(&db, StoreOptions::default())?;
    Ok((cfg, store))
}

fn meta(store: &Store, key: &str) -> anyhow::Result<Vec<u8>> {
    store
        .get_meta(key)?
        .ok_or_else(|| anyhow!("the data file has no {key}"))
}

pub fn begin(
    config: &Path,
    reason: &str,
    out: &Path,
    key_out: &Path,
    hours: u32,
) -> anyhow::Result<Value> {
    if key_out.exists() {
        bail!(
            "{} exists: refusing to overwrite a one-time key",
            key_out.display()
        );
    }
    let (_, store) = open_store(config)?;
    let bundle: Value = serde_json::from_slice(&meta(&store, "recovery_bundle").context(
        "no recovery bundle: it is made on the running appliance with POST /v1/sys/recovery",
    )?)?;
    let bundle_parsed = Bundle::from_json(&bundle).map_err(|e| anyhow!("{e}"))?;
    let appliance_id = String::from_utf8(meta(&store, "appliance_id")?)?;
    if bundle_parsed.appliance_id != appliance_id {
        bail!("the recovery bundle belongs to another appliance");
    }
    let (pem, public) = crate::custodian::one_time_key()?;
    let mut nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let req = RecoveryRequest {
        appliance_id,
        nonce,
        reason: reason.to_owned(),
        created_at: now,
        expires_at: now + i64::from(hours) * 3600,
        recipient_key: public,
    };
    crate::write_private(key_out, &pem)?;
    let file = json!({"request": req.to_json(), "bundle": bundle});
    crate::write_public(out, &serde_json::to_string_pretty(&file)?)?;
    Ok(json!({
        "request_id": req.id(),
        "appliance_id": req.appliance_id,
        "k": bundle_parsed.k,
        "custodians": bundle_parsed.shares.iter().map(|s| s.custodian.clone()).collect::<Vec<_>>(),
        "one_time_key_sha256": crate::custodian::key_fingerprint(&req.recipient_key),
        "request_file": out,
    }))
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
        crate::custodian::key_fingerprint(&req.recipient_key),
    )
}

/// A custodian's answer: the signed approval and the forwarded share.
pub fn share(
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

pub fn finish(
    config: &Path,
    request: &Path,
    one_time_key: &Path,
    out: &Path,
    admin_name: &str,
    answers: &[PathBuf],
) -> anyhow::Result<vaultd::init::InitReport> {
    let (req, file_bundle) = read_request(request)?;
    let (cfg, store) = open_store(config)?;
    // Trust the bundle and the custodians' keys of the data file, not the
    // request file's copy.
    let bundle = Bundle::from_json(&serde_json::from_slice(&meta(&store, "recovery_bundle")?)?)
        .map_err(|e| anyhow!("{e}"))?;
    if bundle != file_bundle || bundle.appliance_id != req.appliance_id {
        bail!("the request file's bundle is not this data file's recovery bundle");
    }
    let custodians = store.custodians()?;
    drop(store);
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(one_time_key)
            .with_context(|| one_time_key.display().to_string())?,
    );
    let sk = p256::SecretKey::from_pkcs8_pem(&pem)
        .map_err(|_| anyhow!("{}: not a P-256 PKCS#8 key", one_time_key.display()))?;
    if sk.public_key() != p256::PublicKey::from_sec1_bytes(&req.recipient_key)? {
        bail!("the one-time key is not the request's");
    }
    let approval = req.approval();
    let mut shares = Vec::new();
    let mut who = Vec::new();
    for p in answers {
        let a = crate::read_json_file(p)?;
        let name = a["custodian"].as_str().unwrap_or_default().to_owned();
        if who.contains(&name) {
            bail!("{}: {name} answered twice", p.display());
        }
        let c = custodians
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| anyhow!("{}: {name:?} is not an enrolled custodian", p.display()))?;
        let custodian = Custodian {
            id: c.name.clone(),
            groups: c.groups.clone(),
            signing_key: p256::PublicKey::from_sec1_bytes(&c.sig_key)?,
        };
        let sig = B64.decode(a["signature"].as_str().unwrap_or_default())?;
        verify_vote(&approval, Decision::Approve, &custodian, &sig)
            .map_err(|e| anyhow!("{}: {name}: {e}", p.display()))?;
        let env = B64.decode(a["envelope"].as_str().unwrap_or_default())?;
        shares.push(
            recovery::open_forwarded(&req, &name, &sk, &env)
                .map_err(|e| anyhow!("{}: {e}", p.display()))?,
        );
        who.push(name);
    }
    if shares.len() < bundle.k {
        bail!(
            "{} answers, {} needed: nothing was changed",
            shares.len(),
            bundle.k
        );
    }
    let rk =
        recovery::recover(&bundle, &shares).map_err(|e| anyhow!("{e}: nothing was changed"))?;
    let details: BTreeMap<String, String> = [
        ("request_id".to_owned(), req.id()),
        ("reason".to_owned(), req.reason.clone()),
        ("custodians".to_owned(), who.join(",")),
        ("k".to_owned(), bundle.k.to_string()),
    ]
    .into_iter()
    .collect();
    let report = vaultd::init::recover(&cfg, out, admin_name, &rk, details)?;
    let _ = std::fs::remove_file(one_time_key);
    Ok(report)
}
