//! TPM 2.0 seal backend for vaultd.
//!
//! [`TpmSeal`] implements [`vault_core::seal::Seal`]: it seals a 32-byte key
//! into a TPM sealed-data object usable only through a policy, in one of two
//! modes:
//!
//! * **PolicyPCR** (`TpmConfig::authorized == None`, blob version 1): the
//!   authPolicy is PolicyPCR over the configured SHA-256 PCRs, so the key
//!   unseals only on this TPM and only while those PCRs hold the values they
//!   had at seal time.
//! * **Authorized** ([`AuthorizedPolicy`], blob version 2): the authPolicy is
//!   `PolicyAuthorize(image-signing key)`. It commits only to the key, not
//!   to PCR values, and no PCR is read at seal time. To unseal, vaultd looks
//!   in the configured directory for a signed boot policy
//!   (`vault_core::boot::SignedPolicy`, `*.json`) whose PolicyPCR digest equals
//!   the TPM's digest for the configured PCRs (e.g. PCR 11, the UKI), has
//!   the TPM verify its signature (`TPM2_VerifySignature` → ticket), and
//!   runs `PolicyPCR` + `PolicyAuthorize` in the unseal session. A new
//!   signed image therefore unseals the same blob; a boot whose PCR values
//!   no signed policy predicts does not.
//!
//! * The storage primary is a deterministic ECC P-256 restricted decryption
//!   key under the owner hierarchy. It is recreated for every operation and
//!   never persisted, so no NV or persistent handle is used.
//! * Create and unseal run in sessions salted with the primary, with AES-128
//!   CFB parameter encryption: neither the key sent to `TPM2_Create` nor the
//!   secret returned by `TPM2_Unseal` crosses the TCTI in clear.
//! * `tss_esapi::Context` is neither `Send` nor `Sync`, so `TpmSeal` holds
//!   only configuration and opens a fresh context per operation (about
//!   60 ms against swtpm; unsealing happens once, at daemon start).
//! * Every transient handle (primary, object, sessions) is flushed on success
//!   and on every error path: swtpm without a resource manager has only three
//!   object slots.
//!
//! # Layout
//!
//! * [`config`]: [`TpmConfig`] (TCTI string, PCR list, optional
//!   [`AuthorizedPolicy`]) and its validation.
//! * `blob`: the versioned on-disk blob (`VTPM`; version 1 with the PCR
//!   list, version 2 with the image key id; marshalled `TPMT_PUBLIC` and
//!   `TPM2B_PRIVATE`), parsed strictly.
//! * `signed`: finding the signed boot policy that matches this boot.
//! * `device`: ESAPI plumbing (templates, sessions, handle flushing).
//! * `error`: the single mapping from TSS/TPM response codes to
//!   [`SealError`].
//! * [`pcr`]: [`read_pcrs`]; [`extend_pcr`], to simulate a changed boot
//!   measurement.
//! * `swtpm` (feature `test-util`): runs a private software TPM for tests.
//! * `diag` (feature `test-util`): what the TPM itself computes (trial
//!   policy digests, the image key's Name, a blob's authPolicy), to
//!   cross-check `vault_core::boot::policy` against a real TPM.

#![forbid(unsafe_code)]

mod blob;
pub mod config;
mod device;
#[cfg(feature = "test-util")]
pub mod diag;
mod error;
pub mod pcr;
mod signed;
#[cfg(feature = "test-util")]
pub mod swtpm;

use std::path::PathBuf;

use vault_core::boot::ImagePublicKey;
use vault_core::keys::SealShare;
use vault_core::seal::{Seal, SealError, SealKind};
use vault_core::secret::Key32;

pub use config::{AuthorizedPolicy, ConfigError, TpmConfig};
pub use pcr::{extend_pcr, read_pcrs};

use crate::blob::Binding;
use crate::device::Tpm;

/// The TPM seal backend. Cheap to hold: it keeps only its configuration and
/// opens a TPM context inside each operation.
#[derive(Debug, Clone)]
pub struct TpmSeal {
    tcti: String,
    /// Canonical (sorted) PCR list.
    pcrs: Vec<u8>,
    authorized: Option<Authorized>,
}

/// Parsed authorized-mode configuration.
#[derive(Debug, Clone)]
struct Authorized {
    key: ImagePublicKey,
    dir: PathBuf,
}

impl TpmSeal {
    /// Validates `cfg` and checks that the TPM answers.
    ///
    /// Errors: an invalid configuration is a `Device` error with call
    /// `"config"`; an unreachable TPM is [`SealError::TpmUnavailable`].
    pub fn open(cfg: TpmConfig) -> Result<Self, SealError> {
        let config_err = |e: ConfigError| SealError::Device {
            kind: SealKind::Tpm,
            call: "config",
            message: e.to_string(),
        };
        cfg.validate().map_err(config_err)?;
        let pcrs = cfg.sorted_pcrs().map_err(config_err)?;
        let authorized = match (cfg.image_key().map_err(config_err)?, &cfg.authorized) {
            (Some(key), Some(a)) => Some(Authorized {
                key,
                dir: a.signatures_dir.clone(),
            }),
            _ => None,
        };
        let mut tpm = Tpm::connect(&cfg.tcti)?;
        tpm.get_random(1).map_err(|e| match e {
            SealError::Device { message, .. } => {
                SealError::TpmUnavailable(format!("TPM does not answer: {message}"))
            }
            other => other,
        })?;
        tracing::debug!(tcti = %cfg.tcti, pcrs = %config::format_pcrs(&pcrs),
            image_key = authorized.as_ref().map(|a| a.key.key_id()), "TPM reachable");
        Ok(TpmSeal {
            tcti: cfg.tcti,
            pcrs,
            authorized,
        })
    }

    /// The configured PCRs, sorted.
    pub fn pcrs(&self) -> &[u8] {
        &self.pcrs
    }

    /// The configured TCTI string.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// The image-signing key id, in authorized mode.
    pub fn image_key_id(&self) -> Option<String> {
        self.authorized.as_ref().map(|a| a.key.key_id())
    }

    fn unseal_authorized(&self, a: &Authorized, blob: blob::TpmBlob) -> Result<Key32, SealError> {
        let mut tpm = Tpm::connect(&self.tcti)?;
        let current = tpm.current_pcr_policy(&self.pcrs)?;
        let signed::Scan {
            candidates,
            summary,
        } = signed::scan(&a.dir, &a.key, &current)?;
        if candidates.is_empty() {
            let values = tpm
                .read_pcrs(&self.pcrs)
                .map(|v| {
                    v.iter()
                        .map(|(i, d)| format!("PCR {i} = {}", hex::encode(d)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|e| format!("PCR values unreadable: {e}"));
            return Err(SealError::PcrMismatch(format!(
                "no signed boot policy in {} matches this boot's PCR {} ({values}; \
                 PolicyPCR digest {}; image key {}; {summary})",
                a.dir.display(),
                config::format_pcrs(&self.pcrs),
                hex::encode(current),
                a.key.key_id()
            )));
        }
        // Several files may sign the same digest; the first one the TPM
        // accepts is used.
        let mut last_err = None;
        for c in &candidates {
            match tpm.verify_policy_signature(&a.key, &c.policy.policy, &c.policy.signature) {
                Ok((name, ticket)) => {
                    tracing::info!(file = %c.path.display(), version = %c.policy.version,
                        "unsealing with signed boot policy");
                    return tpm.unseal_authorized(
                        &self.pcrs,
                        blob.public,
                        blob.private,
                        &c.policy.policy,
                        &name,
                        ticket,
                    );
                }
                Err(SealError::PolicySignatureInvalid(m)) => {
                    tracing::warn!(file = %c.path.display(), "TPM rejected the policy signature");
                    last_err = Some(SealError::PolicySignatureInvalid(format!(
                        "{}: {m}",
                        c.path.display()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            SealError::PolicySignatureInvalid("no signed boot policy verified".into())
        }))
    }
}

impl Seal for TpmSeal {
    fn kind(&self) -> SealKind {
        SealKind::Tpm
    }

    fn seal(&self, share: &SealShare) -> Result<Vec<u8>, SealError> {
        let key = share.as_key32();
        let mut tpm = Tpm::connect(&self.tcti)?;
        let (binding, (public, private)) = match &self.authorized {
            None => (Binding::Pcrs(self.pcrs.clone()), tpm.seal(&self.pcrs, key)?),
            Some(a) => (
                Binding::Authorized {
                    key_id: key_id_bytes(&a.key),
                },
                tpm.seal_authorized(&a.key, key)?,
            ),
        };
        drop(tpm);
        blob::encode(&binding, &public, &private)
    }

    fn unseal(&self, blob: &[u8]) -> Result<SealShare, SealError> {
        self.unseal_key(blob).map(SealShare::from_key32)
    }
}

impl TpmSeal {
    fn unseal_key(&self, blob: &[u8]) -> Result<Key32, SealError> {
        let parsed = blob::decode(blob)?;
        match (&parsed.binding, &self.authorized) {
            (Binding::Pcrs(pcrs), None) => {
                if *pcrs != self.pcrs {
                    return Err(SealError::BlobCorrupt(format!(
                        "blob is sealed to PCRs [{}] but the configuration lists PCRs [{}]; \
                         restore the PCR list used at seal time",
                        config::format_pcrs(pcrs),
                        config::format_pcrs(&self.pcrs)
                    )));
                }
                let mut tpm = Tpm::connect(&self.tcti)?;
                tpm.unseal(&self.pcrs, parsed.public, parsed.private)
            }
            (Binding::Pcrs(pcrs), Some(a)) => Err(SealError::BlobCorrupt(format!(
                "blob is sealed with plain PolicyPCR to PCRs [{}] but the configuration \
                 uses a signed boot policy (image key {}); unseal it with the plain PCR \
                 configuration and re-seal",
                config::format_pcrs(pcrs),
                a.key.key_id()
            ))),
            (Binding::Authorized { key_id }, None) => Err(SealError::BlobCorrupt(format!(
                "blob is sealed to image-signing key {} (signed boot policy) but the \
                 configuration uses plain PolicyPCR; configure that image key",
                hex::encode(key_id)
            ))),
            (Binding::Authorized { key_id }, Some(a)) => {
                if *key_id != key_id_bytes(&a.key) {
                    return Err(SealError::PolicyKeyMismatch(format!(
                        "blob is sealed to image-signing key {} but the configured key is {}",
                        hex::encode(key_id),
                        a.key.key_id()
                    )));
                }
                self.unseal_authorized(a, parsed)
            }
        }
    }
}

/// The key id as 32 raw bytes (it is a lowercase hex SHA-256).
fn key_id_bytes(k: &ImagePublicKey) -> [u8; 32] {
    let mut out = [0u8; 32];
    // key_id() is always 64 hex digits.
    let _ = hex::decode_to_slice(k.key_id(), &mut out);
    out
}
