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
//! * [`key`] and [`policy`]: re-exported from `vault_core::boot`, where the
//!   signed boot-policy format lives (shared with `vault-tpm`):
//!   [`ImageSigningKey`] (secret, zeroized on drop, no `Debug`),
//!   [`ImagePublicKey`] (PEM, key id, affine coordinates for the TPM), TPM2
//!   policy digest arithmetic (`PolicyPCR`, `PolicyAuthorize`, the key's TPM
//!   Name) and the signed boot policy ([`SignedPolicy`], a small JSON
//!   document).
//! * [`bundle`]: the signed update bundle (`VAULTUPD` header, manifest,
//!   signature, parts) with a streaming, bounded reader.
//! * [`ImageError`]: the crate's single error type with stable codes; the
//!   format's [`BootFormatError`] converts into it with its codes unchanged.
//! * The `vault-image` binary (`src/bin/vault-image.rs`) wraps all of this
//!   for the image build: `keygen`, `sign-policy`, `bundle`,
//!   `verify-bundle`, `verify-policy`.

#![forbid(unsafe_code)]

pub mod bundle;
mod error;

pub use error::ImageError;
pub use vault_core::boot::{key, policy};
pub use vault_core::boot::{BootFormatError, ImagePublicKey, ImageSigningKey, SignedPolicy};
