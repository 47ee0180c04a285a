//! PKCS#11 (HSM) backend for vaultd.
//!
//! Provides [`Pkcs11Seal`], a [`vault_core::seal::Seal`] that wraps the root
//! key (or its share) under a non-extractable AES-256 key held by a PKCS#11
//! token, and [`Pkcs11Signer`], an ECDSA P-256 key pair on the same token used
//! as the appliance's CA and for audit checkpoints. Key material never leaves
//! the token; the PIN is taken as a [`vault_core::secret::Pin`] and never
//! appears in `Debug` output or in errors.
//!
//! A PKCS#11 module can be initialised only once per process, so every handle
//! shares one context per module path (see [`pkcs11_module`]).
//!
//! # Layout
//!
//! * `config`: [`Pkcs11Config`], which module, token and key to use.
//! * `error`: [`SignerError`] and the single mapping from cryptoki errors to
//!   this crate's errors.
//! * `module`: process-wide, initialise-once registry of loaded modules.
//! * `token`: shared token plumbing: slot lookup by label, RW session, user
//!   login, object lookup by label.
//! * `seal`: [`Pkcs11Seal`] (CKM_AES_GCM under a token key).
//! * `signer`: [`Pkcs11Signer`] (CKM_ECDSA over a host-side SHA-256 digest).
//! * `softhsm` (feature `test-util`): set up SoftHSM2 token directories for
//!   tests and dev scripts.

#![forbid(unsafe_code)]

mod config;
mod error;
mod module;
mod seal;
mod signer;
#[cfg(any(test, feature = "test-util"))]
pub mod softhsm;
mod token;

pub use config::Pkcs11Config;
pub use error::SignerError;
pub use module::pkcs11_module;
pub use seal::Pkcs11Seal;
pub use signer::Pkcs11Signer;

/// The cryptoki version this crate is built against, for callers that need
/// the shared context returned by [`pkcs11_module`].
pub use cryptoki;
