//! Signed approvals and the quorum rules.
//!
//! An approval is an ECDSA P-256 signature by a custodian's 9c key over the
//! canonical encoding of the request *and* the decision and the custodian's
//! id, so it cannot be replayed on another request, another appliance, as
//! the opposite decision, or as another custodian's vote.
//!
//! ```text
//! message = "vaultd approval v1" ‖ field(request_id) ‖ field(appliance_id) ‖ field(path)
//!         ‖ u64(version) ‖ field(requester) ‖ field(reason) ‖ i64(created_at) ‖ i64(expires_at)
//!         ‖ field(nonce) ‖ field(decision: "approve"|"deny") ‖ field(custodian)
//! field(x) = u32 big-endian length ‖ bytes;  integers big-endian
//! ```
//!
//! A break-glass request also binds the requester's one-time public key (the
//! key custodians re-seal their shares to), so an appliance cannot swap in
//! its own key: the label is then `"vaultd breakglass approval v1"` and
//! `‖ field(recipient key, SEC1 uncompressed)` follows the custodian.
//!
//! A policy `[{group, k}, …]` is met when every group has k approvals from
//! distinct members (AND across groups). A custodian in two groups counts
//! for both, once each. Requesters cannot approve their own request; one
//! denial vetoes the request; votes after expiry are refused.

use std::collections::BTreeMap;

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::PublicKey;

/// What custodians are asked to approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub request_id: String,
    pub appliance_id: String,
    pub path: String,
    pub version: u64,
    pub requester: String,
    pub reason: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub nonce: [u8; 32],
    /// Break-glass only: the requester's one-time P-256 key (SEC1).
    pub recipient_key: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

fn field(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

impl Request {
    /// The bytes a custodian signs for `decision`.
    pub fn message(&self, decision: Decision, custodian: &str) -> Vec<u8> {
        let mut m = match self.recipient_key {
            None => crate::keys::label::APPROVAL.to_vec(),
            Some(_) => crate::keys::label::BREAKGLASS_APPROVAL.to_vec(),
        };
        field(&mut m, self.request_id.as_bytes());
        field(&mut m, self.appliance_id.as_bytes());
        field(&mut m, self.path.as_bytes());
        m.extend_from_slice(&self.version.to_be_bytes());
        field(&mut m, self.requester.as_bytes());
        field(&mut m, self.reason.as_bytes());
        m.extend_from_slice(&self.created_at.to_be_bytes());
        m.extend_from_slice(&self.expires_at.to_be_bytes());
        field(&mut m, &self.nonce);
        field(&mut m, decision.as_str().as_bytes());
        field(&mut m, custodian.as_bytes());
        if let Some(k) = &self.recipient_key {
            field(&mut m, k);
        }
        m
    }
}

/// An enrolled custodian as the appliance knows it.
#[derive(Debug, Clone)]
pub struct Custodian {
    pub id: String,
    pub groups: Vec<String>,
    /// The 9c (signature) public key.
    pub signing_key: PublicKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRule {
    pub group: String,
    pub k: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoteError {
    #[error("the request has expired")]
    Expired,
    #[error("requesters cannot approve their own request")]
    SelfApproval,
    #[error("this custodian has already voted on this request")]
    Duplicate,
    #[error("this custodian is in none of the policy's groups")]
    NotInPolicy,
    #[error("the signature does not verify for this request, decision and custodian")]
    BadSignature,
    #[error("the request is already {0}")]
    Closed(&'static str),
}

impl VoteError {
    pub fn code(&self) -> &'static str {
        match self {
            VoteError::Expired => "request_expired",
            VoteError::SelfApproval => "self_approval",
            VoteError::Duplicate => "duplicate_vote",
            VoteError::NotInPolicy => "not_in_policy",
            VoteError::BadSignature => "bad_signature",
            VoteError::Closed(_) => "request_closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Groups still short of approvals: (group, approvals still needed).
    Pending(Vec<(String, usize)>),
    Approved,
    Denied {
        by: String,
    },
    Expired,
}

/// Verifies one signature (DER, ECDSA P-256 over SHA-256 of the message).
pub fn verify_vote(
    req: &Request,
    decision: Decision,
    custodian: &Custodian,
    der_sig: &[u8],
) -> Result<(), VoteError> {
    let sig = Signature::from_der(der_sig).map_err(|_| VoteError::BadSignature)?;
    VerifyingKey::from(&custodian.signing_key)
        .verify(&req.message(decision, &custodian.id), &sig)
        .map_err(|_| VoteError::BadSignature)
}

/// The votes on one request.
#[derive(Debug, Clone)]
pub struct Tally {
    pub request: Request,
    pub policy: Vec<GroupRule>,
    votes: BTreeMap<String, (Decision, Vec<String>)>,
}

impl Tally {
    pub fn new(request: Request, policy: Vec<GroupRule>) -> Tally {
        Tally {
            request,
            policy,
            votes: BTreeMap::new(),
        }
    }

    pub fn status(&self, now: i64) -> Status {
        if let Some((id, _)) = self.votes.iter().find(|(_, (d, _))| *d == Decision::Deny) {
            return Status::Denied { by: id.clone() };
        }
        let missing: Vec<(String, usize)> = self
            .policy
            .iter()
            .filter_map(|r| {
                let have = self
                    .votes
                    .values()
                    .filter(|(d, groups)| *d == Decision::Approve && groups.contains(&r.group))
                    .count();
                (have < r.k).then(|| (r.group.clone(), r.k - have))
            })
            .collect();
        if missing.is_empty() {
            Status::Approved
        } else if now >= self.request.expires_at {
            Status::Expired
        } else {
            Status::Pending(missing)
        }
    }

    /// The custodian's groups that this request's policy names.
    fn policy_groups(&self, custodian: &Custodian) -> Vec<String> {
        custodian
            .groups
            .iter()
            .filter(|g| self.policy.iter().any(|r| &r.group == *g))
            .cloned()
            .collect()
    }

    /// Puts back a vote that was checked when it was recorded (a stored
    /// vote, when the tally is rebuilt from the database).
    pub fn restore(&mut self, custodian: &Custodian, decision: Decision) {
        let groups = self.policy_groups(custodian);
        self.votes.insert(custodian.id.clone(), (decision, groups));
    }

    /// Records a signed vote after every check.
    pub fn vote(
        &mut self,
        custodian: &Custodian,
        decision: Decision,
        der_sig: &[u8],
        now: i64,
    ) -> Result<Status, VoteError> {
        match self.status(now) {
            Status::Approved => return Err(VoteError::Closed("approved")),
            Status::Denied { .. } => return Err(VoteError::Closed("denied")),
            Status::Expired => return Err(VoteError::Expired),
            Status::Pending(_) => {}
        }
        if custodian.id == self.request.requester {
            return Err(VoteError::SelfApproval);
        }
        if self.votes.contains_key(&custodian.id) {
            return Err(VoteError::Duplicate);
        }
        let groups = self.policy_groups(custodian);
        if groups.is_empty() {
            return Err(VoteError::NotInPolicy);
        }
        verify_vote(&self.request, decision, custodian, der_sig)?;
        self.votes.insert(custodian.id.clone(), (decision, groups));
        Ok(self.status(now))
    }
}
