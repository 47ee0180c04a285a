//! Governance: the changes to the control plane that a custodian quorum
//! approves, in the one canonical form that is stored, shown and signed.
//!
//! A change that could widen access (who the custodians are, where the root
//! key's recovery shares go, who is in which group, the governance rule
//! itself, who holds a role
//! that can disclose a secret or change who approves, approvals relaxed) is
//! not applied by
//! the admin who asks for it. It becomes a `governance` request whose
//! [`Change`] is bound into every custodian's signature
//! ([`super::approval::Request::message`], label
//! `"vaultd governance approval v1"`), and is applied only when the
//! governance rule is met, in the transaction that checks it.
//!
//! The text of a change is its canonical JSON: fields in the order of the
//! types below, no whitespace, at most [`MAX_CHANGE`] bytes. [`parse`]
//! refuses anything else (unknown fields, another order, a stored row that
//! was edited into a different but equivalent document), so what a custodian
//! was shown is byte for byte what the appliance applies.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::approval::GroupRule;
use super::policy::ApprovalPolicy;

/// The longest change text accepted (an enrolment carries its attestation
/// certificates).
pub const MAX_CHANGE: usize = 96 * 1024;

/// One rule of a governance rule or policy: `k` approvals from `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub group: String,
    pub k: u64,
}

/// A custodian as a change names it: its groups and the SHA-256 (hex) of
/// its two public keys, which the custodian can check against its YubiKey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub name: String,
    pub groups: Vec<String>,
    pub serial: u32,
    pub signature_key_sha256: String,
    pub key_management_key_sha256: String,
}

/// A custodian to enrol, with everything its row will hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollee {
    pub name: String,
    pub groups: Vec<String>,
    pub serial: u32,
    pub firmware: String,
    pub pin_policy: String,
    pub touch_policy: String,
    /// Base64 SEC1 public keys of slots 9c and 9d.
    pub signature_key: String,
    pub key_management_key: String,
    /// The attestation certificates as submitted (JSON, base64 DER).
    pub attestation: String,
}

/// A change to the control plane under the governance quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// The initial custodian set and governance rule. Every member signs it.
    Genesis {
        rule: Vec<Rule>,
        custodians: Vec<Member>,
    },
    /// A new governance rule.
    SetRule {
        previous: Vec<Rule>,
        rule: Vec<Rule>,
    },
    /// The root key split `k` of the group's members, replacing any earlier
    /// recovery bundle.
    Recovery {
        group: String,
        k: u64,
        recipients: Vec<Member>,
    },
    /// A new custodian.
    EnrollCustodian { custodian: Enrollee },
    /// An enrolled custodian removed: it no longer votes or counts.
    RemoveCustodian { custodian: Member },
    /// An enrolled custodian's groups replaced.
    SetCustodianGroups {
        name: String,
        previous: Vec<String>,
        groups: Vec<String>,
    },
    /// Approvals that ask for less than `previous` (a secret's own, or a
    /// prefix's when `path` ends with `/`; `[]` removes them).
    SetApprovals {
        path: String,
        previous: Vec<Rule>,
        approvals: Vec<Rule>,
    },
    /// A client certificate of a role that can disclose a secret or run the
    /// control plane ([`role_needs_quorum`]), for the key of `csr_pem`.
    IssueCertificate {
        name: String,
        role: String,
        validity_days: u32,
        csr_pem: String,
        /// A pam certificate's first access grants for its name (absent:
        /// none, and the certificate reaches no secret).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        grants: Vec<String>,
    },
    /// An access grant: the pam principal `principal` may check out (or
    /// ask for) the paths `prefix` covers: `*` every path, `a/b/` every
    /// path under it, `a/b` that path.
    GrantAccess { principal: String, prefix: String },
    /// Old versions of a secret destroyed (their values erased for good).
    DestroyVersions { path: String, versions: Vec<u64> },
    /// A secret deleted: every version destroyed.
    DeleteSecret { path: String },
    /// A secret's rotation policy: its new values go where the connector
    /// points, so setting or changing one widens access.
    SetRotationPolicy {
        path: String,
        policy: crate::rotation::RotationPolicy,
    },
}

/// Whether `prefix` is a grant's form: `*`, a secret path, or a path
/// prefix ending with `/`.
pub fn valid_grant(prefix: &str) -> bool {
    prefix == "*"
        || crate::policy::validate_path(prefix.strip_suffix('/').unwrap_or(prefix)).is_ok()
}

/// Whether issuing a certificate of `role` is a governance change: `pam`
/// (checks out values) and `admin` (runs the control plane, proposes
/// changes). A `custodian` certificate only carries votes and share
/// envelopes that need the enrolled YubiKey of its name (its signature is
/// checked against the attested key; its envelopes are sealed to it), so it
/// stays immediate, which also lets custodians get new certificates after a
/// recovery revoked every earlier one. `writer`, `auditor` and `metrics`
/// can neither read a value nor change who approves, and stay immediate.
pub fn role_needs_quorum(role: crate::policy::Role) -> bool {
    use crate::policy::Role;
    matches!(role, Role::Pam | Role::Admin)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("the change is longer than {MAX_CHANGE} bytes")]
    TooLong,
    #[error("the change is not a valid change document: {0}")]
    Invalid(String),
    #[error("the change is not in canonical form")]
    NotCanonical,
}

impl Change {
    /// The canonical text: what is stored, shown and signed.
    pub fn text(&self) -> String {
        serde_json::to_string(self).expect("a change always serialises")
    }

    /// The audit action's target and a request's `path`: which control-plane
    /// object the change is about.
    pub fn subject(&self) -> String {
        match self {
            Change::Genesis { .. } | Change::SetRule { .. } => "governance/rule".into(),
            Change::Recovery { group, .. } => format!("recovery/{group}"),
            Change::EnrollCustodian { custodian } => format!("custodians/{}", custodian.name),
            Change::RemoveCustodian { custodian } => format!("custodians/{}", custodian.name),
            Change::SetCustodianGroups { name, .. } => format!("custodians/{name}"),
            Change::SetApprovals { path, .. } => format!("policies/{path}"),
            Change::IssueCertificate { name, .. } => format!("principals/{name}"),
            Change::GrantAccess { principal, .. } => format!("grants/{principal}"),
            Change::DestroyVersions { path, .. } | Change::DeleteSecret { path } => {
                format!("secrets/{path}")
            }
            Change::SetRotationPolicy { path, .. } => format!("rotation/{path}"),
        }
    }

    /// The change's name, as in its `change` field.
    pub fn name(&self) -> &'static str {
        match self {
            Change::Genesis { .. } => "genesis",
            Change::SetRule { .. } => "set_rule",
            Change::Recovery { .. } => "recovery",
            Change::EnrollCustodian { .. } => "enroll_custodian",
            Change::RemoveCustodian { .. } => "remove_custodian",
            Change::SetCustodianGroups { .. } => "set_custodian_groups",
            Change::SetApprovals { .. } => "set_approvals",
            Change::IssueCertificate { .. } => "issue_certificate",
            Change::GrantAccess { .. } => "grant_access",
            Change::DestroyVersions { .. } => "destroy_versions",
            Change::DeleteSecret { .. } => "delete_secret",
            Change::SetRotationPolicy { .. } => "set_rotation_policy",
        }
    }
}

/// Parses a stored or submitted change, refusing any text that is not the
/// canonical form of the change it decodes to.
pub fn parse(text: &str) -> Result<Change, ChangeError> {
    if text.len() > MAX_CHANGE {
        return Err(ChangeError::TooLong);
    }
    let c: Change = serde_json::from_str(text).map_err(|e| ChangeError::Invalid(e.to_string()))?;
    if c.text() != text {
        return Err(ChangeError::NotCanonical);
    }
    Ok(c)
}

/// The rule list of a change, validated as an approval policy.
pub fn rules_of(rules: &[Rule]) -> Result<Vec<GroupRule>, String> {
    let v = serde_json::to_value(rules).map_err(|e| e.to_string())?;
    ApprovalPolicy::from_json(&v)
        .map(ApprovalPolicy::into_rules)
        .map_err(|e| e.to_string())
}

/// The change's form of validated rules.
pub fn rules(rules: &[GroupRule]) -> Vec<Rule> {
    rules
        .iter()
        .map(|r| Rule {
            group: r.group.clone(),
            k: r.k as u64,
        })
        .collect()
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A governance rule must never be met by one person: its places (the sum
/// of k) are at least two.
pub fn check_rule_size(rules: &[GroupRule]) -> Result<(), String> {
    let places: usize = rules.iter().map(|r| r.k).sum();
    if places < 2 {
        return Err("a governance rule needs at least two approvals in all".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: &str) -> Member {
        Member {
            name: n.into(),
            groups: vec!["security".into()],
            serial: 7,
            signature_key_sha256: sha256_hex(b"sig"),
            key_management_key_sha256: sha256_hex(b"kex"),
        }
    }

    #[test]
    fn the_text_is_canonical_and_parses_back() {
        let c = Change::Recovery {
            group: "security".into(),
            k: 2,
            recipients: vec![member("alice"), member("bob")],
        };
        let t = c.text();
        assert!(
            t.starts_with(r#"{"change":"recovery","group":"security","k":2,"#),
            "{t}"
        );
        assert_eq!(parse(&t).unwrap(), c);
        assert_eq!(c.subject(), "recovery/security");
    }

    #[test]
    fn equivalent_but_different_texts_are_refused() {
        let c = Change::SetRule {
            previous: vec![Rule {
                group: "a".into(),
                k: 2,
            }],
            rule: vec![Rule {
                group: "a".into(),
                k: 3,
            }],
        };
        let t = c.text();
        // Whitespace, another field order, an unknown field, another tag.
        let spaced = t.replace(',', ", ");
        assert_eq!(parse(&spaced), Err(ChangeError::NotCanonical));
        let reordered = r#"{"change":"set_rule","rule":[{"group":"a","k":3}],"previous":[{"group":"a","k":2}]}"#;
        assert_eq!(parse(reordered), Err(ChangeError::NotCanonical));
        let extra = t.replacen('{', r#"{"x":1,"#, 1);
        assert!(matches!(parse(&extra), Err(ChangeError::Invalid(_))));
        assert!(matches!(
            parse(r#"{"change":"drop_everything"}"#),
            Err(ChangeError::Invalid(_))
        ));
        assert_eq!(
            parse(&" ".repeat(MAX_CHANGE + 1)),
            Err(ChangeError::TooLong)
        );
    }

    #[test]
    fn a_rule_of_one_place_is_refused() {
        let one = rules_of(&[Rule {
            group: "a".into(),
            k: 1,
        }])
        .unwrap();
        assert!(check_rule_size(&one).is_err());
        let two = rules_of(&[
            Rule {
                group: "a".into(),
                k: 1,
            },
            Rule {
                group: "b".into(),
                k: 1,
            },
        ])
        .unwrap();
        assert!(check_rule_size(&two).is_ok());
        assert!(rules_of(&[Rule {
            group: "a".into(),
            k: 0
        }])
        .is_err());
    }
}
