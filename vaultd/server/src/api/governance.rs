//! The custodian quorum over the control plane.
//!
//! At initialisation the admin enrols the custodians, then proposes the
//! **genesis** (`POST /v1/governance/genesis`): the governance rule and the
//! enrolled set, which every one of those custodians signs with their
//! YubiKey. From then on a change that could widen access is not applied
//! by the admin who asks for it: enrolling a custodian, configuring the
//! recovery bundle, changing the rule itself, issuing a `pam` or `admin`
//! certificate and relaxing approvals each open a `governance`
//! request whose canonical change text ([`vault_core::custodian::governance`])
//! custodians sign, and that the proposer applies
//! (`POST /v1/requests/{id}/apply`) once the rule is met. The apply checks
//! every vote's signature again, and the store applies the change in the
//! transaction that checks the request is approved, unexpired, unapplied,
//! made by that certificate, and that neither the rule, the custodian set
//! nor (for a relaxation) the approvals changed since
//! ([`WriteOp::ApplyGovernance`]).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use p256::PublicKey;
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::custodian::approval::{self, GroupRule, Status};
use vault_core::custodian::governance::{self, Change, Enrollee};
use vault_core::custodian::request::RequestKind;
use vault_store::{
    custodian_set, members, CustodianRow, RequestRow, StoreError, WriteOp, GOVERNANCE_RULE,
};

use super::blocking;
use super::custodians::{as_custodian, check_reachable, core_request, rules_json, stored_rules};
use super::error::{ApiError, ApiResult, Code};
use super::extract::{Auth, JsonBody};
use super::secrets::check_reason;
use crate::state::AppState;

/// The custodians who must all sign a genesis request (`None`: not one).
pub(crate) fn genesis_signers(r: &RequestRow) -> Result<Option<Vec<String>>, StoreError> {
    if r.kind != RequestKind::Governance {
        return Ok(None);
    }
    match stored_change(r).map_err(|_| StoreError::Corrupt(format!("request {}: change", r.id)))? {
        Change::Genesis { custodians, .. } => {
            Ok(Some(custodians.into_iter().map(|m| m.name).collect()))
        }
        _ => Ok(None),
    }
}

/// The change a stored governance request carries; a row whose change is
/// missing or not canonical is never acted on.
fn stored_change(r: &RequestRow) -> ApiResult<Change> {
    let text = r.change.as_deref().ok_or_else(ApiError::integrity)?;
    governance::parse(text).map_err(|_| ApiError::integrity())
}

/// The stored governance rule (`None`: before genesis).
pub(crate) fn current_rule(st: &AppState) -> ApiResult<Option<Vec<GroupRule>>> {
    match st.store.get_meta(GOVERNANCE_RULE)? {
        None => Ok(None),
        Some(raw) => {
            let s = std::str::from_utf8(&raw).map_err(|_| ApiError::integrity())?;
            Ok(Some(stored_rules(s)?))
        }
    }
}

fn rule_json(rules: &[GroupRule]) -> Value {
    rules
        .iter()
        .map(|r| json!({"group": r.group, "k": r.k}))
        .collect()
}

/// `GET /v1/governance`: whether the quorum is established, its rule and
/// the custodian set as changes name it.
pub async fn status(State(st): State<Arc<AppState>>, _auth: Auth) -> ApiResult<Json<Value>> {
    let s = st.clone();
    let (rule, custodians) =
        blocking(move || -> ApiResult<_> { Ok((current_rule(&s)?, s.store.custodians()?)) })
            .await??;
    let set = custodian_set(&custodians);
    Ok(Json(json!({
        "established": rule.is_some(),
        "rule": rule.as_deref().map(rule_json),
        "custodians": members(&custodians),
        "custodian_set_sha256": governance::sha256_hex(set.as_bytes()),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    rule: Value,
    reason: String,
}

/// A governance rule as submitted: valid, met by at least two people, and
/// reachable by the enrolled custodians.
fn parse_rule(v: &Value, custodians: &[CustodianRow]) -> ApiResult<Vec<GroupRule>> {
    let rules =
        super::custodians::parse_rules(v).map_err(|m| ApiError::new(Code::InvalidPolicy, m))?;
    if rules.is_empty() {
        return Err(ApiError::new(
            Code::InvalidPolicy,
            "a governance rule has at least one group",
        ));
    }
    governance::check_rule_size(&rules).map_err(|m| ApiError::new(Code::InvalidPolicy, m))?;
    check_reachable(&rules, custodians)?;
    Ok(rules)
}

/// `POST /v1/governance/genesis` (admin, once): the initial rule and the
/// enrolled custodians, for every one of them to sign.
pub async fn genesis(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<RuleRequest>,
) -> ApiResult<Response> {
    let reason = check_reason(&req.reason)?;
    let s = st.clone();
    blocking(move || {
        if current_rule(&s)?.is_some() {
            return Err(ApiError::new(
                Code::GovernanceEstablished,
                "the custodians' governance is established already; change the rule with PUT /v1/governance/rule",
            ));
        }
        let custodians = s.store.custodians()?;
        let rules = parse_rule(&req.rule, &custodians)?;
        let change = Change::Genesis {
            rule: governance::rules(&rules),
            custodians: members(&custodians),
        };
        propose(&s, &auth, &change, rules, &reason)
    })
    .await?
}

/// `PUT /v1/governance/rule` (admin): a new rule, approved under the
/// current one.
pub async fn set_rule(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<RuleRequest>,
) -> ApiResult<Response> {
    let reason = check_reason(&req.reason)?;
    let s = st.clone();
    blocking(move || {
        let current = require_established(&s)?;
        let custodians = s.store.custodians()?;
        let rules = parse_rule(&req.rule, &custodians)?;
        let change = Change::SetRule {
            previous: governance::rules(&current),
            rule: governance::rules(&rules),
        };
        propose(&s, &auth, &change, current, &reason)
    })
    .await?
}

/// The stored rule, or `governance_required` before genesis.
pub(crate) fn require_established(st: &AppState) -> ApiResult<Vec<GroupRule>> {
    current_rule(st)?.ok_or_else(|| {
        ApiError::new(
            Code::GovernanceRequired,
            "this change needs the custodians' governance: enrol the custodians and propose the genesis (POST /v1/governance/genesis) first",
        )
    })
}

/// Opens the governance request for `change`, to be approved under
/// `policy` (the rule; for a genesis, the rule it establishes, and every
/// member signs). Answers 202 with the request.
pub(crate) fn propose(
    st: &Arc<AppState>,
    auth: &Auth,
    change: &Change,
    policy: Vec<GroupRule>,
    reason: &str,
) -> ApiResult<Response> {
    let text = change.text();
    if text.len() > governance::MAX_CHANGE {
        return Err(ApiError::new(Code::InvalidChange, "the change is too long"));
    }
    super::custodians::open_request(
        st,
        auth,
        RequestKind::Governance,
        &change.subject(),
        0,
        reason,
        0,
        policy,
        None,
        Some(text),
    )
}

/// The enrolment a governance change carries, as the row it becomes.
pub(crate) fn enrollee(row: &CustodianRow) -> Enrollee {
    Enrollee {
        name: row.name.clone(),
        groups: row.groups.clone(),
        serial: row.serial,
        firmware: row.firmware.clone(),
        pin_policy: row.pin_policy.clone(),
        touch_policy: row.touch_policy.clone(),
        signature_key: B64.encode(&row.sig_key),
        key_management_key: B64.encode(&row.kex_key),
        attestation: row.attestation.clone(),
    }
}

fn enrollee_row(e: &Enrollee, by: &str, now: i64) -> ApiResult<CustodianRow> {
    let key = |s: &str| -> ApiResult<Vec<u8>> {
        let k = B64.decode(s).map_err(|_| ApiError::integrity())?;
        PublicKey::from_sec1_bytes(&k).map_err(|_| ApiError::integrity())?;
        Ok(k)
    };
    Ok(CustodianRow {
        name: e.name.clone(),
        groups: e.groups.clone(),
        serial: e.serial,
        firmware: e.firmware.clone(),
        pin_policy: e.pin_policy.clone(),
        touch_policy: e.touch_policy.clone(),
        sig_key: key(&e.signature_key)?,
        kex_key: key(&e.key_management_key)?,
        attestation: e.attestation.clone(),
        enrolled_at: now,
        enrolled_by: by.into(),
    })
}

/// Counts the stored votes again, checking every signature against the
/// custodian's enrolled key: a row edited to read "approved", or a vote
/// that does not verify, is never acted on.
fn verified_status(
    st: &AppState,
    row: &RequestRow,
    custodians: &[CustodianRow],
) -> ApiResult<Status> {
    let votes = st.store.votes(&row.id)?;
    let req = core_request(st, row);
    for v in &votes {
        // A removed custodian's vote no longer counts (the tally skips it).
        let Some(c) = custodians.iter().find(|c| c.name == v.custodian) else {
            continue;
        };
        let c = as_custodian(c)?;
        if approval::verify_vote(&req, v.decision, &c, &v.signature).is_err() {
            tracing::error!(request_id = %row.id, custodian = %v.custodian, "a stored governance vote does not verify");
            return Err(ApiError::integrity());
        }
    }
    let t = super::custodians::tally(st, row, &votes, custodians)?;
    Ok(t.status(st.now()))
}

/// `POST /v1/requests/{id}/apply` (the admin who proposed it): applies an
/// approved governance change, once.
pub async fn apply(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::new(Code::InvalidRequestId, "request ids are UUIDs"))?;
    let s = st.clone();
    blocking(move || apply_now(&s, &auth, &id)).await?
}

fn apply_now(st: &Arc<AppState>, auth: &Auth, id: &str) -> ApiResult<Json<Value>> {
    let row = st
        .store
        .request(id)?
        .ok_or_else(|| ApiError::not_found("no such request"))?;
    let target = row.path.clone();
    let audit = auth.audit(st, "governance.apply", &target);
    let refuse = |e: ApiError| -> ApiResult<Json<Value>> {
        let outcome = if e.status.is_server_error() {
            vault_core::audit::entry::Outcome::Error
        } else {
            vault_core::audit::entry::Outcome::Denied
        };
        let a = st
            .store
            .audit(audit.clone().refused(outcome, e.code.as_str()));
        auth.after_write(&a);
        a?;
        Err(e)
    };
    if row.kind != RequestKind::Governance {
        return refuse(ApiError::new(
            Code::WrongRequestKind,
            "only a governance request is applied; collect the others",
        ));
    }
    if row.requester != auth.principal.name {
        return refuse(ApiError::forbidden(
            "only the admin who proposed a change can apply it",
        ));
    }
    let change = match stored_change(&row) {
        Ok(c) => c,
        Err(e) => return refuse(e),
    };
    let custodians = st.store.custodians()?;
    match verified_status(st, &row, &custodians) {
        Ok(Status::Approved) => {}
        Ok(Status::Denied { by }) => {
            return refuse(ApiError::new(
                Code::RequestDenied,
                format!("the change was denied by {by}"),
            ))
        }
        Ok(Status::Expired) => {
            return refuse(ApiError::new(
                Code::RequestExpired,
                "the change expired before its quorum",
            ))
        }
        Ok(Status::Pending(_)) => {
            return refuse(ApiError::new(
                Code::PendingApproval,
                "the change does not have its quorum yet",
            ))
        }
        Err(e) => return refuse(e),
    }
    let w = match change_op(st, auth, &change, &custodians) {
        Ok(x) => x,
        Err(e) => return refuse(e),
    };
    let text = row.change.clone().unwrap_or_default();
    let audit = audit
        .on_success("request_id", id.to_owned())
        .on_success("change", change.name())
        .on_success("change_sha256", governance::sha256_hex(text.as_bytes()));
    let r = st.store.write_audited(
        WriteOp::ApplyGovernance {
            request_id: id.to_owned(),
            requester: auth.principal.name.clone(),
            fingerprint: auth.principal.fingerprint.clone(),
            now: st.now(),
            genesis: w.genesis,
            custodians: custodian_set(&custodians),
            expect_approvals: w.expect_approvals,
            op: Box::new(w.op),
        },
        audit,
    );
    auth.after_write(&r);
    r?;
    if w.principal {
        st.reload_principals()?;
    }
    tracing::info!(request_id = %id, change = change.name(), subject = %target, by = %auth.principal.name, "governance change applied");
    let mut out = json!({
        "request_id": id,
        "status": "applied",
        "change": change.name(),
        "subject": target,
    });
    if let Some(v) = w.result {
        out["result"] = v;
    }
    Ok(Json(out))
}

/// What applying a change writes.
struct ChangeWrite {
    /// The change's own write.
    op: WriteOp,
    /// A genesis (no rule may exist yet).
    genesis: bool,
    /// The approvals a relaxation was proposed against, checked by the store.
    expect_approvals: Option<(String, String)>,
    /// What the response shows of it (the bundle, the certificate…).
    result: Option<Value>,
    /// A principal is added: the principal cache is reloaded after.
    principal: bool,
}

impl ChangeWrite {
    fn new(op: WriteOp) -> ChangeWrite {
        ChangeWrite {
            op,
            genesis: false,
            expect_approvals: None,
            result: None,
            principal: false,
        }
    }

    fn showing(self, v: Value) -> ChangeWrite {
        ChangeWrite {
            result: Some(v),
            ..self
        }
    }
}

/// The write a change makes, checked against the custodians as they are
/// now (the store refuses it if they change before it commits).
fn change_op(
    st: &AppState,
    auth: &Auth,
    change: &Change,
    custodians: &[CustodianRow],
) -> ApiResult<ChangeWrite> {
    let changed = || {
        ApiError::new(
            Code::CustodiansChanged,
            "the custodians changed since this change was proposed; propose it again",
        )
    };
    let rule_meta = |rules: &[governance::Rule]| -> ApiResult<WriteOp> {
        let rules = governance::rules_of(rules).map_err(|_| ApiError::integrity())?;
        Ok(WriteOp::SetMeta {
            key: GOVERNANCE_RULE.into(),
            value: rules_json(&rules).into_bytes(),
        })
    };
    match change {
        Change::Genesis {
            rule,
            custodians: m,
        } => {
            if *m != members(custodians) {
                return Err(changed());
            }
            Ok(ChangeWrite {
                genesis: true,
                ..ChangeWrite::new(rule_meta(rule)?)
            })
        }
        Change::SetRule { previous, rule } => {
            let current = require_established(st)?;
            if governance::rules_of(previous).map_err(|_| ApiError::integrity())? != current {
                return Err(ApiError::new(
                    Code::GovernanceChanged,
                    "the governance rule changed since this change was proposed",
                ));
            }
            Ok(ChangeWrite::new(rule_meta(rule)?))
        }
        Change::Recovery {
            group,
            k,
            recipients,
        } => {
            let in_group: Vec<CustodianRow> = custodians
                .iter()
                .filter(|c| c.groups.contains(group))
                .cloned()
                .collect();
            if *recipients != members(&in_group) {
                return Err(changed());
            }
            let keys = in_group
                .iter()
                .map(|c| {
                    PublicKey::from_sec1_bytes(&c.kex_key)
                        .map(|p| (c.name.clone(), p))
                        .map_err(|_| ApiError::integrity())
                })
                .collect::<ApiResult<Vec<_>>>()?;
            let bundle = {
                let vault = st.vault.read().unwrap_or_else(|e| e.into_inner());
                let crate::state::Vault::Unsealed(u) = &*vault else {
                    return Err(ApiError::sealed());
                };
                vault_core::custodian::recovery::split(
                    &u.rk,
                    &st.appliance_id,
                    &keys,
                    *k as usize,
                    &mut rand::rngs::OsRng,
                )
                .map_err(|e| ApiError::new(Code::InvalidCustody, e.to_string()))?
            };
            let v = bundle.to_json();
            Ok(ChangeWrite::new(WriteOp::SetMeta {
                key: "recovery_bundle".into(),
                value: v.to_string().into_bytes(),
            })
            .showing(v))
        }
        Change::EnrollCustodian { custodian } => {
            let row = enrollee_row(custodian, &auth.principal.name, st.now())?;
            let v = json!({"name": row.name, "groups": row.groups, "serial": row.serial});
            Ok(ChangeWrite::new(WriteOp::EnrollCustodian(row)).showing(v))
        }
        Change::RemoveCustodian { custodian } => {
            let now_set = members(custodians);
            if !now_set.contains(custodian) {
                return Err(changed());
            }
            let rest: Vec<CustodianRow> = custodians
                .iter()
                .filter(|c| c.name != custodian.name)
                .cloned()
                .collect();
            check_liveness(st, &rest)?;
            Ok(ChangeWrite::new(WriteOp::RemoveCustodian {
                name: custodian.name.clone(),
                by: auth.principal.name.clone(),
                now: st.now(),
            })
            .showing(json!({"removed": custodian.name})))
        }
        Change::SetCustodianGroups {
            name,
            previous,
            groups,
        } => {
            match custodians.iter().find(|c| &c.name == name) {
                Some(c) if c.groups == *previous => {}
                _ => return Err(changed()),
            }
            check_liveness(st, &regrouped(custodians, name, groups))?;
            Ok(ChangeWrite::new(WriteOp::SetCustodianGroups {
                name: name.clone(),
                groups: groups.clone(),
            })
            .showing(json!({"name": name, "groups": groups})))
        }
        Change::SetApprovals {
            path,
            previous,
            approvals,
        } => {
            let previous = governance::rules_of(previous).map_err(|_| ApiError::integrity())?;
            let rules = governance::rules_of(approvals).map_err(|_| ApiError::integrity())?;
            let stored = rules_json(&rules);
            let op = if path.ends_with('/') {
                WriteOp::SetPrefixApprovals {
                    prefix: path.clone(),
                    approvals: stored.clone(),
                    by: auth.principal.name.clone(),
                    now: st.now(),
                    expect: None,
                }
            } else {
                WriteOp::SetApprovals {
                    path: path.clone(),
                    approvals: stored.clone(),
                    expect: None,
                }
            };
            Ok(ChangeWrite {
                expect_approvals: Some((path.clone(), rules_json(&previous))),
                ..ChangeWrite::new(op)
                    .showing(json!({"path": path, "approvals": rule_json(&rules)}))
            })
        }
        Change::IssueCertificate {
            name,
            role,
            validity_days,
            csr_pem,
            grants,
        } => {
            let role = vault_core::policy::Role::parse(role).ok_or_else(ApiError::integrity)?;
            let issued = super::sys::sign_client_cert_now(st, csr_pem, name, role, *validity_days)?;
            let row = super::sys::principal_row(st, &issued, name, role);
            let op = if grants.is_empty() {
                WriteOp::AddPrincipal(row)
            } else {
                WriteOp::AddPrincipalGranted {
                    row,
                    grants: grants.clone(),
                    by: auth.principal.name.clone(),
                    now: st.now(),
                }
            };
            let mut shown = super::sys::issued_json(st, &issued, name, role);
            shown["grants"] = json!(grants);
            Ok(ChangeWrite {
                principal: true,
                ..ChangeWrite::new(op).showing(shown)
            })
        }
        Change::GrantAccess { principal, prefix } => Ok(ChangeWrite::new(WriteOp::Grant {
            principal: principal.clone(),
            prefix: prefix.clone(),
            by: auth.principal.name.clone(),
            now: st.now(),
        })
        .showing(json!({"principal": principal, "prefix": prefix}))),
        Change::DestroyVersions { path, versions } => {
            let (op, _) = super::lifecycle::write_of(change, &auth.principal.name, st.now())
                .ok_or_else(ApiError::integrity)?;
            Ok(ChangeWrite::new(op).showing(json!({"path": path, "destroyed_versions": versions})))
        }
        Change::SetRotationPolicy { path, policy } => Ok(ChangeWrite::new(WriteOp::SetRotationPolicy {
            row: super::rotations::row_of(path, policy, &auth.principal.name, st.now()),
        })
        .showing(json!({"path": path, "policy": serde_json::from_str::<Value>(&policy.text()).unwrap_or(Value::Null)}))),
        Change::DeleteSecret { path } => {
            let (op, _) = super::lifecycle::write_of(change, &auth.principal.name, st.now())
                .ok_or_else(ApiError::integrity)?;
            Ok(ChangeWrite::new(op).showing(json!({"path": path, "deleted": true})))
        }
    }
}

/// The custodians with `name`'s groups replaced by `groups`.
pub(crate) fn regrouped(
    custodians: &[CustodianRow],
    name: &str,
    groups: &[String],
) -> Vec<CustodianRow> {
    custodians
        .iter()
        .cloned()
        .map(|mut c| {
            if c.name == name {
                c.groups = groups.to_vec();
            }
            c
        })
        .collect()
}

/// Refuses a custodian set under which something that needs custodians
/// could never be approved again: the governance rule, a prefix policy, a
/// secret's approvals, or a sealed secret's custody (`quorum_unreachable`,
/// naming which). Shares already sealed to a removed custodian stay with
/// it until the value is written again.
pub(crate) fn check_liveness(st: &AppState, custodians: &[CustodianRow]) -> ApiResult<()> {
    let unreachable = |what: String, e: ApiError| {
        ApiError::new(
            Code::QuorumUnreachable,
            format!("{what} could no longer be met: {}", e.message),
        )
    };
    if let Some(rule) = current_rule(st)? {
        check_reachable(&rule, custodians)
            .map_err(|e| unreachable("the governance rule".into(), e))?;
    }
    for p in st.store.prefix_policies()? {
        check_reachable(&stored_rules(&p.approvals)?, custodians)
            .map_err(|e| unreachable(format!("the policy of {}", p.prefix), e))?;
    }
    for (path, approvals, custody) in st.store.gated_secrets()? {
        check_reachable(&stored_rules(&approvals)?, custodians)
            .map_err(|e| unreachable(format!("the approvals of {path}"), e))?;
        if let Some(c) = custody {
            let v: Value = serde_json::from_str(&c).map_err(|_| ApiError::integrity())?;
            let (group, k) =
                super::custodians::parse_custody(&v).map_err(|_| ApiError::integrity())?;
            check_reachable(&[GroupRule { group, k }], custodians)
                .map_err(|e| unreachable(format!("the custody of {path}"), e))?;
        }
    }
    Ok(())
}

/// The enrolled custodian `name`, or 404.
fn enrolled<'a>(custodians: &'a [CustodianRow], name: &str) -> ApiResult<&'a CustodianRow> {
    custodians
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no custodian {name}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonQuery {
    #[serde(default)]
    reason: Option<String>,
}

/// `DELETE /v1/custodians/{name}[?reason=…]` (admin): before genesis at once; after
/// it a governance change (202). Refused if it would leave a rule, policy
/// or custody that can no longer be met.
pub async fn remove_custodian(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(name): Path<String>,
    q: Result<Query<ReasonQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    super::custodians::check_name(&name, "name")?;
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidQuery, e.body_text()))?;
    let reason =
        super::secrets::reason_or(q.reason.as_deref(), || format!("remove custodian {name}"))?;
    let s = st.clone();
    blocking(move || {
        let custodians = s.store.custodians()?;
        let me = enrolled(&custodians, &name)?;
        let member = members(std::slice::from_ref(me)).remove(0);
        let rest: Vec<CustodianRow> = custodians
            .iter()
            .filter(|c| c.name != name)
            .cloned()
            .collect();
        check_liveness(&s, &rest)?;
        if let Some(rule) = current_rule(&s)? {
            let change = Change::RemoveCustodian { custodian: member };
            return propose(&s, &auth, &change, rule, &reason);
        }
        let audit = auth.audit(&s, "custodian.remove", &name);
        let r = s.store.write_audited(
            WriteOp::RemoveCustodian {
                name: name.clone(),
                by: auth.principal.name.clone(),
                now: s.now(),
            },
            audit,
        );
        auth.after_write(&r);
        r?;
        tracing::info!(custodian = %name, by = %auth.principal.name, "custodian removed");
        Ok(Json(json!({"removed": name})).into_response())
    })
    .await?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsRequest {
    groups: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// `PUT /v1/custodians/{name}/groups` (admin): a custodian's groups
/// replaced; before genesis at once, after it a governance change (202).
pub async fn set_groups(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<GroupsRequest>,
) -> ApiResult<Response> {
    super::custodians::check_name(&name, "name")?;
    let groups = super::custodians::parse_groups(&req.groups)?;
    let reason = super::secrets::reason_or(req.reason.as_deref(), || {
        format!("groups of custodian {name}")
    })?;
    let s = st.clone();
    blocking(move || {
        let custodians = s.store.custodians()?;
        let me = enrolled(&custodians, &name)?;
        let previous = me.groups.clone();
        check_liveness(&s, &regrouped(&custodians, &name, &groups))?;
        if let Some(rule) = current_rule(&s)? {
            let change = Change::SetCustodianGroups {
                name: name.clone(),
                previous,
                groups,
            };
            return propose(&s, &auth, &change, rule, &reason);
        }
        let audit = auth
            .audit(&s, "custodian.groups", &name)
            .on_success("groups", groups.join(","));
        let r = s.store.write_audited(
            WriteOp::SetCustodianGroups {
                name: name.clone(),
                groups: groups.clone(),
            },
            audit,
        );
        auth.after_write(&r);
        r?;
        Ok(Json(json!({"name": name, "groups": groups})).into_response())
    })
    .await?
}
