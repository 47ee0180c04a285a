//! [`Pkcs11Seal`]: AES-256-GCM under a non-extractable token key.
//!
//! Blob format (version 1): `0x01 ‖ iv (12) ‖ ciphertext (32) ‖ tag (16)`,
//! AAD `b"vaultd pkcs11 seal v1"`.

use std::sync::Mutex;

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use rand::RngCore;
use vault_core::keys::SealShare;
use vault_core::seal::{Seal, SealError, SealKind};
use vault_core::secret::Pin;
use zeroize::Zeroizing;

use crate::config::Pkcs11Config;
use crate::error::HsmError;
use crate::token;

const VERSION: u8 = 0x01;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD: &[u8] = vault_core::keys::label::PKCS11_SEAL_AAD;
/// Length of a blob sealing a 32-byte key.
const BLOB_LEN: usize = 1 + IV_LEN + 32 + TAG_LEN;

/// A [`Seal`] backed by an AES-256 key on a PKCS#11 token.
///
/// Holds one logged-in session (behind a mutex: sessions are not `Sync`).
/// Dropping the handle closes the session.
pub struct Pkcs11Seal {
    session: Mutex<Session>,
    key: ObjectHandle,
    cfg: Pkcs11Config,
}

impl std::fmt::Debug for Pkcs11Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Seal")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

impl Pkcs11Seal {
    /// Opens the token and finds the existing seal key.
    ///
    /// Errors: `TokenMissing` (module cannot be loaded, no token with that
    /// label), `PinIncorrect`, `PinLocked`, `KeyMissing`, `Device`.
    pub fn open(cfg: &Pkcs11Config, pin: &Pin) -> Result<Self, SealError> {
        Self::open_inner(cfg, pin, false).map_err(SealError::from)
    }

    /// Like [`open`](Self::open), but generates the seal key (AES-256,
    /// token, private, sensitive, non-extractable) if it is absent.
    pub fn open_or_create(cfg: &Pkcs11Config, pin: &Pin) -> Result<Self, SealError> {
        Self::open_inner(cfg, pin, true).map_err(SealError::from)
    }

    /// The configuration this handle was opened with.
    pub fn config(&self) -> &Pkcs11Config {
        &self.cfg
    }

    fn open_inner(cfg: &Pkcs11Config, pin: &Pin, create: bool) -> Result<Self, HsmError> {
        let _ops = token::ops_lock();
        let session = token::open_session(&cfg.module, &cfg.token_label, pin)?;
        let what = format!("AES key {:?} on token {:?}", cfg.key_label, cfg.token_label);
        let template = key_template(&cfg.key_label);
        let key = match token::find_one(&session, &template, &what)? {
            Some(k) => k,
            None if create => match token::find_one(&session, &template, &what)? {
                Some(k) => k,
                None => generate_key(&session, &cfg.key_label)?,
            },
            None => return Err(HsmError::KeyMissing(what)),
        };
        Ok(Pkcs11Seal {
            session: Mutex::new(session),
            key,
            cfg: cfg.clone(),
        })
    }
}

fn generate_key(session: &Session, label: &str) -> Result<ObjectHandle, HsmError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(token::key_id(label)),
    ];
    let key = session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| HsmError::from_cryptoki("C_GenerateKey", e))?;
    tracing::info!(key_label = label, "generated PKCS#11 seal key (AES-256)");
    Ok(key)
}

fn corrupt(why: &str) -> SealError {
    SealError::BlobCorrupt(format!("pkcs11 blob {why}"))
}

impl Seal for Pkcs11Seal {
    fn kind(&self) -> SealKind {
        SealKind::Pkcs11
    }

    fn seal(&self, key: &SealShare) -> Result<Vec<u8>, SealError> {
        let mut iv = [0u8; IV_LEN];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        let mut iv_param = iv;
        let params = GcmParams::new(&mut iv_param, AAD, (TAG_LEN as u64 * 8).into())
            .map_err(|e| SealError::from(HsmError::from_cryptoki("C_EncryptInit", e)))?;
        let ct = token::lock(&self.session)
            .encrypt(&Mechanism::AesGcm(params), self.key, key.expose_secret())
            .map_err(|e| SealError::from(HsmError::from_cryptoki("C_Encrypt", e)))?;
        if ct.len() != 32 + TAG_LEN {
            return Err(SealError::Device {
                kind: SealKind::Pkcs11,
                call: "C_Encrypt",
                message: format!("unexpected ciphertext length {}", ct.len()),
            });
        }
        let mut blob = Vec::with_capacity(BLOB_LEN);
        blob.push(VERSION);
        blob.extend_from_slice(&iv);
        blob.extend_from_slice(&ct);
        Ok(blob)
    }

    fn unseal(&self, blob: &[u8]) -> Result<SealShare, SealError> {
        if blob.len() != BLOB_LEN {
            return Err(corrupt(&format!(
                "has length {}, want {BLOB_LEN}",
                blob.len()
            )));
        }
        if blob[0] != VERSION {
            return Err(corrupt(&format!("has unknown version {}", blob[0])));
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&blob[1..1 + IV_LEN]);
        let params = GcmParams::new(&mut iv, AAD, (TAG_LEN as u64 * 8).into())
            .map_err(|e| SealError::from(HsmError::from_cryptoki("C_DecryptInit", e)))?;
        // SoftHSM reports a bad tag as CKR_GENERAL_ERROR, other tokens as
        // ENCRYPTED_DATA_INVALID: apart from session/device failures, every
        // decrypt failure means "not ours".
        let pt = token::lock(&self.session)
            .decrypt(&Mechanism::AesGcm(params), self.key, &blob[1 + IV_LEN..])
            .map(Zeroizing::new)
            .map_err(|e| {
                tracing::debug!(error = %e, "PKCS#11 unseal: decrypt failed");
                match HsmError::from_decrypt(e) {
                    Some(device) => SealError::from(device),
                    None => corrupt("failed authentication (wrong token or key, or tampered)"),
                }
            })?;
        SealShare::from_slice(&pt).ok_or_else(|| corrupt("decrypts to a value of the wrong length"))
    }
}
