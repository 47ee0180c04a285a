//! Why the daemon could not start (re-exported as `vaultd::StartError`).

use vault_store::StoreError;

use crate::tls;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("the vault at {0} is not initialised: run `vaultd init` first")]
    NotInitialized(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    ServerCert(#[from] crate::servedcert::ServedCertError),
    #[error("attestation roots: {0}")]
    AttestationRoots(String),
    #[error("first-boot ceremony: {0}")]
    Bootstrap(String),
}
