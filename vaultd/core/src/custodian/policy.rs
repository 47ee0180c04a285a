//! Approval policies and custody: which custody groups must approve a
//! secret's checkouts and how many of each, and which group holds a
//! sealed-tier secret's shares.
//!
//! The JSON form is the one the API takes and the store keeps:
//! `[{"group": "security", "k": 2}, …]` for a policy and
//! `{"group": "security", "k": 2}` for custody. Parsing is strict: unknown
//! fields, a repeated group, `k` outside 1..=255 or more than
//! [`MAX_RULES`] rules are refused. A stored policy that does not parse is an
//! integrity error for the caller, never an empty policy.
//!
//! Reachability uses the quorum's own rule ([`super::approval`]): one
//! custodian counts toward at most one rule, so a policy is reachable when
//! the enrolled custodians can be assigned to its rules, k distinct ones to
//! each, not merely when each group alone has k members.

use serde::{Deserialize, Serialize};

use super::approval::{assign, GroupRule};
use crate::policy::validate_name;

/// The most rules one policy may have.
pub const MAX_RULES: usize = 16;

/// Why a policy or custody is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not a valid policy document (the message names what is wrong).
    #[error("{0}")]
    Invalid(String),
    /// The enrolled custodians can never meet a rule.
    #[error("group {group} has {have} enrolled custodians; k = {k} can never be met")]
    Unreachable {
        group: String,
        have: usize,
        k: usize,
    },
    /// The enrolled custodians can never meet these rules together: they
    /// need `need` distinct custodians between them (one person counts
    /// toward one rule) and only `have` are in any of their groups.
    #[error(
        "groups {} need {need} distinct custodians between them; only {have} are enrolled in any of them",
        groups.join(", ")
    )]
    UnreachableTogether {
        groups: Vec<String>,
        have: usize,
        need: usize,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    group: String,
    k: u64,
}

fn invalid(m: impl Into<String>) -> PolicyError {
    PolicyError::Invalid(m.into())
}

fn rule(doc: RuleDoc) -> Result<GroupRule, PolicyError> {
    if !validate_name(&doc.group) {
        return Err(invalid(
            "group names are 1-64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    if doc.k == 0 || doc.k > 255 {
        return Err(invalid("k must be 1..=255"));
    }
    Ok(GroupRule {
        group: doc.group,
        k: doc.k as usize,
    })
}

/// serde's messages can quote input; keep the classification only.
fn serde_message(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    }
}

/// The approvals a secret's checkouts need: every rule must be met (AND
/// across groups). Empty: no approval needed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalPolicy {
    rules: Vec<GroupRule>,
}

impl ApprovalPolicy {
    /// Parses a submitted or stored rule list.
    pub fn from_json(v: &serde_json::Value) -> Result<ApprovalPolicy, PolicyError> {
        let docs: Vec<RuleDoc> = serde_json::from_value(v.clone()).map_err(|e| {
            if v.is_array() {
                invalid(format!("invalid approval rule: {}", serde_message(&e)))
            } else {
                invalid("approvals must be a list")
            }
        })?;
        if docs.len() > MAX_RULES {
            return Err(invalid(format!("at most {MAX_RULES} approval rules")));
        }
        let mut rules: Vec<GroupRule> = Vec::with_capacity(docs.len());
        for d in docs {
            let r = rule(d)?;
            if rules.iter().any(|x| x.group == r.group) {
                return Err(invalid(format!("group {} appears twice", r.group)));
            }
            rules.push(r);
        }
        Ok(ApprovalPolicy { rules })
    }

    /// Parses the stored form (a JSON string).
    pub fn from_stored(s: &str) -> Result<ApprovalPolicy, PolicyError> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|_| invalid("stored policy is not JSON"))?;
        ApprovalPolicy::from_json(&v)
    }

    /// The stored form: `[{"group":…,"k":…},…]`.
    pub fn to_stored(&self) -> String {
        stored_rules(&self.rules)
    }

    pub fn rules(&self) -> &[GroupRule] {
        &self.rules
    }

    pub fn into_rules(self) -> Vec<GroupRule> {
        self.rules
    }

    /// True when checkouts need no approval.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Refuses rules that the enrolled custodians, each given by its
    /// groups, can never meet together (see [`check_reachable`]).
    pub fn check_reachable<'a>(
        &self,
        custodians: impl IntoIterator<Item = &'a [String]>,
    ) -> Result<(), PolicyError> {
        check_reachable(&self.rules, custodians)
    }
}

/// Whether `new` asks at least what `old` asks: every rule of `old` has a
/// rule of the same group in `new` with at least its k (groups are unique
/// within a policy). Any approvals that meet `new` then meet `old` (keep
/// the assignment's places in `old`'s groups), so such a change can only
/// narrow who gets a checkout and stays an immediate admin action; any
/// other change relaxes the policy and is a governance change.
pub fn narrows(old: &[GroupRule], new: &[GroupRule]) -> bool {
    old.iter()
        .all(|o| new.iter().any(|n| n.group == o.group && n.k >= o.k))
}

/// The stored form of rules taken from a parsed policy or custody.
pub fn stored_rules(rules: &[GroupRule]) -> String {
    let docs: Vec<RuleDoc> = rules
        .iter()
        .map(|r| RuleDoc {
            group: r.group.clone(),
            k: r.k as u64,
        })
        .collect();
    serde_json::to_string(&docs).expect("a list of plain structs serialises")
}

/// Refuses rules that the enrolled custodians (each given by its groups)
/// can never meet together, one custodian counting toward one rule.
///
/// When no assignment meets every rule, the error names a set of rules
/// whose groups have fewer distinct members than their k's add up to (by
/// Hall's theorem such a set exists): the rules an unfilled place reaches
/// by alternating paths of a maximum assignment. One rule alone is
/// [`PolicyError::Unreachable`], several [`PolicyError::UnreachableTogether`].
pub fn check_reachable<'a>(
    rules: &[GroupRule],
    custodians: impl IntoIterator<Item = &'a [String]>,
) -> Result<(), PolicyError> {
    let a = assign(rules, custodians);
    let Some(short) = (0..rules.len()).find(|&r| a.filled[r] < rules[r].k) else {
        return Ok(());
    };
    // Grow the set from the short rule: every custodian eligible for a rule
    // of the set is placed (the assignment is maximum), and its rule joins.
    let mut in_set = vec![false; rules.len()];
    in_set[short] = true;
    let mut reached = vec![false; a.eligible.len()];
    loop {
        let mut grew = false;
        for (c, rs) in a.eligible.iter().enumerate() {
            if reached[c] || !rs.iter().any(|&r| in_set[r]) {
                continue;
            }
            reached[c] = true;
            grew = true;
            if let Some(r) = a.rule_of[c] {
                in_set[r] = true;
            }
        }
        if !grew {
            break;
        }
    }
    let have = reached.iter().filter(|x| **x).count();
    let set: Vec<&GroupRule> = (0..rules.len())
        .filter(|&r| in_set[r])
        .map(|r| &rules[r])
        .collect();
    match set.as_slice() {
        [one] => Err(PolicyError::Unreachable {
            group: one.group.clone(),
            have,
            k: one.k,
        }),
        many => Err(PolicyError::UnreachableTogether {
            groups: many.iter().map(|r| r.group.clone()).collect(),
            have,
            need: many.iter().map(|r| r.k).sum(),
        }),
    }
}

fn check_rule(r: &GroupRule, members: &impl Fn(&str) -> usize) -> Result<(), PolicyError> {
    let have = members(&r.group);
    if have < r.k {
        return Err(PolicyError::Unreachable {
            group: r.group.clone(),
            have,
            k: r.k,
        });
    }
    Ok(())
}

/// Who holds a sealed-tier secret's shares: one group and its k.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Custody(pub GroupRule);

impl Custody {
    /// Parses `{"group": …, "k": …}`.
    pub fn from_json(v: &serde_json::Value) -> Result<Custody, PolicyError> {
        let doc: RuleDoc = serde_json::from_value(v.clone())
            .map_err(|e| invalid(format!("invalid custody: {}", serde_message(&e))))?;
        Ok(Custody(rule(doc)?))
    }

    /// Parses the stored form (a JSON string).
    pub fn from_stored(s: &str) -> Result<Custody, PolicyError> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|_| invalid("stored custody is not JSON"))?;
        Custody::from_json(&v)
    }

    /// The stored form: `{"group":…,"k":…}`.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(&RuleDoc {
            group: self.0.group.clone(),
            k: self.0.k as u64,
        })
        .expect("a plain struct serialises")
    }

    /// Refuses a custody the enrolled custodians can never open.
    pub fn check_reachable(&self, members: impl Fn(&str) -> usize) -> Result<(), PolicyError> {
        check_rule(&self.0, &members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<ApprovalPolicy, PolicyError> {
        ApprovalPolicy::from_json(&v)
    }

    #[test]
    fn a_policy_round_trips_through_its_stored_form() {
        let p = parse(json!([{"group": "security", "k": 2}, {"group": "dba", "k": 1}])).unwrap();
        assert_eq!(p.rules().len(), 2);
        let s = p.to_stored();
        assert_eq!(s, r#"[{"group":"security","k":2},{"group":"dba","k":1}]"#);
        assert_eq!(ApprovalPolicy::from_stored(&s).unwrap(), p);
        assert!(parse(json!([])).unwrap().is_empty());
        assert_eq!(ApprovalPolicy::default().to_stored(), "[]");
    }

    #[test]
    fn narrowing_means_asking_at_least_as_much() {
        let r = |v: serde_json::Value| parse(v).unwrap().into_rules();
        let old = r(json!([{"group": "security", "k": 2}]));
        // Same, more k, another group on top: narrower.
        assert!(narrows(&old, &old));
        assert!(narrows(&old, &r(json!([{"group": "security", "k": 3}]))));
        assert!(narrows(
            &old,
            &r(json!([{"group": "dba", "k": 1}, {"group": "security", "k": 2}]))
        ));
        assert!(narrows(&[], &old));
        // Less k, another group instead, nothing at all: relaxed.
        assert!(!narrows(&old, &r(json!([{"group": "security", "k": 1}]))));
        assert!(!narrows(&old, &r(json!([{"group": "dba", "k": 5}]))));
        assert!(!narrows(&old, &[]));
    }

    #[test]
    fn bad_policies_are_refused() {
        for bad in [
            json!({"group": "security", "k": 2}),
            json!("security:2"),
            json!([{"group": "security"}]),
            json!([{"k": 2}]),
            json!([{"group": "security", "k": 0}]),
            json!([{"group": "security", "k": 256}]),
            json!([{"group": "security", "k": -1}]),
            json!([{"group": "security", "k": "2"}]),
            json!([{"group": "sec urity", "k": 1}]),
            json!([{"group": "", "k": 1}]),
            json!([{"group": "a", "k": 1}, {"group": "a", "k": 2}]),
            json!([{"group": "a", "k": 1, "extra": true}]),
            json!([null]),
        ] {
            assert!(
                matches!(parse(bad.clone()), Err(PolicyError::Invalid(_))),
                "{bad}"
            );
        }
        let many: Vec<_> = (0..=MAX_RULES)
            .map(|i| json!({"group": format!("g{i}"), "k": 1}))
            .collect();
        assert!(parse(json!(many)).is_err());
        assert!(ApprovalPolicy::from_stored("not json").is_err());
    }

    fn groups(people: &[&[&str]]) -> Vec<Vec<String>> {
        people
            .iter()
            .map(|gs| gs.iter().map(|g| g.to_string()).collect())
            .collect()
    }

    fn reachable(p: &ApprovalPolicy, people: &[&[&str]]) -> Result<(), PolicyError> {
        let people = groups(people);
        p.check_reachable(people.iter().map(|g| g.as_slice()))
    }

    #[test]
    fn reachability_counts_members_of_each_group() {
        let p = parse(json!([{"group": "security", "k": 2}, {"group": "dba", "k": 1}])).unwrap();
        assert_eq!(
            reachable(&p, &[&["security"], &["security"]]),
            Err(PolicyError::Unreachable {
                group: "dba".into(),
                have: 0,
                k: 1
            })
        );
        assert!(reachable(&p, &[&["security"], &["security"], &["dba"]]).is_ok());
        assert!(reachable(&p, &[&["security", "dba"], &["security"], &["dba"]]).is_ok());
        // A custodian in no group of the policy does not help.
        assert!(reachable(&p, &[&["security"], &["security"], &["finance"]]).is_err());
    }

    /// The abuse of issue 11: two people who are each in both groups used
    /// to meet `security:2 AND dba:1`. One person counts toward one rule.
    #[test]
    fn two_people_in_both_groups_cannot_meet_three_places() {
        let p = parse(json!([{"group": "security", "k": 2}, {"group": "dba", "k": 1}])).unwrap();
        let e = reachable(&p, &[&["security", "dba"], &["security", "dba"]]).unwrap_err();
        assert_eq!(
            e,
            PolicyError::UnreachableTogether {
                groups: vec!["security".into(), "dba".into()],
                have: 2,
                need: 3
            }
        );
        assert_eq!(
            e.to_string(),
            "groups security, dba need 3 distinct custodians between them; only 2 are enrolled in any of them"
        );
        // A third person in either group makes it reachable.
        assert!(reachable(&p, &[&["security", "dba"], &["security", "dba"], &["dba"]]).is_ok());
        assert!(reachable(
            &p,
            &[&["security", "dba"], &["security", "dba"], &["security"]]
        )
        .is_ok());
    }

    /// Placing each custodian in the first rule that still needs someone
    /// fails here (alice takes security, bob has nowhere to go); moving
    /// alice to dba is the assignment that exists.
    #[test]
    fn reachability_finds_an_assignment_greedy_would_miss() {
        let p = parse(json!([{"group": "security", "k": 1}, {"group": "dba", "k": 1}])).unwrap();
        assert!(reachable(&p, &[&["security", "dba"], &["security"]]).is_ok());
        // A longer chain of moves: three rules, each newcomer displaces.
        let p = parse(json!([
            {"group": "a", "k": 1}, {"group": "b", "k": 1}, {"group": "c", "k": 1}
        ]))
        .unwrap();
        assert!(reachable(&p, &[&["a", "b", "c"], &["a", "b"], &["a"]]).is_ok());
        assert_eq!(
            reachable(&p, &[&["a", "b"], &["a", "b"], &["a", "b"]]),
            Err(PolicyError::Unreachable {
                group: "c".into(),
                have: 0,
                k: 1
            })
        );
        // With someone for c, it is reachable.
        assert_eq!(
            reachable(&p, &[&["a", "b"], &["b"], &["a", "b"], &["c"]]),
            Ok(())
        );
        let p = parse(json!([
            {"group": "a", "k": 2}, {"group": "b", "k": 1}, {"group": "c", "k": 1}
        ]))
        .unwrap();
        assert_eq!(
            reachable(&p, &[&["a", "b"], &["a", "b"], &["c"]]),
            Err(PolicyError::UnreachableTogether {
                groups: vec!["a".into(), "b".into()],
                have: 2,
                need: 3
            })
        );
    }

    #[test]
    fn custody_is_one_rule() {
        let c = Custody::from_json(&json!({"group": "vault", "k": 2})).unwrap();
        assert_eq!(c.to_stored(), r#"{"group":"vault","k":2}"#);
        assert_eq!(Custody::from_stored(&c.to_stored()).unwrap(), c);
        assert!(Custody::from_json(&json!([{"group": "vault", "k": 2}])).is_err());
        assert!(Custody::from_json(&json!({"group": "vault", "k": 2, "n": 3})).is_err());
        assert!(c.check_reachable(|_| 1).is_err());
    }
}
