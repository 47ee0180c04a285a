//! Rotation connectors: what changes a credential on its target. A
//! connector applies a new value, verifies a value by logging in with it,
//! and ends the sessions an old value opened. The rotation state machine
//! (issue 12, items 2 and 3) drives them; this crate does the target side
//! only and never stores, logs or returns a value.
//!
//! Errors carry the target's words (a PostgreSQL error message, a
//! connection failure) and never a value: the values are passed to the
//! client library as passwords, and a PostgreSQL role's new password
//! reaches the server only as a SCRAM-SHA-256 verifier computed here.

#![forbid(unsafe_code)]

pub mod exec;
pub mod postgres;

pub use exec::ExecHook;
pub use postgres::PostgresRole;

/// Whether a target accepted a value at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// The target answered and refused the value (wrong password).
    Rejected,
}

/// Why a connector step did not complete. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The target did not answer (down, refused the connection, timed out).
    #[error("the target is unreachable: {0}")]
    Unreachable(String),
    /// The target refused the connector's own credential.
    #[error("the target refused the connector credential: {0}")]
    CredentialRefused(String),
    /// The target answered but refused the change.
    #[error("the target refused the change: {0}")]
    Refused(String),
    /// The step failed after it may have reached the target (a connection
    /// lost mid-way, a hook that failed or hung): the target may hold the
    /// new value or the old one.
    #[error("the change may or may not have reached the target: {0}")]
    Uncertain(String),
}

impl ConnectorError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectorError::Unreachable(_) => "target_unreachable",
            ConnectorError::CredentialRefused(_) => "connector_credential_refused",
            ConnectorError::Refused(_) => "target_refused",
            ConnectorError::Uncertain(_) => "target_uncertain",
        }
    }

    /// Whether the target certainly did not change: it was not reached,
    /// refused the connector's login, or refused the change as a whole.
    pub fn changed_nothing(&self) -> bool {
        !matches!(self, ConnectorError::Uncertain(_))
    }
}
