//! Roles, what each may do, and validation of secret paths.
//!
//! Separation of duties is enforced here, in one table: `admin` manages
//! principals and the keyring but never reads a value; `writer` stores values
//! but cannot read them back; `pam` checks values out; `auditor` reads
//! metadata and audit data; `custodian` sees and votes on approval
//! requests (their votes are signatures made on their YubiKey); `metrics`
//! scrapes `/metrics` and nothing else.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Writer,
    Pam,
    Auditor,
    Custodian,
    /// A monitoring system's identity: reads `/metrics`, nothing else.
    Metrics,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Writer,
        Role::Pam,
        Role::Auditor,
        Role::Custodian,
        Role::Metrics,
    ];

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "writer" => Some(Role::Writer),
            "pam" => Some(Role::Pam),
            "auditor" => Some(Role::Auditor),
            "custodian" => Some(Role::Custodian),
            "metrics" => Some(Role::Metrics),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Pam => "pam",
            Role::Auditor => "auditor",
            Role::Custodian => "custodian",
            Role::Metrics => "metrics",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the API lets a principal do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Unseal,
    IssueCertificate,
    RotateKeyring,
    WriteSecret,
    ReadMetadata,
    ListSecrets,
    Checkout,
    /// Check in or renew one's own checkout.
    Checkin,
    /// List checkouts (a pam principal: only its own).
    ListCheckouts,
    /// End another principal's lease early, with a reason.
    RevokeCheckout,
    /// Audit log entries, proofs, checkpoints, value hashes.
    ReadAudit,
    /// Enrol a custodian's YubiKey (attested keys).
    EnrollCustodian,
    ListCustodians,
    /// Set the approvals a secret's checkouts need.
    SetApprovalPolicy,
    /// See approval and break-glass requests.
    ReadRequests,
    /// Submit a signed approval or denial.
    Vote,
    /// Stage a signed update bundle of the appliance image; see its state.
    UpdateImage,
    /// Scrape `/metrics`.
    ReadMetrics,
    /// Renew one's own client certificate (same name and role, new key).
    RenewOwnCertificate,
    /// Destroy a secret's old versions, or delete the secret.
    DestroySecret,
    /// Set, read and remove rotation policies; start a rotation.
    ManageRotation,
}

impl Action {
    /// Every action, in declaration order (the docs' permission tables are
    /// checked against `allowed` over this list).
    pub const ALL: [Action; 21] = [
        Action::Unseal,
        Action::IssueCertificate,
        Action::RotateKeyring,
        Action::WriteSecret,
        Action::ReadMetadata,
        Action::ListSecrets,
        Action::Checkout,
        Action::Checkin,
        Action::ListCheckouts,
        Action::RevokeCheckout,
        Action::ReadAudit,
        Action::EnrollCustodian,
        Action::ListCustodians,
        Action::SetApprovalPolicy,
        Action::ReadRequests,
        Action::Vote,
        Action::UpdateImage,
        Action::ReadMetrics,
        Action::RenewOwnCertificate,
        Action::DestroySecret,
        Action::ManageRotation,
    ];

    /// The action's name as the docs write it.
    pub fn name(self) -> &'static str {
        // An exhaustive match: a new action fails to compile until it is
        // named here, and `ALL` is checked against this in the tests.
        match self {
            Action::Unseal => "Unseal",
            Action::IssueCertificate => "IssueCertificate",
            Action::RotateKeyring => "RotateKeyring",
            Action::WriteSecret => "WriteSecret",
            Action::ReadMetadata => "ReadMetadata",
            Action::ListSecrets => "ListSecrets",
            Action::Checkout => "Checkout",
            Action::Checkin => "Checkin",
            Action::ListCheckouts => "ListCheckouts",
            Action::RevokeCheckout => "RevokeCheckout",
            Action::ReadAudit => "ReadAudit",
            Action::EnrollCustodian => "EnrollCustodian",
            Action::ListCustodians => "ListCustodians",
            Action::SetApprovalPolicy => "SetApprovalPolicy",
            Action::ReadRequests => "ReadRequests",
            Action::Vote => "Vote",
            Action::UpdateImage => "UpdateImage",
            Action::ReadMetrics => "ReadMetrics",
            Action::RenewOwnCertificate => "RenewOwnCertificate",
            Action::DestroySecret => "DestroySecret",
            Action::ManageRotation => "ManageRotation",
        }
    }
}

/// The single permission table.
pub fn allowed(role: Role, action: Action) -> bool {
    use Action::*;
    // Every role renews its own certificate, or it locks itself out at
    // expiry; a renewal keeps the name and role.
    if action == RenewOwnCertificate {
        return true;
    }
    match role {
        Role::Admin => matches!(
            action,
            Unseal
                | IssueCertificate
                | RotateKeyring
                | ReadMetadata
                | ListSecrets
                | EnrollCustodian
                | ListCustodians
                | SetApprovalPolicy
                | ReadRequests
                | UpdateImage
                | ListCheckouts
                | RevokeCheckout
                | ReadMetrics
                | DestroySecret
                | ManageRotation
        ),
        Role::Writer => matches!(action, WriteSecret | ReadMetadata | ListSecrets),
        Role::Pam => matches!(
            action,
            Checkout | Checkin | ListCheckouts | ReadMetadata | ListSecrets | ReadRequests
        ),
        Role::Auditor => matches!(
            action,
            ReadMetadata
                | ListSecrets
                | ReadAudit
                | ListCustodians
                | ReadRequests
                | ListCheckouts
                | ReadMetrics
        ),
        Role::Custodian => matches!(
            action,
            ReadMetadata | ListSecrets | ListCustodians | ReadRequests | Vote
        ),
        Role::Metrics => matches!(action, ReadMetrics),
    }
}

pub const MAX_PATH_LEN: usize = 256;

/// Why a secret path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid secret path: {0}")]
pub struct PathError(pub &'static str);

/// Paths are `/`-separated segments of `[A-Za-z0-9._-]`, no empty, `.` or
/// `..` segments, at most 256 bytes.
pub fn validate_path(p: &str) -> Result<(), PathError> {
    if p.is_empty() {
        return Err(PathError("empty"));
    }
    if p.len() > MAX_PATH_LEN {
        return Err(PathError("longer than 256 bytes"));
    }
    for seg in p.split('/') {
        if seg.is_empty() {
            return Err(PathError("empty segment"));
        }
        if seg == "." || seg == ".." {
            return Err(PathError("'.' and '..' segments are not allowed"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(PathError("segments may contain only A-Z a-z 0-9 . _ -"));
        }
    }
    Ok(())
}

/// Principal and certificate names: 1..=64 of `[A-Za-z0-9._-]`.
pub fn validate_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separation_of_duties() {
        assert!(!allowed(Role::Admin, Action::Checkout));
        assert!(!allowed(Role::Writer, Action::Checkout));
        assert!(!allowed(Role::Auditor, Action::Checkout));
        assert!(allowed(Role::Pam, Action::Checkout));
        assert!(!allowed(Role::Pam, Action::WriteSecret));
        assert!(allowed(Role::Writer, Action::WriteSecret));
        assert!(allowed(Role::Admin, Action::IssueCertificate));
        assert!(allowed(Role::Auditor, Action::ReadAudit));
        for r in [Role::Admin, Role::Writer, Role::Pam] {
            assert!(!allowed(r, Action::ReadAudit), "{r}");
        }
        // Only custodians vote; custodians never check out or write.
        for r in [Role::Admin, Role::Writer, Role::Pam, Role::Auditor] {
            assert!(!allowed(r, Action::Vote), "{r}");
        }
        assert!(allowed(Role::Custodian, Action::Vote));
        // Only an admin ends another's lease; pam renews its own (Checkin).
        for r in [Role::Writer, Role::Pam, Role::Auditor, Role::Custodian] {
            assert!(!allowed(r, Action::RevokeCheckout), "{r}");
        }
        assert!(allowed(Role::Admin, Action::RevokeCheckout));
        assert!(!allowed(Role::Admin, Action::Checkin));
        // The scraper reads metrics and nothing else; pam, writers and
        // custodians do not read metrics.
        for r in [Role::Writer, Role::Pam, Role::Custodian] {
            assert!(!allowed(r, Action::ReadMetrics), "{r}");
        }
        assert!(allowed(Role::Metrics, Action::ReadMetrics));
        assert!(!allowed(Role::Custodian, Action::Checkout));
        assert!(!allowed(Role::Custodian, Action::WriteSecret));
        assert!(!allowed(Role::Custodian, Action::EnrollCustodian));
        assert!(!allowed(Role::Custodian, Action::SetApprovalPolicy));
        for r in [Role::Writer, Role::Pam, Role::Auditor, Role::Custodian] {
            assert!(!allowed(r, Action::IssueCertificate), "{r}");
            assert!(!allowed(r, Action::Unseal), "{r}");
            assert!(!allowed(r, Action::RotateKeyring), "{r}");
        }
    }

    #[test]
    fn paths() {
        for ok in ["a", "demo/db-root", "x/y/z.1_2-3"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", ".", "a b", "a\0b", "ä"] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
        assert!(validate_path(&"a".repeat(257)).is_err());
        assert!(validate_path(&"a".repeat(256)).is_ok());
    }

    #[test]
    fn role_parse() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
