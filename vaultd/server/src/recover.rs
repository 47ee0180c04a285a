//! `vaultd recover begin|finish`: the appliance's side of custodian recovery
//! of the root key on a new box (docs/CUSTODIANS.md), run on that box with
//! vaultd stopped and the old data file in place.
//!
//! 1. [`begin`] reads the recovery bundle from the data file, makes a
//!    one-time P-256 key and writes the request file for the custodians.
//! 2. Each custodian answers with `vaultctl recover share` on their own
//!    workstation and YubiKey (that step never touches the appliance).
//! 3. [`finish`] checks each answer's signature against the key enrolled in
//!    the data file, opens k shares with the one-time key, checks the rebuilt
//!    key against the bundle's check value, then seals it under this box's
//!    TPM and/or token with a new CA, audit key and admin
//!    ([`crate::init::recover`]).
//!
//! These steps open the data file, so they live in the daemon's binary:
//! `vaultctl`, the custodians' and auditors' workstation tool, never links
//! the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vault_store::Backend as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::{json, Value};
use vault_core::custodian::approval::{verify_vote, Custodian, Decision};
use vault_core::custodian::ecies;
use vault_core::custodian::recovery::{self, Bundle, RecoveryRequest};
use vault_store::{Store, StoreError, StoreOptions};

use crate::config::Config;
use crate::init::{write_file, InitError, InitReport};

/// Why a recovery step did nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// Bad input (files, answers, keys): nothing was changed.
    #[error("{0}")]
    Refused(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// Sealing under this box's devices, or writing the new credentials.
    #[error(transparent)]
    Init(#[from] InitError),
}

fn refused(m: impl Into<String>) -> RecoverError {
    RecoverError::Refused(m.into())
}

fn read_json(p: &Path) -> Result<Value, RecoverError> {
    let text = std::fs::read_to_string(p).map_err(|e| refused(format!("{}: {e}", p.display())))?;
    serde_json::from_str(&text).map_err(|_| refused(format!("{}: not JSON", p.display())))
}

/// The request file (`recover begin`'s output).
pub fn read_request(p: &Path) -> Result<(RecoveryRequest, Bundle), RecoverError> {
    recovery::parse_request_file(&read_json(p)?)
        .map_err(|e| refused(format!("{}: {e}", p.display())))
}

fn open_store(cfg: &Config) -> Result<Store, RecoverError> {
    let db = cfg.db_path();
    if !db.exists() {
        return Err(refused(format!(
            "{}: no data file (copy the old appliance's data file or backup there)",
            db.display()
        )));
    }
    Ok(Store::open(&db, StoreOptions::default())?)
}

fn meta(store: &Store, key: &str) -> Result<Vec<u8>, RecoverError> {
    store
        .get_meta(key)?
        .ok_or_else(|| refused(format!("the data file has no {key}")))
}

fn stored_bundle(store: &Store) -> Result<(Value, Bundle), RecoverError> {
    let raw = meta(store, "recovery_bundle").map_err(|_| {
        refused(
            "no recovery bundle: it is made on the running appliance with POST /v1/sys/recovery",
        )
    })?;
    let v: Value = serde_json::from_slice(&raw)
        .map_err(|_| refused("the data file's recovery bundle is not JSON"))?;
    let b = Bundle::from_json(&v).map_err(|e| refused(format!("recovery bundle: {e}")))?;
    Ok((v, b))
}

/// Writes the request file and the one-time key (0600); refuses to
/// overwrite a one-time key. Returns what to tell the custodians.
pub fn begin(
    cfg: &Config,
    reason: &str,
    out: &Path,
    key_out: &Path,
    hours: u32,
) -> Result<Value, RecoverError> {
    if key_out.exists() {
        return Err(refused(format!(
            "{} exists: refusing to overwrite a one-time key",
            key_out.display()
        )));
    }
    let store = open_store(cfg)?;
    let (bundle, parsed) = stored_bundle(&store)?;
    let appliance_id = String::from_utf8(meta(&store, "appliance_id")?)
        .map_err(|_| refused("the data file's appliance_id is not UTF-8"))?;
    if parsed.appliance_id != appliance_id {
        return Err(refused("the recovery bundle belongs to another appliance"));
    }
    let (pem, public) = ecies::one_time_key(&mut rand::rngs::OsRng)
        .map_err(|_| refused("could not encode the one-time key"))?;
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
    write_file(key_out, pem.as_bytes(), 0o600)?;
    let file = recovery::request_file(&req, &bundle);
    let text = serde_json::to_string_pretty(&file).map_err(|_| refused("encoding the request"))?;
    write_file(out, text.as_bytes(), 0o644)?;
    Ok(json!({
        "request_id": req.id(),
        "appliance_id": req.appliance_id,
        "k": parsed.k,
        "custodians": parsed.shares.iter().map(|s| s.custodian.clone()).collect::<Vec<_>>(),
        "one_time_key_sha256": ecies::key_fingerprint(&req.recipient_key),
        "request_file": out,
    }))
}

/// Checks the custodians' answers against the data file, rebuilds the root
/// key and seals it under this box ([`crate::init::recover`]); deletes the
/// one-time key when done.
pub fn finish(
    cfg: &Config,
    request: &Path,
    one_time_key: &Path,
    out: &Path,
    admin_name: &str,
    answers: &[PathBuf],
) -> Result<InitReport, RecoverError> {
    let (req, file_bundle) = read_request(request)?;
    let store = open_store(cfg)?;
    // Trust the bundle and the custodians' keys of the data file, not the
    // request file's copy.
    let (_, bundle) = stored_bundle(&store)?;
    if bundle != file_bundle || bundle.appliance_id != req.appliance_id {
        return Err(refused(
            "the request file's bundle is not this data file's recovery bundle",
        ));
    }
    let custodians = store.custodians()?;
    drop(store);
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(one_time_key)
            .map_err(|e| refused(format!("{}: {e}", one_time_key.display())))?,
    );
    let sk = p256::SecretKey::from_pkcs8_pem(&pem).map_err(|_| {
        refused(format!(
            "{}: not a P-256 PKCS#8 key",
            one_time_key.display()
        ))
    })?;
    let recipient = p256::PublicKey::from_sec1_bytes(&req.recipient_key)
        .map_err(|_| refused("the request's one-time key is malformed"))?;
    if sk.public_key() != recipient {
        return Err(refused("the one-time key is not the request's"));
    }
    let approval = req.approval();
    let mut shares = Vec::new();
    let mut who: Vec<String> = Vec::new();
    for p in answers {
        let at = |m: String| refused(format!("{}: {m}", p.display()));
        let a = read_json(p)?;
        let name = a["custodian"].as_str().unwrap_or_default().to_owned();
        if who.contains(&name) {
            return Err(at(format!("{name} answered twice")));
        }
        let c = custodians
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| at(format!("{name:?} is not an enrolled custodian")))?;
        let custodian = Custodian {
            id: c.name.clone(),
            groups: c.groups.clone(),
            signing_key: p256::PublicKey::from_sec1_bytes(&c.sig_key)
                .map_err(|_| at(format!("{name}: the enrolled signing key is malformed")))?,
        };
        let field = |f: &str| {
            B64.decode(a[f].as_str().unwrap_or_default())
                .map_err(|_| at(format!("{name}: {f} is not base64")))
        };
        let sig = field("signature")?;
        verify_vote(&approval, Decision::Approve, &custodian, &sig)
            .map_err(|e| at(format!("{name}: {e}")))?;
        let env = field("envelope")?;
        shares
            .push(recovery::open_forwarded(&req, &name, &sk, &env).map_err(|e| at(e.to_string()))?);
        who.push(name);
    }
    if shares.len() < bundle.k {
        return Err(refused(format!(
            "{} answers, {} needed: nothing was changed",
            shares.len(),
            bundle.k
        )));
    }
    let rk = recovery::recover(&bundle, &shares)
        .map_err(|e| refused(format!("{e}: nothing was changed")))?;
    let details: BTreeMap<String, String> = [
        ("request_id".to_owned(), req.id()),
        ("reason".to_owned(), req.reason.clone()),
        ("custodians".to_owned(), who.join(",")),
        ("k".to_owned(), bundle.k.to_string()),
    ]
    .into_iter()
    .collect();
    let report = crate::init::recover(cfg, out, admin_name, &rk, details)?;
    let _ = std::fs::remove_file(one_time_key);
    Ok(report)
}
