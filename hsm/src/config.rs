//! Which PKCS#11 module, token and key to use.

use std::path::PathBuf;

/// Where the seal key lives. The PIN is passed separately (as a
/// [`vault_core::secret::Pin`]) so this struct can be logged freely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Label of the token (slot ids are not stable, labels are).
    pub token_label: String,
    /// Label (`CKA_LABEL`) of the AES-256 seal key on the token.
    pub key_label: String,
}
