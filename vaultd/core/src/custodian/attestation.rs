//! YubiKey PIV attestation: proving a custodian's key was generated on a
//! YubiKey, and reading what the key's certificate says about it.
//!
//! A YubiKey signs, with its device attestation key (slot f9), a
//! certificate for a key generated in another slot. The f9 certificate is
//! signed by Yubico's PIV attestation root (newer firmware adds an
//! intermediate). The leaf carries Yubico extensions:
//!
//! | OID | content |
//! | --- | --- |
//! | 1.3.6.1.4.1.41482.3.3 | firmware version: 3 bytes major, minor, patch |
//! | 1.3.6.1.4.1.41482.3.7 | serial number: DER INTEGER |
//! | 1.3.6.1.4.1.41482.3.8 | PIN policy, touch policy: 2 bytes |
//!
//! The trust anchors are configuration: Yubico's public root in
//! production, a test root in tests (the virtual card cannot attest).
//!
//! A signature that verifies is not enough: a custodian's own 9c key can
//! sign a certificate too, and so could "attest" a software key with any
//! serial and policy. [`verify`] therefore validates the path the way
//! RFC 5280 does for the parts that matter here:
//!
//! - each certificate's issuer name equals its issuer's subject name
//!   (byte for byte, as encoded) — `attestation_name_mismatch`;
//! - every issuing certificate (the f9 certificate, any intermediate and
//!   the root) has basicConstraints `CA=true` — `attestation_issuer_not_ca`
//!   — and, if it has keyUsage, keyCertSign — `attestation_issuer_key_usage`;
//! - an issuer's pathLenConstraint is at least the number of intermediates
//!   below it (the f9 certificate counts, the leaf does not) —
//!   `attestation_path_length`;
//! - the leaf is not a CA — `attestation_leaf_is_ca`;
//! - every certificate, root included, is valid at `now` —
//!   `attestation_expired`;
//! - the leaf carries the three Yubico extensions above — `unattested_key`.
//!
//! Yubico's f9 certificates carry `CA=true, pathlen:0` and its slot
//! attestations no basicConstraints at all, so genuine chains pass; a
//! device certified under Yubico's older U2F root whose f9 certificate
//! lacks basicConstraints (a 2018 manufacturing defect) is refused, as is
//! any chain under that root, which vaultd does not ship.

use p256::pkcs8::DecodePublicKey as _;
use p256::PublicKey;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;

pub const OID_FIRMWARE: &str = "1.3.6.1.4.1.41482.3.3";
pub const OID_SERIAL: &str = "1.3.6.1.4.1.41482.3.7";
pub const OID_POLICY: &str = "1.3.6.1.4.1.41482.3.8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinPolicy {
    Never,
    Once,
    Always,
    Unknown(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchPolicy {
    Never,
    Always,
    Cached,
    Unknown(u8),
}

/// What a verified attestation establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    pub serial: u32,
    pub firmware: (u8, u8, u8),
    pub pin_policy: PinPolicy,
    pub touch_policy: TouchPolicy,
    pub public_key: PublicKey,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    #[error("malformed attestation certificate: {0}")]
    Malformed(String),
    #[error("the attestation chain does not lead to a trusted attestation root")]
    UnknownRoot,
    #[error("an attestation signature does not verify")]
    BadSignature,
    #[error("an attestation certificate is not valid at this time")]
    Expired,
    #[error("the attested key is not an ECDSA P-256 key")]
    WrongKeyType,
    #[error("the attestation lacks the YubiKey extension {0}")]
    MissingExtension(&'static str),
    #[error("the device does not meet policy: {0}")]
    Policy(String),
    /// A certificate's issuer name is not its issuer's subject name.
    #[error("the issuer name of {child} is not the subject name of {issuer}")]
    NameMismatch { child: String, issuer: String },
    /// A certificate that issues another is not marked as a CA
    /// (basicConstraints absent or `CA=false`), e.g. a slot key's own
    /// attestation used to sign an "attestation" for another key.
    #[error("{0} issues a certificate in the chain but is not a CA")]
    IssuerNotCa(String),
    /// An issuing certificate has keyUsage without keyCertSign.
    #[error("{0} issues a certificate in the chain but its key usage lacks keyCertSign")]
    IssuerKeyUsage(String),
    /// An issuer's pathLenConstraint allows fewer intermediates than follow it.
    #[error("{issuer} allows {allowed} intermediate certificates below it; the chain has {have}")]
    PathLength {
        issuer: String,
        allowed: u32,
        have: usize,
    },
    /// The attestation (leaf) certificate is itself a CA.
    #[error("the attestation certificate is a CA certificate, not a slot attestation")]
    LeafIsCa,
}

impl AttestationError {
    pub fn code(&self) -> &'static str {
        match self {
            AttestationError::Malformed(_) | AttestationError::MissingExtension(_) => {
                "unattested_key"
            }
            AttestationError::UnknownRoot => "unknown_attestation_root",
            AttestationError::BadSignature => "bad_attestation_signature",
            AttestationError::Expired => "attestation_expired",
            AttestationError::WrongKeyType => "wrong_key_type",
            AttestationError::Policy(_) => "device_policy",
            AttestationError::NameMismatch { .. } => "attestation_name_mismatch",
            AttestationError::IssuerNotCa(_) => "attestation_issuer_not_ca",
            AttestationError::IssuerKeyUsage(_) => "attestation_issuer_key_usage",
            AttestationError::PathLength { .. } => "attestation_path_length",
            AttestationError::LeafIsCa => "attestation_leaf_is_ca",
        }
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, AttestationError> {
    let (rest, c) =
        X509Certificate::from_der(der).map_err(|e| AttestationError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(AttestationError::Malformed("trailing bytes".into()));
    }
    Ok(c)
}

fn valid_at(c: &X509Certificate<'_>, now: i64) -> Result<(), AttestationError> {
    let v = c.validity();
    if now < v.not_before.timestamp() || now > v.not_after.timestamp() {
        return Err(AttestationError::Expired);
    }
    Ok(())
}

fn signed_by(
    child: &X509Certificate<'_>,
    parent: &X509Certificate<'_>,
) -> Result<(), AttestationError> {
    child
        .verify_signature(Some(parent.public_key()))
        .map_err(|_| AttestationError::BadSignature)
}

/// A certificate's subject, for error messages (names are public).
fn who(c: &X509Certificate<'_>) -> String {
    c.subject().to_string()
}

fn basic_constraints(
    c: &X509Certificate<'_>,
) -> Result<Option<x509_parser::extensions::BasicConstraints>, AttestationError> {
    c.basic_constraints()
        .map(|b| b.map(|b| b.value.clone()))
        .map_err(|e| AttestationError::Malformed(format!("basicConstraints: {e}")))
}

/// `issuer` may issue `child` when `below` intermediates (not counting the
/// leaf) follow it in the path: names chain, `issuer` is a CA whose key may
/// sign certificates, and its path length allows `below`.
fn may_issue(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    below: usize,
) -> Result<(), AttestationError> {
    if child.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(AttestationError::NameMismatch {
            child: who(child),
            issuer: who(issuer),
        });
    }
    let bc = basic_constraints(issuer)?
        .filter(|b| b.ca)
        .ok_or_else(|| AttestationError::IssuerNotCa(who(issuer)))?;
    let ku = issuer
        .key_usage()
        .map_err(|e| AttestationError::Malformed(format!("keyUsage: {e}")))?;
    if ku.is_some_and(|k| !k.value.key_cert_sign()) {
        return Err(AttestationError::IssuerKeyUsage(who(issuer)));
    }
    if let Some(allowed) = bc.path_len_constraint {
        if (allowed as usize) < below {
            return Err(AttestationError::PathLength {
                issuer: who(issuer),
                allowed,
                have: below,
            });
        }
    }
    Ok(())
}

fn ext<'a>(c: &'a X509Certificate<'_>, oid: &'static str) -> Result<&'a [u8], AttestationError> {
    c.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .map(|e| e.value)
        .ok_or(AttestationError::MissingExtension(oid))
}

/// Verifies `leaf` ← `chain[0]` (the device's f9 certificate) ← … ← one of
/// `roots`, all valid at `now` (unix seconds), validates the path (names,
/// CA flags, key usage, path lengths: see the module documentation), and
/// reads the extensions.
pub fn verify(
    leaf: &[u8],
    chain: &[&[u8]],
    roots: &[&[u8]],
    now: i64,
) -> Result<Attested, AttestationError> {
    let leaf_c = parse(leaf)?;
    valid_at(&leaf_c, now)?;
    if basic_constraints(&leaf_c)?.is_some_and(|b| b.ca) {
        return Err(AttestationError::LeafIsCa);
    }
    let chain_c: Vec<X509Certificate<'_>> =
        chain.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    if chain_c.is_empty() {
        return Err(AttestationError::Malformed(
            "no device attestation (f9) certificate".into(),
        ));
    }
    let mut child = &leaf_c;
    // chain[i] has the i intermediates chain[0..i] below it.
    for (below, c) in chain_c.iter().enumerate() {
        valid_at(c, now)?;
        may_issue(child, c, below)?;
        signed_by(child, c)?;
        child = c;
    }
    // A matching name is not trust: the chain must verify under a root.
    let roots_c: Vec<X509Certificate<'_>> = roots.iter().filter_map(|d| parse(d).ok()).collect();
    let root = roots_c
        .iter()
        .filter(|r| r.subject().as_raw() == child.issuer().as_raw())
        .find(|r| signed_by(child, r).is_ok())
        .ok_or(AttestationError::UnknownRoot)?;
    valid_at(root, now)?;
    // A configured root is trusted for its key, not for its flags: it must
    // still be a CA allowed to have the whole chain below it.
    may_issue(child, root, chain_c.len())?;

    let public_key = PublicKey::from_public_key_der(leaf_c.public_key().raw)
        .map_err(|_| AttestationError::WrongKeyType)?;
    let fw = ext(&leaf_c, OID_FIRMWARE)?;
    if fw.len() != 3 {
        return Err(AttestationError::Malformed(
            "firmware extension is not 3 bytes".into(),
        ));
    }
    let serial = parse_serial(ext(&leaf_c, OID_SERIAL)?)?;
    let pol = ext(&leaf_c, OID_POLICY)?;
    if pol.len() != 2 {
        return Err(AttestationError::Malformed(
            "policy extension is not 2 bytes".into(),
        ));
    }
    Ok(Attested {
        serial,
        firmware: (fw[0], fw[1], fw[2]),
        pin_policy: match pol[0] {
            1 => PinPolicy::Never,
            2 => PinPolicy::Once,
            3 => PinPolicy::Always,
            x => PinPolicy::Unknown(x),
        },
        touch_policy: match pol[1] {
            1 => TouchPolicy::Never,
            2 => TouchPolicy::Always,
            3 => TouchPolicy::Cached,
            x => TouchPolicy::Unknown(x),
        },
        public_key,
    })
}

/// DER INTEGER → u32 (serials are positive and fit in 32 bits).
fn parse_serial(v: &[u8]) -> Result<u32, AttestationError> {
    let bad = || AttestationError::Malformed("serial is not a DER INTEGER below 2^32".into());
    match v {
        [0x02, len, rest @ ..]
            if *len as usize == rest.len() && !rest.is_empty() && rest.len() <= 5 =>
        {
            if rest[0] & 0x80 != 0 {
                return Err(bad());
            }
            let mut n: u64 = 0;
            for b in rest {
                n = (n << 8) | u64::from(*b);
            }
            u32::try_from(n).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Device requirements an enrolment policy can set.
#[derive(Debug, Clone)]
pub struct DevicePolicy {
    pub require_touch: bool,
    pub require_pin_always: bool,
    pub min_firmware: Option<(u8, u8, u8)>,
}

/// Fails closed: touch and the PIN for every use are required unless a
/// caller says otherwise.
impl Default for DevicePolicy {
    fn default() -> Self {
        DevicePolicy {
            require_touch: true,
            require_pin_always: true,
            min_firmware: None,
        }
    }
}

impl DevicePolicy {
    pub fn check(&self, a: &Attested) -> Result<(), AttestationError> {
        if self.require_touch
            && !matches!(a.touch_policy, TouchPolicy::Always | TouchPolicy::Cached)
        {
            return Err(AttestationError::Policy(
                "the key must require touch".into(),
            ));
        }
        if self.require_pin_always && a.pin_policy != PinPolicy::Always {
            return Err(AttestationError::Policy(
                "the key must require the PIN for every use".into(),
            ));
        }
        if let Some(min) = self.min_firmware {
            if a.firmware < min {
                return Err(AttestationError::Policy(format!(
                    "firmware {}.{}.{} is older than {}.{}.{}",
                    a.firmware.0, a.firmware.1, a.firmware.2, min.0, min.1, min.2
                )));
            }
        }
        Ok(())
    }
}
