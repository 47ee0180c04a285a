//! The lifecycle of an approval request, as typed values: what kind of
//! request it is, the status stored with it, and the phase a caller sees.
//!
//! A request is opened `pending`; a vote that completes the quorum makes it
//! `approved`, a deny makes it `denied` (both final). Expiry is not stored:
//! a pending request whose time has passed is `expired`, computed from the
//! clock. Collection is recorded separately (`collected_at`) and shows as
//! the phase `collected`.
//!
//! The stored strings (`as_str`) are the database's and the audit log's;
//! they never change. `parse` refuses anything else, so a row with an
//! unknown value is not acted on.

use super::approval::{Decision, Status};
use crate::audit::action::AuditAction;

/// A gated checkout of a standard-tier secret, the opening of a
/// sealed-tier (break-glass) secret, or a control-plane change under the
/// governance quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    Checkout,
    Breakglass,
    Governance,
}

impl RequestKind {
    pub const ALL: [RequestKind; 3] = [
        RequestKind::Checkout,
        RequestKind::Breakglass,
        RequestKind::Governance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Checkout => "checkout",
            RequestKind::Breakglass => "breakglass",
            RequestKind::Governance => "governance",
        }
    }

    pub fn parse(s: &str) -> Option<RequestKind> {
        RequestKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The audit action of opening a request of this kind.
    pub fn open_action(self) -> AuditAction {
        match self {
            RequestKind::Checkout => AuditAction::ApprovalRequest,
            RequestKind::Breakglass => AuditAction::BreakglassRequest,
            RequestKind::Governance => AuditAction::GovernancePropose,
        }
    }
}

/// The status stored with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestStatus {
    Pending,
    Approved,
    Denied,
}

impl RequestStatus {
    pub const ALL: [RequestStatus; 3] = [
        RequestStatus::Pending,
        RequestStatus::Approved,
        RequestStatus::Denied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<RequestStatus> {
        RequestStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What to store after a vote that left the tally at `s`. (A vote on an
    /// expired request is refused before it is counted, so `Expired` here
    /// can only be a tally still short of approvals: it stays pending.)
    pub fn after_vote(s: &Status) -> RequestStatus {
        match s {
            Status::Approved => RequestStatus::Approved,
            Status::Denied { .. } => RequestStatus::Denied,
            Status::Pending(_) | Status::Expired => RequestStatus::Pending,
        }
    }

    /// The phase a caller is shown after a vote that stored `self`.
    pub fn phase(self) -> &'static str {
        match self {
            RequestStatus::Pending => Phase::PendingApproval.as_str(),
            RequestStatus::Approved => Phase::Approved.as_str(),
            RequestStatus::Denied => Phase::Denied.as_str(),
        }
    }
}

/// What a caller sees of a request: its tally against the clock, and
/// whether it was collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    PendingApproval,
    Approved,
    Denied,
    Expired,
    Collected,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PendingApproval => "pending_approval",
            Phase::Approved => "approved",
            Phase::Denied => "denied",
            Phase::Expired => "expired",
            Phase::Collected => "collected",
        }
    }

    /// The phase of a request whose votes tally to `s`.
    pub fn of(s: &Status, collected: bool) -> Phase {
        if collected {
            return Phase::Collected;
        }
        match s {
            Status::Pending(_) => Phase::PendingApproval,
            Status::Approved => Phase::Approved,
            Status::Denied { .. } => Phase::Denied,
            Status::Expired => Phase::Expired,
        }
    }
}

impl Decision {
    pub const ALL: [Decision; 2] = [Decision::Approve, Decision::Deny];

    pub fn parse(s: &str) -> Option<Decision> {
        Decision::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_strings_are_the_databases_and_round_trip() {
        // These strings are in data files and audit logs already written:
        // they must never change.
        let kinds: Vec<_> = RequestKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, ["checkout", "breakglass", "governance"]);
        let statuses: Vec<_> = RequestStatus::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(statuses, ["pending", "approved", "denied"]);
        let decisions: Vec<_> = Decision::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(decisions, ["approve", "deny"]);
        for k in RequestKind::ALL {
            assert_eq!(RequestKind::parse(k.as_str()), Some(k));
        }
        for s in RequestStatus::ALL {
            assert_eq!(RequestStatus::parse(s.as_str()), Some(s));
        }
        for d in Decision::ALL {
            assert_eq!(Decision::parse(d.as_str()), Some(d));
        }
        for bad in [
            "",
            "Checkout",
            "pending ",
            "approve\0",
            "expired",
            "collected",
        ] {
            assert_eq!(RequestKind::parse(bad), None);
            assert_eq!(RequestStatus::parse(bad), None);
            assert_eq!(Decision::parse(bad), None);
        }
    }

    #[test]
    fn lifecycle() {
        let pending = Status::Pending(vec![("security".into(), 1)]);
        let denied = Status::Denied { by: "bob".into() };
        assert_eq!(RequestStatus::after_vote(&pending), RequestStatus::Pending);
        assert_eq!(
            RequestStatus::after_vote(&Status::Approved),
            RequestStatus::Approved
        );
        assert_eq!(RequestStatus::after_vote(&denied), RequestStatus::Denied);
        assert_eq!(
            RequestStatus::after_vote(&Status::Expired),
            RequestStatus::Pending
        );
        assert_eq!(Phase::of(&pending, false), Phase::PendingApproval);
        assert_eq!(Phase::of(&Status::Expired, false), Phase::Expired);
        assert_eq!(Phase::of(&Status::Approved, true), Phase::Collected);
        assert_eq!(RequestStatus::Pending.phase(), "pending_approval");
        assert_eq!(RequestStatus::Denied.phase(), "denied");
        assert_eq!(
            RequestKind::Breakglass.open_action().as_str(),
            "breakglass.request"
        );
        assert_eq!(
            RequestKind::Checkout.open_action().as_str(),
            "approval.request"
        );
    }
}
