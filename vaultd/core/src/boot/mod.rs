//! The signed boot-policy format shared by `vault-tpm` and `vault-image`
//! (no I/O).
//!
//! The appliance's boot chain measures the unified kernel image into PCR 11.
//! The image build predicts that PCR value and signs the resulting TPM2
//! `PolicyPCR` digest with the **image-signing key** (ECDSA P-256);
//! `vault-tpm` seals with `PolicyAuthorize` over that key and checks signed
//! policies against the TPM. Both sides use the types and digest arithmetic
//! here, so the format has one definition.
//!
//! * [`key`]: [`ImageSigningKey`] (secret, zeroized on drop, no `Debug`) and
//!   [`ImagePublicKey`] (PEM, key id, affine coordinates for the TPM).
//! * [`policy`]: TPM2 policy digest arithmetic (`PolicyPCR`,
//!   `PolicyAuthorize`, the key's TPM Name) and the signed boot policy
//!   ([`SignedPolicy`], a small JSON document).
//! * [`text`]: validators for the textual fields of policies (also used by
//!   `vault-image`'s update-bundle manifest).
//! * [`BootFormatError`]: this module's error type with stable codes.

pub mod key;
pub mod policy;

pub use key::{ImagePublicKey, ImageSigningKey};
pub use policy::SignedPolicy;

/// Why parsing, signing or verifying a key or signed policy failed. Every
/// variant has a stable [`code`](BootFormatError::code); messages never
/// contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BootFormatError {
    /// A signed policy document is structurally invalid.
    #[error("signed policy is malformed: {0}")]
    PolicyMalformed(String),
    /// A signed policy does not verify under the given key.
    #[error("signed policy does not verify: {0}")]
    PolicyBadSignature(String),
    /// A raw ECDSA signature does not verify (see
    /// [`ImagePublicKey::verify_prehash`]).
    #[error("signature does not verify: {0}")]
    SignatureInvalid(String),
    /// A key could not be parsed.
    #[error("key is malformed: {0}")]
    KeyMalformed(String),
}

impl BootFormatError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BootFormatError::PolicyMalformed(_) => "policy_malformed",
            BootFormatError::PolicyBadSignature(_) => "policy_bad_signature",
            BootFormatError::SignatureInvalid(_) => "signature_invalid",
            BootFormatError::KeyMalformed(_) => "key_malformed",
        }
    }
}

/// Shared validators for the textual fields of policies and manifests.
pub mod text {
    /// An image version: 1..=64 characters from `[0-9A-Za-z.+_-]`.
    pub fn valid_version(v: &str) -> bool {
        !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'_' | b'-'))
    }

    /// Exactly `2 * n` lowercase hex digits.
    pub fn is_lower_hex(s: &str, n: usize) -> bool {
        s.len() == 2 * n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// Decodes exactly `N` bytes of lowercase hex.
    pub fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
        if !is_lower_hex(s, N) {
            return None;
        }
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(out)
    }
}
