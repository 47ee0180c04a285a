//! Image signing for the vault appliance.
//!
//! The appliance's boot chain measures the unified kernel image (UKI) into
//! PCR 11. The image build predicts that PCR value and signs the resulting
//! TPM2 `PolicyPCR` digest with the **image-signing key** (ECDSA P-256).
//! vaultd seals its root key with `PolicyAuthorize` over that key, so any
//! boot whose PCR 11 matches a policy signed by the key unseals, and a boot
//! of an unsigned or modified image does not. Update bundles are signed with
//! the same key.
//!
//! This crate is pure software (no TPM access, no network): it computes the
//! TPM policy digests the TPM would compute, signs and verifies policies and
//! bundles. The `vault-tpm` crate cross-checks its digests against a real TPM.
//!
//! # Layout
//!
//! * [`key`]: [`ImageSigningKey`] (secret, zeroized on drop, no `Debug`) and
//!   [`ImagePublicKey`] (PEM, key id, affine coordinates for the TPM).
//! * [`policy`]: TPM2 policy digest arithmetic (`PolicyPCR`,
//!   `PolicyAuthorize`, the key's TPM Name) and the signed boot policy
//!   ([`SignedPolicy`], a small JSON document).
//! * [`bundle`]: the signed update bundle (`VAULTUPD` header, manifest,
//!   signature, parts) with a streaming, bounded reader.
//! * [`ImageError`]: the crate's single error type with stable codes.
//! * The `vault-image` binary (`src/bin/vault-image.rs`) wraps all of this
//!   for the image build: `keygen`, `sign-policy`, `bundle`,
//!   `verify-bundle`, `verify-policy`.

#![forbid(unsafe_code)]

pub mod bundle;
mod error;
pub mod key;
pub mod policy;

pub use error::ImageError;
pub use key::{ImagePublicKey, ImageSigningKey};
pub use policy::SignedPolicy;

/// Shared validators for the textual fields of policies and manifests.
pub(crate) mod text {
    /// An image version: 1..=64 characters from `[0-9A-Za-z.+_-]`.
    pub(crate) fn valid_version(v: &str) -> bool {
        !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'_' | b'-'))
    }

    /// Exactly `2 * n` lowercase hex digits.
    pub(crate) fn is_lower_hex(s: &str, n: usize) -> bool {
        s.len() == 2 * n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// Decodes exactly `N` bytes of lowercase hex.
    pub(crate) fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
        if !is_lower_hex(s, N) {
            return None;
        }
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(out)
    }
}
