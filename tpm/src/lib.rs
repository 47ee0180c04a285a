//! TPM 2.0 seal backend for vaultd.
//!
//! [`TpmSeal`] implements [`vault_core::seal::Seal`]: it seals a 32-byte key
//! into a TPM sealed-data object whose only authorisation is a PolicyPCR
//! policy over the configured SHA-256 PCRs, so the key unseals only on this
//! TPM and only while those PCRs hold the values they had at seal time.
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
//! * [`config`]: [`TpmConfig`] (TCTI string, PCR list) and its validation.
//! * `blob`: the versioned on-disk blob (`VTPM`, version 1, PCR list,
//!   marshalled `TPMT_PUBLIC` and `TPM2B_PRIVATE`), parsed strictly.
//! * `device`: ESAPI plumbing (templates, sessions, handle flushing).
//! * `error`: the single mapping from TSS/TPM response codes to
//!   [`SealError`].
//! * [`pcr`]: [`extend_pcr`], to simulate a changed boot measurement.
//! * `swtpm` (feature `test-util`): runs a private software TPM for tests.

#![forbid(unsafe_code)]

mod blob;
pub mod config;
mod device;
mod error;
pub mod pcr;
#[cfg(feature = "test-util")]
pub mod swtpm;

use vault_core::seal::{Seal, SealError, SealKind};
use vault_core::secret::Key32;

pub use config::{ConfigError, TpmConfig};
pub use pcr::extend_pcr;

use crate::device::Tpm;

/// The TPM seal backend. Cheap to hold: it keeps only its configuration and
/// opens a TPM context inside each operation.
#[derive(Debug, Clone)]
pub struct TpmSeal {
    tcti: String,
    /// Canonical (sorted) PCR list.
    pcrs: Vec<u8>,
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
        let mut tpm = Tpm::connect(&cfg.tcti)?;
        tpm.get_random(1).map_err(|e| match e {
            SealError::Device { message, .. } => {
                SealError::TpmUnavailable(format!("TPM does not answer: {message}"))
            }
            other => other,
        })?;
        tracing::debug!(tcti = %cfg.tcti, pcrs = %config::format_pcrs(&pcrs), "TPM reachable");
        Ok(TpmSeal {
            tcti: cfg.tcti,
            pcrs,
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
}

impl Seal for TpmSeal {
    fn kind(&self) -> SealKind {
        SealKind::Tpm
    }

    fn seal(&self, key: &Key32) -> Result<Vec<u8>, SealError> {
        let mut tpm = Tpm::connect(&self.tcti)?;
        let (public, private) = tpm.seal(&self.pcrs, key)?;
        drop(tpm);
        blob::encode(&self.pcrs, &public, &private)
    }

    fn unseal(&self, blob: &[u8]) -> Result<Key32, SealError> {
        let parsed = blob::decode(blob)?;
        if parsed.pcrs != self.pcrs {
            return Err(SealError::BlobCorrupt(format!(
                "blob is sealed to PCRs [{}] but the configuration lists PCRs [{}]; \
                 restore the PCR list used at seal time",
                config::format_pcrs(&parsed.pcrs),
                config::format_pcrs(&self.pcrs)
            )));
        }
        let mut tpm = Tpm::connect(&self.tcti)?;
        tpm.unseal(&self.pcrs, parsed.public, parsed.private)
    }
}
