//! Recovery of the root key by custodians when the appliance's TPM or HSM
//! is lost.
//!
//! At init the root key is split k-of-n ([`super::shamir`]) and each share is
//! sealed to one custodian's 9d key ([`super::ecies`]) with associated data
//! binding it to the appliance, the custodian and the bundle's version. The
//! bundle also carries a key check value (HMAC-SHA256 of a fixed label under
//! RK), so a recovery with wrong or mixed shares is refused instead of
//! producing a wrong root key.

use hmac::{Hmac, Mac};
use p256::PublicKey;
use rand::RngCore;
use sha2::Sha256;

use super::ecies::{self, EciesError, SharedX};
use super::shamir::{self, ShamirError, Share};
use crate::secret::{ct_eq, Key32};

const KCV_LABEL: &[u8] = b"vaultd recovery check v1";
pub const FORMAT: u32 = 1;

/// One custodian's sealed share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedShare {
    pub custodian: String,
    pub envelope: Vec<u8>,
}

/// What the appliance stores (public: only custodians can open shares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub format: u32,
    pub appliance_id: String,
    pub k: usize,
    pub shares: Vec<SealedShare>,
    pub check: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    #[error(transparent)]
    Shamir(#[from] ShamirError),
    #[error("share of {0}: {1}")]
    Envelope(String, EciesError),
    #[error("no share for custodian {0} in this bundle")]
    UnknownCustodian(String),
    #[error("the recovered key does not match the bundle's check value")]
    CheckFailed,
    #[error("unknown bundle format {0}")]
    Format(u32),
}

fn kcv(rk: &Key32) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(rk.expose_secret()).expect("any key length");
    m.update(KCV_LABEL);
    m.finalize().into_bytes().into()
}

/// Associated data of a recovery share.
pub fn share_aad(appliance_id: &str, custodian: &str) -> Vec<u8> {
    let mut v = b"vaultd recovery share v1".to_vec();
    for f in [appliance_id.as_bytes(), custodian.as_bytes()] {
        v.extend_from_slice(&(f.len() as u32).to_be_bytes());
        v.extend_from_slice(f);
    }
    v
}

/// Splits RK among `custodians` (id, 9d public key), `k` needed.
pub fn split(
    rk: &Key32,
    appliance_id: &str,
    custodians: &[(String, PublicKey)],
    k: usize,
    rng: &mut dyn RngCore,
) -> Result<Bundle, RecoveryError> {
    let shares = shamir::split(rk.expose_secret(), k, custodians.len(), rng)?;
    let sealed = shares
        .iter()
        .zip(custodians)
        .map(|(s, (id, pk))| SealedShare {
            custodian: id.clone(),
            envelope: ecies::seal_to(pk, &share_aad(appliance_id, id), &s.to_bytes(), rng),
        })
        .collect();
    Ok(Bundle {
        format: FORMAT,
        appliance_id: appliance_id.into(),
        k,
        shares: sealed,
        check: kcv(rk),
    })
}

/// A custodian opens their share (ECDH on their token).
pub fn open_share(
    bundle: &Bundle,
    custodian: &str,
    kex_public: &PublicKey,
    ecdh: &mut dyn FnMut(&PublicKey) -> Result<SharedX, String>,
) -> Result<Share, RecoveryError> {
    let s = bundle
        .shares
        .iter()
        .find(|s| s.custodian == custodian)
        .ok_or_else(|| RecoveryError::UnknownCustodian(custodian.into()))?;
    let bytes = ecies::open_with(
        &s.envelope,
        kex_public,
        &share_aad(&bundle.appliance_id, custodian),
        ecdh,
    )
    .map_err(|e| RecoveryError::Envelope(custodian.into(), e))?;
    Ok(Share::from_bytes(&bytes)?)
}

/// Combines k opened shares into RK, checked against the bundle.
pub fn recover(bundle: &Bundle, shares: &[Share]) -> Result<Key32, RecoveryError> {
    if bundle.format != FORMAT {
        return Err(RecoveryError::Format(bundle.format));
    }
    let bytes = shamir::combine(shares, bundle.k)?;
    let rk = Key32::from_slice(&bytes).ok_or(RecoveryError::CheckFailed)?;
    if ct_eq(&kcv(&rk), &bundle.check) {
        Ok(rk)
    } else {
        Err(RecoveryError::CheckFailed)
    }
}
