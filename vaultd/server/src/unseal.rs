//! Unsealing at start and on `POST /v1/sys/unseal`.
//!
//! Devices are opened fresh on every attempt (the PIN file is re-read), so
//! fixing the cause (plugging the token in, correcting the PIN) and retrying
//! works without a restart. Any failure leaves the vault sealed with the
//! failure's stable code.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vault_core::keyring::Keyring;
use vault_core::seal::{
    unseal_root, Seal, SealError, SealKind, SealProvider, SealedRoot, UnsealFailure,
};
use vault_core::secret::Pin;
use vault_hsm::{Pkcs11Config, Pkcs11Seal, Pkcs11Signer};
use vault_tpm::{AuthorizedPolicy, TpmConfig, TpmSeal};

use crate::audit::Who;
use crate::ca::HsmCaKey;
use crate::config::{Config, Pkcs11Section};
use crate::state::{AppState, Unsealed, Vault};
use vault_core::audit::entry::Outcome;

/// Opens seal backends from the configuration.
pub struct ConfigProvider<'a> {
    pub config: &'a Config,
    /// At init the seal key is created if absent.
    pub create: bool,
}

pub(crate) fn read_pin(h: &Pkcs11Section) -> Result<Pin, SealError> {
    let raw = std::fs::read_to_string(&h.pin_file)
        .map_err(|e| SealError::PinUnavailable(format!("{}: {e}", h.pin_file.display())))?;
    let pin = Pin::new(raw.trim().to_owned());
    drop(zeroize::Zeroizing::new(raw));
    if pin.expose_secret().is_empty() {
        return Err(SealError::PinUnavailable(format!(
            "{} is empty",
            h.pin_file.display()
        )));
    }
    Ok(pin)
}

pub(crate) fn pkcs11_config(h: &Pkcs11Section, key_label: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: h.module.clone(),
        token_label: h.token_label.clone(),
        key_label: key_label.to_owned(),
    }
}

impl SealProvider for ConfigProvider<'_> {
    fn open(&self, kind: SealKind) -> Result<Box<dyn Seal>, SealError> {
        match kind {
            SealKind::Tpm => {
                let t = self
                    .config
                    .seal
                    .tpm
                    .as_ref()
                    .ok_or(SealError::NotConfigured(kind))?;
                let mut cfg = TpmConfig::new(t.tcti.clone(), t.pcrs.clone());
                if let (Some(key), Some(dir)) = (&t.policy_key, &t.policy_signatures) {
                    let pem = std::fs::read_to_string(key).map_err(|e| SealError::Device {
                        kind,
                        call: "config",
                        message: format!("seal.tpm.policy_key {}: {e}", key.display()),
                    })?;
                    cfg = cfg.with_authorized(AuthorizedPolicy {
                        public_key_pem: pem,
                        signatures_dir: dir.clone(),
                    });
                }
                if let Some(dev) = t.tcti.strip_prefix("device:") {
                    if !std::path::Path::new(dev).exists() {
                        return Err(SealError::TpmUnavailable(format!(
                            "this machine has no TPM ({dev} does not exist): \
                             the TPM seal modes cannot be used here"
                        )));
                    }
                }
                Ok(Box::new(TpmSeal::open(cfg)?))
            }
            SealKind::Pkcs11 => {
                let h = self
                    .config
                    .seal
                    .pkcs11
                    .as_ref()
                    .ok_or(SealError::NotConfigured(kind))?;
                let pin = read_pin(h)?;
                let cfg = pkcs11_config(h, &h.seal_key_label);
                Ok(Box::new(if self.create {
                    Pkcs11Seal::open_or_create(&cfg, &pin)?
                } else {
                    Pkcs11Seal::open(&cfg, &pin)?
                }))
            }
        }
    }
}

/// Opens (or at init creates) the ECDSA key `label` in the token.
fn open_signer(
    config: &Config,
    label: impl Fn(&Pkcs11Section) -> &str,
    create: bool,
) -> Result<Pkcs11Signer, String> {
    let h = config
        .seal
        .pkcs11
        .as_ref()
        .ok_or("no [seal.pkcs11] section")?;
    let pin = read_pin(h).map_err(|e| e.to_string())?;
    let label = label(h);
    let cfg = pkcs11_config(h, label);
    if create {
        Pkcs11Signer::open_or_create(&cfg, &pin, label)
    } else {
        Pkcs11Signer::open(&cfg, &pin, label)
    }
    .map_err(|e| e.to_string())
}

/// Opens the CA key in the token.
pub(crate) fn open_ca(config: &Config, create: bool) -> Result<HsmCaKey, String> {
    open_signer(config, |h| &h.ca_key_label, create).map(HsmCaKey::new)
}

/// Opens (or at init creates) the audit checkpoint key. When `expect_spki`
/// is given, the token's key must be the published one.
pub(crate) fn open_audit_signer(
    config: &Config,
    create: bool,
    expect_spki: &[u8],
) -> Result<Pkcs11Signer, String> {
    let signer = open_signer(config, |h| &h.audit_key_label, create)?;
    if !expect_spki.is_empty() && signer.public_key_spki_der() != expect_spki {
        return Err("the token's audit key is not the published audit key".into());
    }
    Ok(signer)
}

/// One unseal attempt (blocking: talks to devices). On failure the vault is
/// (still) sealed with the failure's code and message.
///
/// Every attempt is audited; an unseal whose entry cannot be written is
/// undone (no audit, no access).
pub fn try_unseal(state: &AppState, who: &Who) -> Result<(), UnsealFailure> {
    if !state.is_sealed() {
        retry_ca(state);
        return Ok(());
    }
    let result = unseal_inner(state);
    match &result {
        Ok(()) => {
            let mut d = who.draft(state, "sys.unseal", "", Outcome::Success, "");
            d.details
                .insert("mode".into(), state.config.seal.mode.clone());
            if let Err(e) = state.store.audit(d) {
                tracing::error!(error = %e, "unseal could not be audited; staying sealed");
                state.set_sealed(
                    "audit_unavailable",
                    format!("the unseal could not be audited: {e}"),
                );
                return Err(SealError::Device {
                    kind: vault_core::seal::SealKind::Pkcs11,
                    call: "audit",
                    message: "the unseal could not be audited".into(),
                }
                .into());
            }
            state.metrics.sealed.store(0, Ordering::Relaxed);
            tracing::info!(mode = %state.config.seal.mode, "vault unsealed");
        }
        Err(f) => {
            tracing::warn!(code = f.code(), reason = %f.message(), "vault remains sealed");
            state.set_sealed(f.code(), f.message());
            let mut d = who.draft(state, "sys.unseal", "", Outcome::Error, f.code());
            d.details.insert("reason".into(), f.message());
            if let Err(e) = state.store.audit(d) {
                tracing::error!(error = %e, "failed unseal could not be audited");
            }
        }
    }
    result
}

fn unseal_inner(state: &AppState) -> Result<(), UnsealFailure> {
    let raw = state
        .store
        .get_meta("sealed_root")
        .map_err(|e| SealError::BlobCorrupt(format!("cannot read sealed root: {e}")))?
        .ok_or_else(|| {
            SealError::BlobCorrupt("no sealed root: the vault is not initialised".into())
        })?;
    let sr: SealedRoot = serde_json::from_slice(&raw)
        .map_err(|e| SealError::BlobCorrupt(format!("sealed root does not parse: {e}")))?;
    if sr.mode != state.config.seal_mode() {
        return Err(SealError::BlobCorrupt(format!(
            "the vault was sealed in mode {} but the configuration says {}",
            sr.mode,
            state.config.seal_mode()
        ))
        .into());
    }
    let rk = unseal_root(
        &sr,
        &ConfigProvider {
            config: &state.config,
            create: false,
        },
    )?;
    let versions = state
        .store
        .keyring_versions()
        .map_err(|e| SealError::BlobCorrupt(format!("cannot read keyring: {e}")))?;
    let keyring = Keyring::load(&rk, &versions)
        .map_err(|e| SealError::BlobCorrupt(format!("keyring: {e}")))?;
    let ca = match open_ca(&state.config, false) {
        Ok(k) => Some(Arc::new(k)),
        Err(e) => {
            tracing::warn!(error = %e, "CA key unavailable: certificate issuance is disabled until POST /v1/sys/unseal reopens it");
            None
        }
    };
    let audit_signer = match open_audit_signer(&state.config, false, &state.audit_spki) {
        Ok(k) => Some(Arc::new(k)),
        Err(e) => {
            tracing::warn!(error = %e, "audit checkpoint key unavailable: no new checkpoints until it is");
            None
        }
    };
    let audit_hmac = vault_core::audit::derive_hmac_key(&rk);
    let since = state.now();
    *state.vault.write().unwrap_or_else(|e| e.into_inner()) = Vault::Unsealed(Unsealed {
        keyring: Arc::new(keyring),
        rk,
        ca,
        audit_signer,
        audit_hmac,
        since,
    });
    Ok(())
}

/// Unsealed but without the CA key (token was absent at unseal): try again.
fn retry_ca(state: &AppState) {
    if state.ca().is_some() {
        return;
    }
    match open_ca(&state.config, false) {
        Ok(k) => {
            if let Vault::Unsealed(u) = &mut *state.vault.write().unwrap_or_else(|e| e.into_inner())
            {
                u.ca = Some(Arc::new(k));
                tracing::info!("CA key reopened; certificate issuance enabled");
            }
        }
        Err(e) => tracing::warn!(error = %e, "CA key still unavailable"),
    }
}
