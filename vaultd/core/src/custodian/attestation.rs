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

fn ext<'a>(c: &'a X509Certificate<'_>, oid: &'static str) -> Result<&'a [u8], AttestationError> {
    c.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .map(|e| e.value)
        .ok_or(AttestationError::MissingExtension(oid))
}

/// Verifies `leaf` ← `chain[0]` (the device's f9 certificate) ← … ← one of
/// `roots`, all valid at `now` (unix seconds), and reads the extensions.
pub fn verify(
    leaf: &[u8],
    chain: &[&[u8]],
    roots: &[&[u8]],
    now: i64,
) -> Result<Attested, AttestationError> {
    let leaf_c = parse(leaf)?;
    valid_at(&leaf_c, now)?;
    let chain_c: Vec<X509Certificate<'_>> =
        chain.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    if chain_c.is_empty() {
        return Err(AttestationError::Malformed(
            "no device attestation (f9) certificate".into(),
        ));
    }
    let mut child = &leaf_c;
    for c in &chain_c {
        valid_at(c, now)?;
        signed_by(child, c)?;
        child = c;
    }
    // A matching name is not trust: the chain must verify under a root.
    let roots_c: Vec<X509Certificate<'_>> = roots.iter().filter_map(|d| parse(d).ok()).collect();
    let root = roots_c
        .iter()
        .filter(|r| r.subject() == child.issuer())
        .find(|r| signed_by(child, r).is_ok())
        .ok_or(AttestationError::UnknownRoot)?;
    valid_at(root, now)?;

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
#[derive(Debug, Clone, Default)]
pub struct DevicePolicy {
    pub require_touch: bool,
    pub require_pin_always: bool,
    pub min_firmware: Option<(u8, u8, u8)>,
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
