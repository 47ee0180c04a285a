//! Rows as the daemon sees them. None of these hold clear secret values.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct SecretInfo {
    pub path: String,
    pub exclusive: bool,
    pub current_version: u64,
    pub metadata: Value,
    pub created_at: i64,
    pub updated_at: i64,
    pub versions: Vec<VersionInfo>,
    pub open_checkouts: Vec<OpenCheckout>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u64,
    pub created_at: i64,
    pub created_by: String,
    pub key_version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCheckout {
    pub id: String,
    pub principal: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSummary {
    pub path: String,
    pub current_version: u64,
    pub exclusive: bool,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRow {
    /// Lower-case hex SHA-256 of the certificate DER.
    pub fingerprint: String,
    pub name: String,
    pub role: String,
    pub serial: String,
    pub not_after: i64,
    pub issued_at: i64,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRow {
    pub id: String,
    pub path: String,
    pub version: u64,
    pub principal: String,
    pub reason: String,
    pub exclusive: bool,
    pub created_at: i64,
    pub expires_at: i64,
    pub checked_in_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleVersion {
    pub path: String,
    pub version: u64,
    pub key_version: u32,
    pub wrapped_dek: Vec<u8>,
}
