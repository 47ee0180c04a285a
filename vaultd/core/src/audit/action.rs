//! Every audit action name, in one enum.
//!
//! The names are part of the entry encoding (the `action` field of every
//! Merkle leaf) and of what auditors and SIEM rules match on: they never
//! change. A new action is one new line in the `actions!` list below (which
//! makes the variant, its name and its place in [`AuditAction::ALL`]) and a
//! line in docs/AUDIT.md (`vaultd/core/tests/audit_actions.rs` checks it).

use std::fmt;

macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// What an audit entry records.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum AuditAction {
            $($(#[$doc])* $variant,)+
        }

        impl AuditAction {
            /// Every action, in declaration order.
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$variant,)+];

            /// The name in entries (stable).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$variant => $name,)+
                }
            }
        }
    };
}

actions! {
    // The appliance itself.
    SysInit => "sys.init",
    DaemonStart => "daemon.start",
    SysUnseal => "sys.unseal",
    SysSeal => "sys.seal",
    SysRecover => "sys.recover",
    SysBoot => "sys.boot",
    SysUpdateStage => "sys.update.stage",
    SysUpdateComplete => "sys.update.complete",
    SysUpdateRolledBack => "sys.update.rolled_back",
    SysUpdateInstallFailed => "sys.update.install_failed",
    /// A summary of the TLS handshakes that failed over a period.
    TlsHandshakeFailures => "tls.handshake_failures",
    /// A refused request to another `/v1/sys/` endpoint.
    SysRead => "sys.read",
    // Secrets and checkouts.
    SecretWrite => "secret.write",
    SecretCheckout => "secret.checkout",
    SecretMetadata => "secret.metadata",
    SecretList => "secret.list",
    /// A secret's old versions destroyed (at once before genesis; after
    /// it, the governance request's apply is `governance.apply`).
    SecretDestroy => "secret.destroy",
    /// A secret deleted, likewise; also a refused `DELETE
    /// /v1/secrets/{path}`.
    SecretDelete => "secret.delete",
    /// vaultd changed a secret's value on its target and made the new
    /// value current (principal `vaultd`).
    SecretRotate => "secret.rotate",
    /// A rotation gave up after its tries; the old value stays in service.
    RotationFailed => "rotation.failed",
    /// A heartbeat found that the target refuses the secret's current
    /// value (drift; principal `vaultd`), once until it is in sync again.
    SecretDrift => "secret.drift",
    /// A rotation policy set (before genesis; after it `governance.apply`).
    RotationSet => "rotation.set",
    RotationRemove => "rotation.remove",
    /// An admin started a rotation now.
    RotationRequest => "rotation.request",
    RotationRead => "rotation.read",
    CheckoutCheckin => "checkout.checkin",
    CheckoutExpire => "checkout.expire",
    CheckoutRenew => "checkout.renew",
    /// An admin ended a lease early, with a reason.
    CheckoutRevoke => "checkout.revoke",
    CheckoutList => "checkout.list",
    /// A PAM server registered a session recording's hash with a checkout.
    CheckoutRecording => "checkout.recording",
    // Principals and the keyring.
    CertIssue => "cert.issue",
    CertRenew => "cert.renew",
    CertServerReissue => "cert.server_reissue",
    PrincipalRevoke => "principal.revoke",
    PrincipalList => "principal.list",
    KeyringRotate => "keyring.rotate",
    KeyringStatus => "keyring.status",
    // The audit log and metrics.
    AuditHash => "audit.hash",
    AuditRead => "audit.read",
    AuditCheckpoint => "audit.checkpoint",
    MetricsRead => "metrics.read",
    // Custodians, approvals, break-glass, recovery.
    CustodianEnroll => "custodian.enroll",
    CustodianRemove => "custodian.remove",
    CustodianGroups => "custodian.groups",
    CustodianList => "custodian.list",
    PolicySet => "policy.set",
    /// An access grant given to a PAM server (immediately, before genesis;
    /// after it, the governance request's apply is `governance.apply`).
    GrantAdd => "grant.add",
    /// An access grant removed (always immediate: it narrows access).
    GrantRemove => "grant.remove",
    GrantList => "grant.list",
    PolicyList => "policy.list",
    RecoveryConfigure => "recovery.configure",
    RequestList => "request.list",
    RequestRead => "request.read",
    RequestCollect => "request.collect",
    ApprovalRequest => "approval.request",
    ApprovalVote => "approval.vote",
    BreakglassRequest => "breakglass.request",
    BreakglassCollect => "breakglass.collect",
    GovernancePropose => "governance.propose",
    GovernanceApply => "governance.apply",
    GovernanceRead => "governance.read",
    /// A refused request that matched no route.
    Request => "request",
}

impl AuditAction {
    /// The action of a stored name (`None`: not one this build knows).
    pub fn parse(name: &str) -> Option<AuditAction> {
        AuditAction::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == name)
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::AuditAction;

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut seen = std::collections::BTreeSet::new();
        for a in AuditAction::ALL {
            assert!(seen.insert(a.as_str()), "{a} twice");
            assert_eq!(AuditAction::parse(a.as_str()), Some(*a));
            assert!(a
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'));
        }
        assert_eq!(AuditAction::parse("secret.read"), None);
    }
}
