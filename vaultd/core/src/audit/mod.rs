//! The tamper-evident audit log's formats (no I/O).
//!
//! * [`action`]: every audit action name ([`action::AuditAction`]).
//! * [`merkle`]: RFC 9162 §2.1 hashing, proofs and their verification.
//! * [`entry`]: the entry record and its canonical bytes (the Merkle leaf).
//! * [`note`]: C2SP tlog-checkpoint signed notes (ECDSA P-256).
//! * [`verify`]: offline verification of an exported log.

pub mod action;
pub mod entry;
pub mod merkle;
pub mod note;
pub mod verify;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::keys::{AuditHmacKey, RootKey};

/// The audit HMAC key ([`RootKey::audit_hmac_key`]).
pub fn derive_hmac_key(rk: &RootKey) -> AuditHmacKey {
    rk.audit_hmac_key()
}

/// `hmac-sha256:<hex>` of a sensitive field, as it appears in entries.
pub fn value_hmac(key: &AuditHmacKey, value: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret()).expect("any key length");
    m.update(value);
    let tag = m.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("hmac-sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_is_keyed_and_stable() {
        let rk = RootKey::generate();
        let k = derive_hmac_key(&rk);
        assert_eq!(
            value_hmac(&k, b"pw"),
            value_hmac(&derive_hmac_key(&rk), b"pw")
        );
        assert_ne!(value_hmac(&k, b"pw"), value_hmac(&k, b"pw2"));
        assert_ne!(
            value_hmac(&k, b"pw"),
            value_hmac(&derive_hmac_key(&RootKey::generate()), b"pw")
        );
        assert!(value_hmac(&k, b"pw").starts_with("hmac-sha256:"));
    }
}
