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
//! A governance request binds the canonical text of the control-plane
//! change it asks for ([`super::governance`]): the label is then
//! `"vaultd governance approval v1"` and `‖ field(change)` follows the
//! custodian.
//!
//! A policy `[{group, k}, …]` is met when every group has k approvals from
//! distinct members (AND across groups) **and one person counts once across
//! all of them**: each approval is assigned to at most one rule. A custodian
//! in `security` and `dba` helps meet either rule, never both, so
//! `security:2 AND dba:1` always needs three people. Whether an assignment
//! exists is a bipartite matching (each rule needs k distinct custodians of
//! its group, each custodian serves one rule), found by augmenting paths
//! ([`shortfall`]): a greedy "first group that still needs someone" would
//! refuse sets that can be assigned. Requesters cannot approve their own
//! request; one denial vetoes the request; votes after expiry are refused.

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
    /// Governance only: the canonical change text.
    pub change: Option<String>,
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
        let mut m = match (&self.recipient_key, &self.change) {
            (_, Some(_)) => crate::keys::label::GOVERNANCE_APPROVAL.to_vec(),
            (Some(_), None) => crate::keys::label::BREAKGLASS_APPROVAL.to_vec(),
            (None, None) => crate::keys::label::APPROVAL.to_vec(),
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
        if let Some(c) = &self.change {
            field(&mut m, c.as_bytes());
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
    /// Groups still short of approvals under a best assignment of the
    /// approvals so far: (group, approvals still needed), in policy order.
    /// The sum is the number of further approvers the request needs; which
    /// group a custodian in several groups is counted for is the
    /// assignment's choice.
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

/// An assignment of custodians to rules: `rule_of[c]` is the rule
/// custodian `c` serves, if any. Maximum: no other assignment serves more
/// rule places (each rule has `k` places, each custodian fills at most one,
/// and only in a rule whose group it is in).
pub(crate) struct Assignment {
    /// For each custodian, the indices of the rules it may serve.
    pub(crate) eligible: Vec<Vec<usize>>,
    pub(crate) rule_of: Vec<Option<usize>>,
    /// Places filled per rule.
    pub(crate) filled: Vec<usize>,
}

/// Finds a maximum assignment of `custodians` (each given by its groups) to
/// `rules`, by augmenting paths (Kuhn's algorithm with capacities):
/// custodians are placed in the order given; one that finds no free place
/// may take one from a custodian who can move to another rule, and so on.
/// O(custodians² · rules), for at most 16 rules and the enrolled custodians.
pub(crate) fn assign<'a>(
    rules: &[GroupRule],
    custodians: impl IntoIterator<Item = &'a [String]>,
) -> Assignment {
    let eligible: Vec<Vec<usize>> = custodians
        .into_iter()
        .map(|groups| {
            (0..rules.len())
                .filter(|&r| groups.iter().any(|g| *g == rules[r].group))
                .collect()
        })
        .collect();
    let mut a = Assignment {
        rule_of: vec![None; eligible.len()],
        filled: vec![0; rules.len()],
        eligible,
    };
    // Custodians placed in each rule, to find whom an augmenting path moves.
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); rules.len()];
    for c in 0..a.eligible.len() {
        let mut seen = vec![false; rules.len()];
        augment(c, rules, &mut a, &mut members, &mut seen);
    }
    a
}

/// Tries to place custodian `c`: in a rule with a free place, or in a full
/// rule whose member can move elsewhere (each rule is tried once per
/// search, `seen`).
fn augment(
    c: usize,
    rules: &[GroupRule],
    a: &mut Assignment,
    members: &mut [Vec<usize>],
    seen: &mut [bool],
) -> bool {
    for i in 0..a.eligible[c].len() {
        let r = a.eligible[c][i];
        if seen[r] {
            continue;
        }
        seen[r] = true;
        if a.filled[r] < rules[r].k {
            a.filled[r] += 1;
            a.rule_of[c] = Some(r);
            members[r].push(c);
            return true;
        }
        for j in 0..members[r].len() {
            let other = members[r][j];
            if augment(other, rules, a, members, seen) {
                // `other` moved to another rule; `c` takes its place in r.
                members[r][j] = c;
                a.rule_of[c] = Some(r);
                return true;
            }
        }
    }
    false
}

/// For each rule, how many approvals it still lacks when each custodian
/// (given by its groups) counts toward at most one rule, under a maximum
/// assignment. All zero: the custodians can meet every rule together.
pub fn shortfall<'a>(
    rules: &[GroupRule],
    custodians: impl IntoIterator<Item = &'a [String]>,
) -> Vec<usize> {
    let a = assign(rules, custodians);
    rules.iter().zip(&a.filled).map(|(r, f)| r.k - f).collect()
}

/// The votes on one request.
#[derive(Debug, Clone)]
pub struct Tally {
    pub request: Request,
    pub policy: Vec<GroupRule>,
    /// Genesis: every one of these custodians must approve (and only they
    /// may vote); `policy` is then unused.
    everyone: Option<Vec<String>>,
    votes: BTreeMap<String, (Decision, Vec<String>)>,
}

/// The pseudo-group a genesis tally reports as still short of approvals.
pub const EVERYONE: &str = "all-custodians";

impl Tally {
    pub fn new(request: Request, policy: Vec<GroupRule>) -> Tally {
        Tally {
            request,
            policy,
            everyone: None,
            votes: BTreeMap::new(),
        }
    }

    /// A tally that is met only when every one of `names` approves.
    pub fn with_everyone(request: Request, names: Vec<String>) -> Tally {
        Tally {
            request,
            policy: Vec::new(),
            everyone: Some(names),
            votes: BTreeMap::new(),
        }
    }

    pub fn status(&self, now: i64) -> Status {
        if let Some((id, _)) = self.votes.iter().find(|(_, (d, _))| *d == Decision::Deny) {
            return Status::Denied { by: id.clone() };
        }
        let missing: Vec<(String, usize)> = if let Some(names) = &self.everyone {
            let short = names
                .iter()
                .filter(|n| !matches!(self.votes.get(*n), Some((Decision::Approve, _))))
                .count();
            if short > 0 || names.is_empty() {
                vec![(EVERYONE.to_string(), short.max(1))]
            } else {
                Vec::new()
            }
        } else {
            self.missing()
        };
        if missing.is_empty() {
            Status::Approved
        } else if now >= self.request.expires_at {
            Status::Expired
        } else {
            Status::Pending(missing)
        }
    }

    fn missing(&self) -> Vec<(String, usize)> {
        let approvers = self
            .votes
            .values()
            .filter(|(d, _)| *d == Decision::Approve)
            .map(|(_, groups)| groups.as_slice());
        self.policy
            .iter()
            .zip(shortfall(&self.policy, approvers))
            .filter(|(_, short)| *short > 0)
            .map(|(r, short)| (r.group.clone(), short))
            .collect()
    }

    /// The custodian's groups that this request's policy names.
    fn policy_groups(&self, custodian: &Custodian) -> Vec<String> {
        if let Some(names) = &self.everyone {
            return if names.contains(&custodian.id) {
                vec![EVERYONE.to_string()]
            } else {
                Vec::new()
            };
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The most rule places any assignment fills, by trying every way of
    /// giving each custodian one eligible rule or none.
    fn brute_force(rules: &[GroupRule], people: &[Vec<String>]) -> usize {
        fn go(
            i: usize,
            rules: &[GroupRule],
            people: &[Vec<String>],
            filled: &mut [usize],
        ) -> usize {
            if i == people.len() {
                return filled.iter().zip(rules).map(|(f, r)| (*f).min(r.k)).sum();
            }
            let mut best = go(i + 1, rules, people, filled);
            for (r, rule) in rules.iter().enumerate() {
                if people[i].contains(&rule.group) && filled[r] < rule.k {
                    filled[r] += 1;
                    best = best.max(go(i + 1, rules, people, filled));
                    filled[r] -= 1;
                }
            }
            best
        }
        go(0, rules, people, &mut vec![0; rules.len()])
    }

    #[test]
    fn the_assignment_is_maximum() {
        // xorshift: deterministic, no dependency.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let names = ["a", "b", "c", "d"];
        for _ in 0..2_000 {
            let rules: Vec<GroupRule> = names[..1 + next(4) as usize]
                .iter()
                .map(|g| GroupRule {
                    group: g.to_string(),
                    k: 1 + next(3) as usize,
                })
                .collect();
            let people: Vec<Vec<String>> = (0..next(7))
                .map(|_| {
                    names
                        .iter()
                        .filter(|_| next(2) == 0)
                        .map(|g| g.to_string())
                        .collect()
                })
                .collect();
            let short = shortfall(&rules, people.iter().map(|p| p.as_slice()));
            let places: usize = rules.iter().map(|r| r.k).sum();
            assert_eq!(
                places - short.iter().sum::<usize>(),
                brute_force(&rules, &people),
                "{rules:?} {people:?}"
            );
            // Each custodian fills one place at most: never more filled
            // places than people.
            assert!(places - short.iter().sum::<usize>() <= people.len());
        }
    }
}
