//! Errors, and the one place where cryptoki errors are classified.

use cryptoki::error::{Error as CkError, RvError};
use vault_core::seal::{SealError, SealKind};

/// Why a [`Pkcs11Signer`](crate::Pkcs11Signer) operation failed. Never
/// contains the PIN or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The PKCS#11 module could not be loaded or the token is not present.
    #[error("PKCS#11 token not found: {0}")]
    TokenMissing(String),
    /// Login to the token failed because the PIN is wrong.
    #[error("PKCS#11 login failed: PIN incorrect")]
    PinIncorrect,
    /// The PIN is locked on the token.
    #[error("PKCS#11 login failed: PIN locked")]
    PinLocked,
    /// The signing key pair is not on the token.
    #[error("signing key not found on the token: {0}")]
    KeyMissing(String),
    /// Any other failure reported by the token or its library.
    #[error("pkcs11 device error in {call}: {message}")]
    Device { call: &'static str, message: String },
}

impl SignerError {
    /// Stable machine-readable code (same codes as [`SealError::code`] where
    /// the cause is the same).
    pub fn code(&self) -> &'static str {
        match self {
            SignerError::TokenMissing(_) => "pkcs11_token_missing",
            SignerError::PinIncorrect => "pkcs11_pin_incorrect",
            SignerError::PinLocked => "pkcs11_pin_locked",
            SignerError::KeyMissing(_) => "signer_key_missing",
            SignerError::Device { .. } => "pkcs11_error",
        }
    }
}

/// Internal error shared by the seal and the signer; converted into the
/// public error of whichever handle the caller used.
#[derive(Debug)]
pub(crate) enum HsmError {
    TokenMissing(String),
    PinIncorrect,
    PinLocked,
    KeyMissing(String),
    Device { call: &'static str, message: String },
}

impl HsmError {
    /// The mapping from cryptoki errors to ours. `call` names the PKCS#11
    /// function (`"C_Encrypt"`) for the operator.
    pub(crate) fn from_cryptoki(call: &'static str, e: CkError) -> HsmError {
        match e {
            CkError::Pkcs11(RvError::PinIncorrect, _) => HsmError::PinIncorrect,
            CkError::Pkcs11(RvError::PinLocked, _) => HsmError::PinLocked,
            CkError::Pkcs11(
                rv @ (RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::DeviceRemoved
                | RvError::SlotIdInvalid),
                _,
            ) => HsmError::TokenMissing(format!("{call}: {rv:?}")),
            CkError::LibraryLoading(e) => {
                HsmError::TokenMissing(format!("cannot load PKCS#11 module: {e}"))
            }
            CkError::Pkcs11(rv, _) => HsmError::Device {
                call,
                message: format!("CKR {rv:?}"),
            },
            other => HsmError::Device {
                call,
                message: other.to_string(),
            },
        }
    }

    /// Classifies a failed `C_Decrypt` of a seal blob. Failures of the
    /// session or device keep their own cause; anything else (a bad tag is
    /// `CKR_GENERAL_ERROR` on SoftHSM, `CKR_ENCRYPTED_DATA_INVALID` or
    /// `CKR_ENCRYPTED_DATA_LEN_RANGE` elsewhere) means the blob is not ours.
    pub(crate) fn from_decrypt(e: CkError) -> Option<HsmError> {
        match e {
            CkError::Pkcs11(
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::HostMemory
                | RvError::TokenNotPresent
                | RvError::DeviceRemoved,
                _,
            ) => Some(HsmError::from_cryptoki("C_Decrypt", e)),
            _ => None,
        }
    }

    /// Prefixes the message of `TokenMissing` (e.g. with the module path).
    pub(crate) fn context(self, what: &str) -> HsmError {
        match self {
            HsmError::TokenMissing(m) => HsmError::TokenMissing(format!("{what}: {m}")),
            other => other,
        }
    }
}

impl From<HsmError> for SealError {
    fn from(e: HsmError) -> Self {
        match e {
            HsmError::TokenMissing(m) => SealError::TokenMissing(m),
            HsmError::PinIncorrect => SealError::PinIncorrect,
            HsmError::PinLocked => SealError::PinLocked,
            HsmError::KeyMissing(m) => SealError::KeyMissing(m),
            HsmError::Device { call, message } => SealError::Device {
                kind: SealKind::Pkcs11,
                call,
                message,
            },
        }
    }
}

impl From<HsmError> for SignerError {
    fn from(e: HsmError) -> Self {
        match e {
            HsmError::TokenMissing(m) => SignerError::TokenMissing(m),
            HsmError::PinIncorrect => SignerError::PinIncorrect,
            HsmError::PinLocked => SignerError::PinLocked,
            HsmError::KeyMissing(m) => SignerError::KeyMissing(m),
            HsmError::Device { call, message } => SignerError::Device { call, message },
        }
    }
}
