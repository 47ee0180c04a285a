//! What the appliance's protocol needs from a custodian's token: a P-256
//! signing key (PIV slot 9c), a P-256 key-agreement key (slot 9d), its
//! serial and firmware version, and attestation of its keys.
//!
//! The YubiKey implementation lives outside the core (it does I/O); the
//! [`SoftToken`] here is for fast tests of the protocol only.

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::{PublicKey, SecretKey};

use super::ecies::{soft_ecdh, SharedX};
use crate::secret::Pin;

/// PIV slots the protocol uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// 9c, digital signature: approvals.
    Signature,
    /// 9d, key management: ECDH for share envelopes.
    KeyManagement,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("wrong PIN ({tries} tries left)")]
    WrongPin { tries: u8 },
    #[error("the PIN is blocked")]
    PinBlocked,
    #[error("the PIN has not been verified")]
    PinRequired,
    #[error("no key in slot {0:?}")]
    NoKey(Slot),
    #[error("not supported by this token: {0}")]
    Unsupported(&'static str),
    #[error("token error: {0}")]
    Device(String),
}

pub trait CustodianToken {
    fn serial(&self) -> u32;
    /// Firmware version (major, minor, patch).
    fn version(&self) -> (u8, u8, u8);
    fn verify_pin(&mut self, pin: &Pin) -> Result<(), TokenError>;
    fn public_key(&self, slot: Slot) -> Result<PublicKey, TokenError>;
    /// ECDSA P-256 over SHA-256(`msg`) with the 9c key, DER-encoded.
    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, TokenError>;
    /// ECDH with the 9d key: the shared x-coordinate.
    fn ecdh(&mut self, peer: &PublicKey) -> Result<SharedX, TokenError>;
    /// The attestation certificate (DER) of a slot's key.
    fn attest(&mut self, slot: Slot) -> Result<Vec<u8>, TokenError>;
    /// The device's attestation certificate (slot f9, DER) that signs the
    /// slot attestations; it chains to the vendor's attestation root.
    fn attestation_intermediate(&mut self) -> Result<Vec<u8>, TokenError>;
}

/// A software token for protocol tests: keys in memory, PIN checked, three
/// tries. Never used by the daemon.
pub struct SoftToken {
    serial: u32,
    pin: String,
    tries: u8,
    unlocked: bool,
    sig: SecretKey,
    kex: SecretKey,
    /// Test attestation: (9c leaf, 9d leaf, f9 intermediate), all DER.
    attestation: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

impl SoftToken {
    pub fn new(serial: u32, pin: &str) -> SoftToken {
        SoftToken {
            serial,
            pin: pin.into(),
            tries: 3,
            unlocked: false,
            sig: SecretKey::random(&mut rand::rngs::OsRng),
            kex: SecretKey::random(&mut rand::rngs::OsRng),
            attestation: None,
        }
    }

    /// Installs attestation certificates made by a test attestation CA
    /// (a software token has no vendor key to attest with).
    pub fn set_attestation(&mut self, sig_leaf: Vec<u8>, kex_leaf: Vec<u8>, intermediate: Vec<u8>) {
        self.attestation = Some((sig_leaf, kex_leaf, intermediate));
    }
}

impl CustodianToken for SoftToken {
    fn serial(&self) -> u32 {
        self.serial
    }
    fn version(&self) -> (u8, u8, u8) {
        (5, 4, 3)
    }
    fn verify_pin(&mut self, pin: &Pin) -> Result<(), TokenError> {
        if self.tries == 0 {
            return Err(TokenError::PinBlocked);
        }
        if crate::secret::ct_eq(pin.expose_secret().as_bytes(), self.pin.as_bytes()) {
            self.tries = 3;
            self.unlocked = true;
            Ok(())
        } else {
            self.tries -= 1;
            Err(TokenError::WrongPin { tries: self.tries })
        }
    }
    fn public_key(&self, slot: Slot) -> Result<PublicKey, TokenError> {
        Ok(match slot {
            Slot::Signature => self.sig.public_key(),
            Slot::KeyManagement => self.kex.public_key(),
        })
    }
    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, TokenError> {
        if !self.unlocked {
            return Err(TokenError::PinRequired);
        }
        let sig: Signature = SigningKey::from(&self.sig).sign(msg);
        Ok(sig.to_der().as_bytes().to_vec())
    }
    fn ecdh(&mut self, peer: &PublicKey) -> Result<SharedX, TokenError> {
        if !self.unlocked {
            return Err(TokenError::PinRequired);
        }
        Ok(soft_ecdh(&self.kex, peer))
    }
    fn attest(&mut self, slot: Slot) -> Result<Vec<u8>, TokenError> {
        match (&self.attestation, slot) {
            (Some((c, _, _)), Slot::Signature) | (Some((_, c, _)), Slot::KeyManagement) => {
                Ok(c.clone())
            }
            (None, _) => Err(TokenError::Unsupported(
                "a software token cannot attest its keys",
            )),
        }
    }
    fn attestation_intermediate(&mut self) -> Result<Vec<u8>, TokenError> {
        match &self.attestation {
            Some((_, _, f9)) => Ok(f9.clone()),
            None => Err(TokenError::Unsupported(
                "a software token cannot attest its keys",
            )),
        }
    }
}
