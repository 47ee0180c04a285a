//! The vault's core: key hierarchy, barrier, seal composition and policy.
//!
//! This crate performs no I/O: no files, sockets, clocks or devices. Hardware
//! backends implement its [`seal::Seal`] trait in their own crates
//! (`vault-tpm`, `vault-hsm`); storage and the daemon call into it.
//!
//! # Layout
//!
//! * [`secret`]: secret-holding types (`Key32`, `SecretBytes`, `Pin`): no
//!   `Debug`, zeroized on drop, explicit `expose_secret()`.
//! * [`audit`]: audit entries, RFC 9162 Merkle trees and proofs, signed
//!   checkpoints.
//! * [`custodian`]: Shamir sharing, share encryption (ECIES) for custodians,
//!   signed approvals and quorum rules, YubiKey attestation, the sealed tier
//!   and root-key recovery.
//! * [`barrier`]: AES-256-GCM with a format byte and associated data.
//! * [`keys`]: the key hierarchy in one file: a type per key (`RootKey`,
//!   `KeyringKey`, `DataKey`, `AuditHmacKey`, `SealShare`) and every
//!   domain-separation label.
//! * [`keyring`]: keyring keys derived from the root key, per-version data
//!   keys, the associated-data encoding that binds ciphertext to its row.
//! * [`seal`]: the `Seal` trait, seal modes (`tpm`, `pkcs11`, `tpm+pkcs11`,
//!   `tpm|pkcs11`) and the stored sealed-root format.
//! * [`policy`]: roles, the permission table, path validation.
//! * [`boot`]: the signed boot-policy format shared by `vault-tpm` and
//!   `vault-image`: the image-signing key (ECDSA P-256), TPM2 policy digests
//!   (`PolicyPCR`, `PolicyAuthorize`, the key's TPM Name) and
//!   `SignedPolicy`.
//! * `testing` (tests and the `conformance` feature only): a software seal
//!   and the seal conformance suite every backend runs.

#![forbid(unsafe_code)]

pub mod audit;
pub mod barrier;
pub mod boot;
pub mod cron;
pub mod custodian;
pub mod keyring;
pub mod keys;
pub mod policy;
pub mod rotation;
pub mod seal;
pub mod secret;

#[cfg(any(test, feature = "conformance"))]
pub mod testing;
