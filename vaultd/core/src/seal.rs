//! The seal: what keeps the root key (RK) at rest.
//!
//! A [`Seal`] backend (TPM 2.0 in `vault-tpm`, PKCS#11 in `vault-hsm`) wraps
//! and unwraps one 32-byte key. This module composes backends according to
//! the configured [`SealMode`] and defines the versioned, self-checking blob
//! that is stored on disk ([`SealedRoot`]).
//!
//! * `tpm` / `pkcs11`: one backend seals the whole RK.
//! * `tpm+pkcs11` (both needed): RK is split as `RK = A xor B`; the TPM seals
//!   `A` and the HSM seals `B`. Neither device alone learns anything about RK.
//! * `tpm|pkcs11` (either suffices): each backend seals the whole RK.
//!
//! Every blob carries a key check value (HMAC-SHA256 of a fixed label under
//! RK) so a wrong or mixed-up share is reported as `seal_blob_corrupt`
//! instead of producing a wrong root key that would then fail elsewhere.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::keys::{label, RootKey, SealShare};
use crate::secret::ct_eq;

/// Which hardware a seal backend uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SealKind {
    Tpm,
    Pkcs11,
}

impl fmt::Display for SealKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealKind::Tpm => "tpm",
            SealKind::Pkcs11 => "pkcs11",
        })
    }
}

/// A backend that can wrap and unwrap one 32-byte share of the root key.
///
/// Implementations must flush every device handle they open, must never put
/// key material into an error, and must map device failures to the most
/// specific [`SealError`] variant so operators see the real cause.
pub trait Seal: Send + Sync {
    fn kind(&self) -> SealKind;
    /// Wraps `share`, returning an opaque blob that only this device can open.
    fn seal(&self, share: &SealShare) -> Result<Vec<u8>, SealError>;
    /// Unwraps a blob produced by [`Seal::seal`].
    fn unseal(&self, blob: &[u8]) -> Result<SealShare, SealError>;
}

/// Why a seal operation failed. Each variant has a stable [`code`](SealError::code)
/// that the API reports in `seal-status`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// TPM policy check failed: the PCR values differ from those at seal time.
    #[error("TPM refused to unseal: PCR values differ from the sealed policy ({0})")]
    PcrMismatch(String),
    /// TPM is in dictionary-attack lockout.
    #[error("TPM is in dictionary-attack lockout ({0})")]
    TpmLockout(String),
    /// The TPM could not be reached or refused the connection.
    #[error("TPM unavailable: {0}")]
    TpmUnavailable(String),
    /// The PKCS#11 module could not be loaded or the token is not present.
    #[error("PKCS#11 token not found: {0}")]
    TokenMissing(String),
    /// Login to the token failed because the PIN is wrong.
    #[error("PKCS#11 login failed: PIN incorrect")]
    PinIncorrect,
    /// The PIN is locked on the token.
    #[error("PKCS#11 login failed: PIN locked")]
    PinLocked,
    /// The PIN could not be read (missing or unreadable PIN file).
    #[error("PKCS#11 PIN unavailable: {0}")]
    PinUnavailable(String),
    /// The wrapping key is not on the token.
    #[error("seal key not found on the device: {0}")]
    KeyMissing(String),
    /// The stored blob is malformed, truncated or fails authentication.
    #[error("sealed blob is corrupt or does not belong to this device: {0}")]
    BlobCorrupt(String),
    /// Any other failure reported by the device or its library.
    #[error("{kind} device error in {call}: {message}")]
    Device {
        kind: SealKind,
        call: &'static str,
        message: String,
    },
    /// The configuration names a backend that is not available.
    #[error("seal backend {0} is not configured")]
    NotConfigured(SealKind),
    /// The TPM rejected the signature of a signed boot policy
    /// (`TPM2_VerifySignature` failed).
    #[error("TPM rejected the signed boot policy: {0}")]
    PolicySignatureInvalid(String),
    /// The blob is sealed to a different image-signing key than the one
    /// configured.
    #[error("TPM blob is sealed to another image-signing key: {0}")]
    PolicyKeyMismatch(String),
}

impl SealError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SealError::PcrMismatch(_) => "tpm_pcr_mismatch",
            SealError::TpmLockout(_) => "tpm_lockout",
            SealError::TpmUnavailable(_) => "tpm_unavailable",
            SealError::TokenMissing(_) => "pkcs11_token_missing",
            SealError::PinIncorrect => "pkcs11_pin_incorrect",
            SealError::PinLocked => "pkcs11_pin_locked",
            SealError::PinUnavailable(_) => "pkcs11_pin_unavailable",
            SealError::KeyMissing(_) => "seal_key_missing",
            SealError::BlobCorrupt(_) => "seal_blob_corrupt",
            SealError::Device {
                kind: SealKind::Tpm,
                ..
            } => "tpm_error",
            SealError::Device {
                kind: SealKind::Pkcs11,
                ..
            } => "pkcs11_error",
            SealError::NotConfigured(_) => "seal_not_configured",
            SealError::PolicySignatureInvalid(_) => "tpm_policy_signature_invalid",
            SealError::PolicyKeyMismatch(_) => "tpm_policy_key_mismatch",
        }
    }
}

/// How the root key is sealed. Fixed at init and recorded in the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SealMode {
    #[serde(rename = "tpm")]
    Tpm,
    #[serde(rename = "pkcs11")]
    Pkcs11,
    /// Both devices are needed (defence in depth).
    #[serde(rename = "tpm+pkcs11")]
    Both,
    /// Either device suffices (availability).
    #[serde(rename = "tpm|pkcs11")]
    Either,
}

impl SealMode {
    pub fn parse(s: &str) -> Option<SealMode> {
        match s {
            "tpm" => Some(SealMode::Tpm),
            "pkcs11" => Some(SealMode::Pkcs11),
            "tpm+pkcs11" | "pkcs11+tpm" => Some(SealMode::Both),
            "tpm|pkcs11" | "pkcs11|tpm" => Some(SealMode::Either),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            SealMode::Tpm => "tpm",
            SealMode::Pkcs11 => "pkcs11",
            SealMode::Both => "tpm+pkcs11",
            SealMode::Either => "tpm|pkcs11",
        }
    }

    /// The backends this mode uses.
    pub fn kinds(&self) -> &'static [SealKind] {
        match self {
            SealMode::Tpm => &[SealKind::Tpm],
            SealMode::Pkcs11 => &[SealKind::Pkcs11],
            SealMode::Both | SealMode::Either => &[SealKind::Tpm, SealKind::Pkcs11],
        }
    }
}

impl fmt::Display for SealMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored form of the sealed root key (JSON, versioned).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealedRoot {
    pub format: u32,
    pub mode: SealMode,
    /// base64 blob per backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<String>,
    /// base64 HMAC-SHA256(RK, "vaultd root key check v1"): public, detects a
    /// wrong recombination without revealing RK.
    pub check: String,
}

const SEALED_ROOT_FORMAT: u32 = 1;
fn kcv(rk: &RootKey) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(rk.expose_secret()).expect("any key length");
    mac.update(label::ROOT_CHECK);
    mac.finalize().into_bytes().to_vec()
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Finds the backend of `kind` in `seals`.
fn backend<'a>(seals: &'a [&'a dyn Seal], kind: SealKind) -> Result<&'a dyn Seal, SealError> {
    seals
        .iter()
        .copied()
        .find(|s| s.kind() == kind)
        .ok_or(SealError::NotConfigured(kind))
}

/// Seals `rk` under `mode` with the given backends.
pub fn seal_root(
    mode: SealMode,
    seals: &[&dyn Seal],
    rk: &RootKey,
) -> Result<SealedRoot, SealError> {
    let mut out = SealedRoot {
        format: SEALED_ROOT_FORMAT,
        mode,
        tpm: None,
        pkcs11: None,
        check: b64().encode(kcv(rk)),
    };
    match mode {
        SealMode::Tpm => {
            out.tpm = Some(b64().encode(backend(seals, SealKind::Tpm)?.seal(&rk.whole_share())?))
        }
        SealMode::Pkcs11 => {
            let s = rk.whole_share();
            out.pkcs11 = Some(b64().encode(backend(seals, SealKind::Pkcs11)?.seal(&s)?))
        }
        SealMode::Both => {
            let (a, b) = rk.split_for_two_seals();
            out.tpm = Some(b64().encode(backend(seals, SealKind::Tpm)?.seal(&a)?));
            out.pkcs11 = Some(b64().encode(backend(seals, SealKind::Pkcs11)?.seal(&b)?));
        }
        SealMode::Either => {
            let s = rk.whole_share();
            out.tpm = Some(b64().encode(backend(seals, SealKind::Tpm)?.seal(&s)?));
            out.pkcs11 = Some(b64().encode(backend(seals, SealKind::Pkcs11)?.seal(&s)?));
        }
    }
    Ok(out)
}

/// How [`unseal_root`] obtains a backend: lazily, so a missing device is
/// reported with its own cause and, in `tpm|pkcs11` mode, does not stop the
/// other device from being tried.
pub trait SealProvider {
    fn open(&self, kind: SealKind) -> Result<Box<dyn Seal>, SealError>;
}

fn blob_for(sr: &SealedRoot, kind: SealKind) -> Result<Vec<u8>, SealError> {
    let s = match kind {
        SealKind::Tpm => sr.tpm.as_deref(),
        SealKind::Pkcs11 => sr.pkcs11.as_deref(),
    }
    .ok_or_else(|| SealError::BlobCorrupt(format!("no {kind} blob in sealed root")))?;
    b64()
        .decode(s)
        .map_err(|_| SealError::BlobCorrupt(format!("{kind} blob is not valid base64")))
}

fn unseal_one(
    provider: &dyn SealProvider,
    sr: &SealedRoot,
    kind: SealKind,
) -> Result<SealShare, SealError> {
    let blob = blob_for(sr, kind)?;
    provider.open(kind)?.unseal(&blob)
}

fn check(sr: &SealedRoot, rk: RootKey) -> Result<RootKey, SealError> {
    let want = b64()
        .decode(&sr.check)
        .map_err(|_| SealError::BlobCorrupt("check value is not valid base64".into()))?;
    if ct_eq(&kcv(&rk), &want) {
        Ok(rk)
    } else {
        Err(SealError::BlobCorrupt(
            "unsealed key does not match the key check value".into(),
        ))
    }
}

/// The failure of an unseal attempt: the primary error (whose code is
/// reported) and, in `tpm|pkcs11` mode, what every backend said.
#[derive(Debug)]
pub struct UnsealFailure {
    pub primary: SealError,
    pub details: Vec<(SealKind, SealError)>,
}

impl UnsealFailure {
    pub fn code(&self) -> &'static str {
        self.primary.code()
    }
    pub fn message(&self) -> String {
        if self.details.len() <= 1 {
            self.primary.to_string()
        } else {
            self.details
                .iter()
                .map(|(k, e)| format!("{k}: {e} [{}]", e.code()))
                .collect::<Vec<_>>()
                .join("; ")
        }
    }
}

impl From<SealError> for UnsealFailure {
    fn from(e: SealError) -> Self {
        UnsealFailure {
            primary: e,
            details: Vec::new(),
        }
    }
}

/// Recovers RK from a [`SealedRoot`].
pub fn unseal_root(sr: &SealedRoot, provider: &dyn SealProvider) -> Result<RootKey, UnsealFailure> {
    if sr.format != SEALED_ROOT_FORMAT {
        return Err(
            SealError::BlobCorrupt(format!("unknown sealed root format {}", sr.format)).into(),
        );
    }
    match sr.mode {
        SealMode::Tpm | SealMode::Pkcs11 => {
            let kind = if sr.mode == SealMode::Tpm {
                SealKind::Tpm
            } else {
                SealKind::Pkcs11
            };
            let share = unseal_one(provider, sr, kind)?;
            Ok(check(sr, RootKey::from_whole_share(share))?)
        }
        SealMode::Both => {
            let a = unseal_one(provider, sr, SealKind::Tpm)?;
            let b = unseal_one(provider, sr, SealKind::Pkcs11)?;
            Ok(check(sr, RootKey::from_two_shares(&a, &b))?)
        }
        SealMode::Either => {
            let mut details = Vec::new();
            for kind in [SealKind::Tpm, SealKind::Pkcs11] {
                match unseal_one(provider, sr, kind)
                    .and_then(|s| check(sr, RootKey::from_whole_share(s)))
                {
                    Ok(rk) => return Ok(rk),
                    Err(e) => details.push((kind, e)),
                }
            }
            // Report the first failure's code; the message names both.
            let (_, first) = details.remove(0);
            let mut all = vec![(SealKind::Tpm, clone_err(&first))];
            all.extend(details);
            Err(UnsealFailure {
                primary: first,
                details: all,
            })
        }
    }
}

fn clone_err(e: &SealError) -> SealError {
    // SealError holds only public text, so a textual copy is safe.
    match e {
        SealError::PcrMismatch(s) => SealError::PcrMismatch(s.clone()),
        SealError::TpmLockout(s) => SealError::TpmLockout(s.clone()),
        SealError::TpmUnavailable(s) => SealError::TpmUnavailable(s.clone()),
        SealError::TokenMissing(s) => SealError::TokenMissing(s.clone()),
        SealError::PinIncorrect => SealError::PinIncorrect,
        SealError::PinLocked => SealError::PinLocked,
        SealError::PinUnavailable(s) => SealError::PinUnavailable(s.clone()),
        SealError::KeyMissing(s) => SealError::KeyMissing(s.clone()),
        SealError::BlobCorrupt(s) => SealError::BlobCorrupt(s.clone()),
        SealError::Device {
            kind,
            call,
            message,
        } => SealError::Device {
            kind: *kind,
            call,
            message: message.clone(),
        },
        SealError::NotConfigured(k) => SealError::NotConfigured(*k),
        SealError::PolicySignatureInvalid(s) => SealError::PolicySignatureInvalid(s.clone()),
        SealError::PolicyKeyMismatch(s) => SealError::PolicyKeyMismatch(s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{SoftProvider, SoftSeal};

    fn provider(tpm_ok: bool, hsm_ok: bool) -> (SoftProvider, SoftSeal, SoftSeal) {
        let t = SoftSeal::new(SealKind::Tpm);
        let h = SoftSeal::new(SealKind::Pkcs11);
        (SoftProvider::new(&t, tpm_ok, &h, hsm_ok), t, h)
    }

    #[test]
    fn all_modes_round_trip() {
        for mode in [
            SealMode::Tpm,
            SealMode::Pkcs11,
            SealMode::Both,
            SealMode::Either,
        ] {
            let (p, t, h) = provider(true, true);
            let rk = RootKey::generate();
            let sr = seal_root(mode, &[&t, &h], &rk).unwrap();
            let back = unseal_root(&sr, &p).unwrap_or_else(|e| panic!("{mode}: {}", e.message()));
            assert!(back.ct_eq(&rk), "{mode}");
        }
    }

    #[test]
    fn both_mode_needs_both_and_shares_differ_from_rk() {
        let (_, t, h) = provider(true, true);
        let rk = RootKey::generate();
        let sr = seal_root(SealMode::Both, &[&t, &h], &rk).unwrap();
        let (p, _, _) = (SoftProvider::new(&t, true, &h, false), (), ());
        let e = unseal_root(&sr, &p).err().unwrap();
        assert_eq!(e.code(), "pkcs11_token_missing");
        let p = SoftProvider::new(&t, false, &h, true);
        assert_eq!(
            unseal_root(&sr, &p).err().unwrap().code(),
            "tpm_unavailable"
        );
        // Neither share is the root key.
        let a = t.unseal(&blob_for(&sr, SealKind::Tpm).unwrap()).unwrap();
        let b = h.unseal(&blob_for(&sr, SealKind::Pkcs11).unwrap()).unwrap();
        assert!(a.expose_secret() != rk.expose_secret() && b.expose_secret() != rk.expose_secret());
    }

    #[test]
    fn either_mode_survives_one_missing_device() {
        let (_, t, h) = provider(true, true);
        let rk = RootKey::generate();
        let sr = seal_root(SealMode::Either, &[&t, &h], &rk).unwrap();
        for (tok, hok) in [(true, false), (false, true)] {
            let p = SoftProvider::new(&t, tok, &h, hok);
            assert!(unseal_root(&sr, &p).unwrap().ct_eq(&rk));
        }
        let p = SoftProvider::new(&t, false, &h, false);
        let e = unseal_root(&sr, &p).err().unwrap();
        assert_eq!(e.code(), "tpm_unavailable");
        assert!(e.message().contains("pkcs11"), "{}", e.message());
    }

    #[test]
    fn wrong_check_value_is_corrupt() {
        let (p, t, h) = provider(true, true);
        let rk = RootKey::generate();
        let mut sr = seal_root(SealMode::Tpm, &[&t, &h], &rk).unwrap();
        sr.check = b64().encode([0u8; 32]);
        assert_eq!(
            unseal_root(&sr, &p).err().unwrap().code(),
            "seal_blob_corrupt"
        );
        sr.format = 9;
        assert_eq!(
            unseal_root(&sr, &p).err().unwrap().code(),
            "seal_blob_corrupt"
        );
    }

    #[test]
    fn mode_parse_round_trip() {
        for m in [
            SealMode::Tpm,
            SealMode::Pkcs11,
            SealMode::Both,
            SealMode::Either,
        ] {
            assert_eq!(SealMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(SealMode::parse("software"), None);
    }
}
