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
use crate::keys::{label, RootKey};
use crate::secret::{ct_eq, Key32};

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
    #[error("the request is for another appliance than the bundle")]
    WrongAppliance,
    #[error("malformed: {0}")]
    Malformed(String),
}

fn kcv(rk: &RootKey) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(rk.expose_secret()).expect("any key length");
    m.update(label::RECOVERY_CHECK);
    m.finalize().into_bytes().into()
}

/// Associated data of a recovery share.
pub fn share_aad(appliance_id: &str, custodian: &str) -> Vec<u8> {
    let mut v = label::RECOVERY_SHARE_AAD.to_vec();
    for f in [appliance_id.as_bytes(), custodian.as_bytes()] {
        v.extend_from_slice(&(f.len() as u32).to_be_bytes());
        v.extend_from_slice(f);
    }
    v
}

/// Splits RK among `custodians` (id, 9d public key), `k` needed.
pub fn split(
    rk: &RootKey,
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
pub fn recover(bundle: &Bundle, shares: &[Share]) -> Result<RootKey, RecoveryError> {
    if bundle.format != FORMAT {
        return Err(RecoveryError::Format(bundle.format));
    }
    let bytes = shamir::combine(shares, bundle.k)?;
    let rk = RootKey::from_recovered(Key32::from_slice(&bytes).ok_or(RecoveryError::CheckFailed)?);
    if ct_eq(&kcv(&rk), &bundle.check) {
        Ok(rk)
    } else {
        Err(RecoveryError::CheckFailed)
    }
}

/// A recovery on a new box: what custodians are asked to approve. Their
/// approval is a break-glass style signature (binding the operator's
/// one-time key) over [`RecoveryRequest::approval`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    pub appliance_id: String,
    pub nonce: [u8; 32],
    pub reason: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The operator's one-time P-256 key (SEC1 uncompressed).
    pub recipient_key: Vec<u8>,
}

impl RecoveryRequest {
    pub fn id(&self) -> String {
        let hex: String = self.nonce.iter().map(|b| format!("{b:02x}")).collect();
        format!("recovery-{hex}")
    }

    /// The request in the signed-approval form.
    pub fn approval(&self) -> super::approval::Request {
        super::approval::Request {
            request_id: self.id(),
            appliance_id: self.appliance_id.clone(),
            path: "sys/recovery".into(),
            version: 0,
            requester: "recovery".into(),
            reason: self.reason.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            nonce: self.nonce,
            recipient_key: Some(self.recipient_key.clone()),
            change: None,
        }
    }
}

/// Associated data of a share re-sealed to the operator's one-time key.
pub fn transfer_aad(req: &RecoveryRequest, custodian: &str) -> Vec<u8> {
    let mut v = label::RECOVERY_TRANSFER_AAD.to_vec();
    for f in [
        req.appliance_id.as_bytes(),
        &req.nonce[..],
        custodian.as_bytes(),
    ] {
        v.extend_from_slice(&(f.len() as u32).to_be_bytes());
        v.extend_from_slice(f);
    }
    v
}

/// A custodian's side: open their share of the bundle on their token and
/// re-seal it to the operator's one-time key.
pub fn forward_share(
    bundle: &Bundle,
    req: &RecoveryRequest,
    custodian: &str,
    kex_public: &PublicKey,
    ecdh: &mut dyn FnMut(&PublicKey) -> Result<SharedX, String>,
    rng: &mut dyn RngCore,
) -> Result<Vec<u8>, RecoveryError> {
    if bundle.appliance_id != req.appliance_id {
        return Err(RecoveryError::WrongAppliance);
    }
    let share = open_share(bundle, custodian, kex_public, ecdh)?;
    let to = PublicKey::from_sec1_bytes(&req.recipient_key)
        .map_err(|_| RecoveryError::Envelope(custodian.into(), EciesError::Malformed))?;
    Ok(ecies::seal_to(
        &to,
        &transfer_aad(req, custodian),
        &share.to_bytes(),
        rng,
    ))
}

/// The operator's side: open a forwarded share with the one-time key.
pub fn open_forwarded(
    req: &RecoveryRequest,
    custodian: &str,
    one_time: &p256::SecretKey,
    envelope: &[u8],
) -> Result<Share, RecoveryError> {
    let mut ecdh = |e: &PublicKey| Ok(ecies::soft_ecdh(one_time, e));
    let bytes = ecies::open_with(
        envelope,
        &one_time.public_key(),
        &transfer_aad(req, custodian),
        &mut ecdh,
    )
    .map_err(|e| RecoveryError::Envelope(custodian.into(), e))?;
    Ok(Share::from_bytes(&bytes)?)
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(v: &serde_json::Value, field: &str) -> Result<Vec<u8>, RecoveryError> {
    use base64::Engine as _;
    v.as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| RecoveryError::Malformed(format!("{field} is not base64")))
}

impl Bundle {
    /// The JSON form the appliance serves (`GET /v1/sys/recovery`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "format": self.format,
            "appliance_id": self.appliance_id,
            "k": self.k,
            "shares": self.shares.iter().map(|s| serde_json::json!({
                "custodian": s.custodian,
                "envelope": b64(&s.envelope),
            })).collect::<Vec<_>>(),
            "check": b64(&self.check),
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Result<Bundle, RecoveryError> {
        let bad = |f: &str| RecoveryError::Malformed(format!("bundle field {f}"));
        let format = v["format"]
            .as_u64()
            .and_then(|f| u32::try_from(f).ok())
            .ok_or_else(|| bad("format"))?;
        if format != FORMAT {
            return Err(RecoveryError::Format(format));
        }
        let shares = v["shares"]
            .as_array()
            .ok_or_else(|| bad("shares"))?
            .iter()
            .map(|s| {
                Ok(SealedShare {
                    custodian: s["custodian"]
                        .as_str()
                        .ok_or_else(|| bad("custodian"))?
                        .into(),
                    envelope: unb64(&s["envelope"], "envelope")?,
                })
            })
            .collect::<Result<_, RecoveryError>>()?;
        Ok(Bundle {
            format,
            appliance_id: v["appliance_id"]
                .as_str()
                .ok_or_else(|| bad("appliance_id"))?
                .into(),
            k: v["k"].as_u64().ok_or_else(|| bad("k"))? as usize,
            shares,
            check: unb64(&v["check"], "check")?
                .try_into()
                .map_err(|_| bad("check"))?,
        })
    }
}

/// The request file the operator hands to the custodians: the request and
/// the bundle it is for (`{"request": …, "bundle": …}`).
pub fn request_file(req: &RecoveryRequest, bundle: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({"request": req.to_json(), "bundle": bundle})
}

/// Parses a request file; the request and its bundle must name the same
/// appliance.
pub fn parse_request_file(
    v: &serde_json::Value,
) -> Result<(RecoveryRequest, Bundle), RecoveryError> {
    let req = RecoveryRequest::from_json(&v["request"])?;
    let bundle = Bundle::from_json(&v["bundle"])?;
    if bundle.appliance_id != req.appliance_id {
        return Err(RecoveryError::WrongAppliance);
    }
    Ok((req, bundle))
}

impl RecoveryRequest {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "appliance_id": self.appliance_id,
            "nonce": b64(&self.nonce),
            "reason": self.reason,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "recipient_key": b64(&self.recipient_key),
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Result<RecoveryRequest, RecoveryError> {
        let bad = |f: &str| RecoveryError::Malformed(format!("request field {f}"));
        Ok(RecoveryRequest {
            appliance_id: v["appliance_id"]
                .as_str()
                .ok_or_else(|| bad("appliance_id"))?
                .into(),
            nonce: unb64(&v["nonce"], "nonce")?
                .try_into()
                .map_err(|_| bad("nonce"))?,
            reason: v["reason"].as_str().ok_or_else(|| bad("reason"))?.into(),
            created_at: v["created_at"].as_i64().ok_or_else(|| bad("created_at"))?,
            expires_at: v["expires_at"].as_i64().ok_or_else(|| bad("expires_at"))?,
            recipient_key: unb64(&v["recipient_key"], "recipient_key")?,
        })
    }
}
