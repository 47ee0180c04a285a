//! Custodians (attested YubiKey enrolment), approval policies, approval and
//! break-glass requests, signed votes and collection.
//!
//! The appliance checks every vote's signature against the custodian's
//! attested 9c key over the canonical request encoding
//! ([`vault_core::custodian::approval`]); the quorum is evaluated inside the
//! storage transaction that records the vote, so concurrent votes cannot
//! double count. For the sealed tier the appliance only relays shares that
//! custodians re-sealed to the requester's one-time key: it never holds the
//! data key.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::PublicKey;
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::audit::entry::Outcome;
use vault_core::custodian::approval::{self, Custodian, Decision, GroupRule, Status, Tally};
use vault_core::custodian::attestation::{self, DevicePolicy, PinPolicy, TouchPolicy};
use vault_core::policy::{validate_name, Role};
use vault_store::{CustodianRow, RequestRow, StoreError, VoteRow, WriteOp, WriteOutcome};

use super::blocking;
use super::error::{ApiError, ApiResult, Code};
use super::extract::{Auth, JsonBody};
use super::WRITE_TRIES;
use crate::state::AppState;
use crate::timefmt::rfc3339;
use vault_core::custodian::policy::{self, ApprovalPolicy, Custody};
use vault_core::custodian::request::{Phase, RequestKind, RequestStatus};

const MAX_GROUPS: usize = 16;
const MAX_CERT_B64: usize = 8 * 1024;

fn b64(field: &'static str, s: &str, max: usize) -> ApiResult<Vec<u8>> {
    if s.len() > max {
        return Err(ApiError::new(
            Code::InvalidBody,
            format!("{field} is too long"),
        ));
    }
    B64.decode(s.trim())
        .map_err(|_| ApiError::new(Code::InvalidBody, format!("{field} is not base64")))
}

fn sec1(p: &PublicKey) -> Vec<u8> {
    p.to_encoded_point(false).as_bytes().to_vec()
}

pub(crate) fn check_name(n: &str, what: &str) -> ApiResult<()> {
    if validate_name(n) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::InvalidName,
            format!("{what} must be 1-64 characters of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// Parses a stored or submitted rule list (`vault_core::custodian::policy`).
pub fn parse_rules(v: &Value) -> Result<Vec<GroupRule>, String> {
    ApprovalPolicy::from_json(v)
        .map(ApprovalPolicy::into_rules)
        .map_err(|e| e.to_string())
}

/// `{"group": .., "k": ..}`: who holds a sealed-tier secret's shares.
pub fn parse_custody(v: &Value) -> Result<(String, usize), String> {
    Custody::from_json(v)
        .map(|c| (c.0.group, c.0.k))
        .map_err(|e| e.to_string())
}

pub(crate) fn rules_json(rules: &[GroupRule]) -> String {
    policy::stored_rules(rules)
}

pub(crate) fn stored_rules(s: &str) -> ApiResult<Vec<GroupRule>> {
    let v: Value = serde_json::from_str(s).map_err(|_| ApiError::integrity())?;
    parse_rules(&v).map_err(|_| ApiError::integrity())
}

/// The core's view of an enrolled custodian.
pub(crate) fn as_custodian(c: &CustodianRow) -> ApiResult<Custodian> {
    Ok(Custodian {
        id: c.name.clone(),
        groups: c.groups.clone(),
        signing_key: PublicKey::from_sec1_bytes(&c.sig_key).map_err(|_| ApiError::integrity())?,
    })
}

/// Refuses rules that enrolled custodians can never satisfy.
pub(crate) fn check_reachable(rules: &[GroupRule], custodians: &[CustodianRow]) -> ApiResult<()> {
    policy::check_reachable(rules, custodians.iter().map(|c| c.groups.as_slice()))
        .map_err(|e| ApiError::new(Code::QuorumUnreachable, e.to_string()))
}

// ---------------------------------------------------------------- enrolment

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    name: String,
    groups: Vec<String>,
    /// Base64 DER attestation certificate of the 9c key.
    signature_attestation: String,
    /// Base64 DER attestation certificate of the 9d key.
    key_management_attestation: String,
    /// Base64 DER: the device's f9 certificate first, then any further
    /// intermediates towards the root.
    intermediates: Vec<String>,
    /// Why (recorded with the governance request once the governance is
    /// established).
    #[serde(default)]
    reason: Option<String>,
}

fn pin_str(p: PinPolicy) -> String {
    match p {
        PinPolicy::Never => "never".into(),
        PinPolicy::Once => "once".into(),
        PinPolicy::Always => "always".into(),
        PinPolicy::Unknown(x) => format!("unknown({x})"),
    }
}

fn touch_str(t: TouchPolicy) -> String {
    match t {
        TouchPolicy::Never => "never".into(),
        TouchPolicy::Always => "always".into(),
        TouchPolicy::Cached => "cached".into(),
        TouchPolicy::Unknown(x) => format!("unknown({x})"),
    }
}

pub(crate) fn custodian_json(c: &CustodianRow) -> Value {
    json!({
        "name": c.name,
        "groups": c.groups,
        "serial": c.serial,
        "firmware": c.firmware,
        "pin_policy": c.pin_policy,
        "touch_policy": c.touch_policy,
        "signature_key": B64.encode(&c.sig_key),
        "key_management_key": B64.encode(&c.kex_key),
        "enrolled_at": rfc3339(c.enrolled_at),
        "enrolled_by": c.enrolled_by,
    })
}

/// `POST /v1/custodians` (admin): enrol a custodian's attested YubiKey keys.
/// Before genesis the enrolment is immediate (the initial set, which every
/// member then signs); after it, it is a governance change (202).
pub async fn enroll(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<EnrollRequest>,
) -> ApiResult<Response> {
    check_name(&req.name, "name")?;
    let groups = parse_groups(&req.groups)?;
    let reason = super::secrets::reason_or(req.reason.as_deref(), || {
        format!("enrol custodian {}", req.name)
    })?;
    let row = attested_row(&st, &req, groups, &auth.principal.name)?;
    let s = st.clone();
    let rule = blocking(move || super::governance::current_rule(&s)).await??;
    if let Some(rule) = rule {
        let change = vault_core::custodian::governance::Change::EnrollCustodian {
            custodian: super::governance::enrollee(&row),
        };
        let s = st.clone();
        return blocking(move || super::governance::propose(&s, &auth, &change, rule, &reason))
            .await?;
    }
    let out = custodian_json(&row);
    let audit = auth
        .audit(&st, "custodian.enroll", &req.name)
        .on_success("serial", row.serial.to_string())
        .on_success("firmware", row.firmware.clone())
        .on_success("groups", row.groups.join(","))
        .on_success("pin_policy", row.pin_policy.clone())
        .on_success("touch_policy", row.touch_policy.clone());
    let s = st.clone();
    let r = blocking(move || s.store.write_audited(WriteOp::EnrollCustodian(row), audit)).await?;
    auth.after_write(&r);
    r?;
    tracing::info!(custodian = %req.name, by = %auth.principal.name, "custodian enrolled");
    Ok(Json(out).into_response())
}

/// 1..=16 valid group names, sorted, without duplicates.
pub(crate) fn parse_groups(groups: &[String]) -> ApiResult<Vec<String>> {
    if groups.is_empty() || groups.len() > MAX_GROUPS {
        return Err(ApiError::new(
            Code::InvalidGroups,
            format!("a custodian is in 1..={MAX_GROUPS} groups"),
        ));
    }
    for g in groups {
        check_name(g, "group")?;
    }
    let mut groups = groups.to_vec();
    groups.sort();
    groups.dedup();
    Ok(groups)
}

/// The custodian row of an enrolment whose 9c and 9d attestations verify
/// under the configured roots, meet the device policy and come from one
/// device with two different keys.
fn attested_row(
    st: &AppState,
    req: &EnrollRequest,
    groups: Vec<String>,
    enrolled_by: &str,
) -> ApiResult<CustodianRow> {
    let sig_leaf = b64(
        "signature_attestation",
        &req.signature_attestation,
        MAX_CERT_B64,
    )?;
    let kex_leaf = b64(
        "key_management_attestation",
        &req.key_management_attestation,
        MAX_CERT_B64,
    )?;
    if req.intermediates.is_empty() || req.intermediates.len() > 4 {
        return Err(ApiError::new(
            Code::InvalidBody,
            "intermediates: the f9 certificate, then at most 3 more",
        ));
    }
    let chain: Vec<Vec<u8>> = req
        .intermediates
        .iter()
        .map(|c| b64("intermediates", c, MAX_CERT_B64))
        .collect::<Result<_, _>>()?;
    let chain_refs: Vec<&[u8]> = chain.iter().map(|c| c.as_slice()).collect();
    let roots: Vec<&[u8]> = st.attestation_roots.iter().map(|c| c.as_slice()).collect();
    let now = st.now();
    let policy = DevicePolicy {
        require_touch: st.config.custodians.require_touch,
        require_pin_always: st.config.custodians.require_pin_always,
        min_firmware: None,
    };
    let refuse = |slot: &str, e: attestation::AttestationError| {
        tracing::warn!(name = %req.name, slot, error = %e, "custodian enrolment refused");
        ApiError::lower(
            e.code(),
            StatusCode::BAD_REQUEST,
            format!("{slot} attestation: {e}"),
        )
    };
    let sig =
        attestation::verify(&sig_leaf, &chain_refs, &roots, now).map_err(|e| refuse("9c", e))?;
    policy.check(&sig).map_err(|e| refuse("9c", e))?;
    let kex =
        attestation::verify(&kex_leaf, &chain_refs, &roots, now).map_err(|e| refuse("9d", e))?;
    policy.check(&kex).map_err(|e| refuse("9d", e))?;
    if sig.serial != kex.serial {
        return Err(ApiError::new(
            Code::AttestationMismatch,
            "the 9c and 9d attestations come from different devices",
        ));
    }
    if sig.public_key == kex.public_key {
        return Err(ApiError::new(
            Code::AttestationMismatch,
            "9c and 9d must hold different keys",
        ));
    }
    Ok(CustodianRow {
        name: req.name.clone(),
        groups,
        serial: sig.serial,
        firmware: format!("{}.{}.{}", sig.firmware.0, sig.firmware.1, sig.firmware.2),
        pin_policy: pin_str(sig.pin_policy),
        touch_policy: touch_str(sig.touch_policy),
        sig_key: sec1(&sig.public_key),
        kex_key: sec1(&kex.public_key),
        attestation: json!({
            "signature": req.signature_attestation,
            "key_management": req.key_management_attestation,
            "intermediates": req.intermediates,
        })
        .to_string(),
        enrolled_at: now,
        enrolled_by: enrolled_by.to_owned(),
    })
}

/// `GET /v1/custodians`.
pub async fn list(State(st): State<Arc<AppState>>, _auth: Auth) -> ApiResult<Json<Value>> {
    let s = st.clone();
    let rows = blocking(move || s.store.custodians()).await??;
    Ok(Json(json!({
        "custodians": rows.iter().map(custodian_json).collect::<Vec<_>>()
    })))
}

// ---------------------------------------------------------------- policy

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    approvals: Value,
    /// Why (recorded with the governance request of a relaxation).
    #[serde(default)]
    reason: Option<String>,
}

/// `PUT /v1/policies/{path}` (admin): the approvals a secret's checkouts
/// need. A path ending with `/` is a prefix: its approvals apply to every
/// secret under it, also to those written later, on top of their own (AND);
/// `[]` removes a prefix policy.
pub async fn set_policy(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(path): Path<String>,
    JsonBody(req): JsonBody<PolicyRequest>,
) -> ApiResult<Response> {
    let prefix = path.ends_with('/');
    vault_core::policy::validate_path(path.strip_suffix('/').unwrap_or(&path))
        .map_err(|e| ApiError::new(Code::InvalidPath, e.to_string()))?;
    let rules = parse_rules(&req.approvals).map_err(|m| ApiError::new(Code::InvalidPolicy, m))?;
    let s = st.clone();
    let custodians = blocking(move || s.store.custodians()).await??;
    check_reachable(&rules, &custodians)?;
    let reason =
        super::secrets::reason_or(req.reason.as_deref(), || format!("approvals of {path}"))?;
    // Once the governance is established, a change that asks for less than
    // the stored approvals is a governance change; one that asks at least
    // as much stays immediate, and is written only over the approvals it
    // was judged against (else `policy_changed`).
    let (s, p2, r2, auth2) = (st.clone(), path.clone(), rules.clone(), auth.clone());
    let decided = blocking(move || -> ApiResult<Result<Response, Option<String>>> {
        let Some(rule) = super::governance::current_rule(&s)? else {
            return Ok(Err(None));
        };
        let previous = stored_approvals(&s, &p2)?;
        if policy::narrows(&previous, &r2) {
            return Ok(Err(Some(rules_json(&previous))));
        }
        let change = vault_core::custodian::governance::Change::SetApprovals {
            path: p2,
            previous: vault_core::custodian::governance::rules(&previous),
            approvals: vault_core::custodian::governance::rules(&r2),
        };
        super::governance::propose(&s, &auth2, &change, rule, &reason).map(Ok)
    })
    .await??;
    let expect = match decided {
        Ok(proposed) => return Ok(proposed),
        Err(expect) => expect,
    };
    let approvals = rules_json(&rules);
    let audit = auth
        .audit(&st, "policy.set", &path)
        .on_success("approvals", approvals.clone())
        .on_success("scope", if prefix { "prefix" } else { "secret" });
    let op = if prefix {
        WriteOp::SetPrefixApprovals {
            prefix: path.clone(),
            approvals,
            by: auth.principal.name.clone(),
            now: st.now(),
            expect,
        }
    } else {
        WriteOp::SetApprovals {
            path: path.clone(),
            approvals,
            expect,
        }
    };
    let s = st.clone();
    let r = blocking(move || s.store.write_audited(op, audit)).await?;
    auth.after_write(&r);
    r?;
    Ok(Json(json!({
        "path": path,
        "approvals": rules.iter().map(|r| json!({"group": r.group, "k": r.k})).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// The approvals stored for a secret (not found if there is none) or a
/// prefix (none if it has no policy).
fn stored_approvals(st: &AppState, path: &str) -> ApiResult<Vec<GroupRule>> {
    if path.ends_with('/') {
        match st
            .store
            .prefix_policies()?
            .into_iter()
            .find(|p| p.prefix == path)
        {
            Some(p) => stored_rules(&p.approvals),
            None => Ok(Vec::new()),
        }
    } else {
        let info = st
            .store
            .secret(path)?
            .ok_or_else(|| ApiError::not_found(format!("no secret at {path}")))?;
        stored_rules(&info.policy.approvals)
    }
}

/// `GET /v1/policies` (admin, auditor, custodian): the prefix policies.
pub async fn list_policies(State(st): State<Arc<AppState>>, _auth: Auth) -> ApiResult<Json<Value>> {
    let s = st.clone();
    let rows = blocking(move || s.store.prefix_policies()).await??;
    let out = rows
        .iter()
        .map(prefix_policy_json)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "prefix_policies": out })))
}

pub(crate) fn prefix_policy_json(p: &vault_store::PrefixPolicy) -> ApiResult<Value> {
    let rules = stored_rules(&p.approvals)?;
    Ok(json!({
        "prefix": p.prefix,
        "approvals": rules.iter().map(|r| json!({"group": r.group, "k": r.k})).collect::<Vec<_>>(),
        "set_at": crate::timefmt::rfc3339(p.set_at),
        "set_by": p.set_by,
    }))
}

// ---------------------------------------------------------------- requests

/// The canonical request custodians sign.
pub fn core_request(st: &AppState, r: &RequestRow) -> approval::Request {
    approval::Request {
        request_id: r.id.clone(),
        appliance_id: st.appliance_id.clone(),
        path: r.path.clone(),
        version: r.version,
        requester: r.requester.clone(),
        reason: r.reason.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        nonce: r.nonce,
        recipient_key: r.recipient_key.clone(),
        change: r.change.clone(),
    }
}

/// Rebuilds the tally of a request from its stored votes.
pub(crate) fn tally(
    st: &AppState,
    r: &RequestRow,
    votes: &[VoteRow],
    custodians: &[CustodianRow],
) -> Result<Tally, StoreError> {
    let policy = stored_rules(&r.policy)
        .map_err(|_| StoreError::Corrupt(format!("request {}: policy", r.id)))?;
    let mut t = match super::governance::genesis_signers(r)? {
        Some(names) => Tally::with_everyone(core_request(st, r), names),
        None => Tally::new(core_request(st, r), policy),
    };
    for v in votes {
        // A vote by a custodian removed since no longer counts.
        let Some(c) = custodians.iter().find(|c| c.name == v.custodian) else {
            continue;
        };
        let c = as_custodian(c).map_err(|_| StoreError::Corrupt("custodian key".into()))?;
        t.restore(&c, v.decision);
    }
    Ok(t)
}

fn status_json(s: &Status, r: &RequestRow) -> (String, Value) {
    let phase = Phase::of(s, r.collected_at.is_some());
    let needs = match (phase, s) {
        (Phase::PendingApproval, Status::Pending(missing)) => missing
            .iter()
            .map(|(g, n)| json!({"group": g, "remaining": n}))
            .collect(),
        _ => json!([]),
    };
    (phase.as_str().into(), needs)
}

fn request_json(
    st: &AppState,
    r: &RequestRow,
    votes: &[VoteRow],
    custodians: &[CustodianRow],
) -> Value {
    let (status, needs) = match tally(st, r, votes, custodians) {
        Ok(t) => status_json(&t.status(st.now()), r),
        Err(_) => ("unknown".into(), json!([])),
    };
    let policy: Value = serde_json::from_str(&r.policy).unwrap_or(Value::Null);
    let mut v = json!({
        "request_id": r.id,
        "kind": r.kind.as_str(),
        "status": status,
        "needs": needs,
        "appliance_id": st.appliance_id,
        "path": r.path,
        "version": r.version,
        "requester": r.requester,
        "reason": r.reason,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "created": rfc3339(r.created_at),
        "expires": rfc3339(r.expires_at),
        "nonce": B64.encode(r.nonce),
        "recipient_key": r.recipient_key.as_ref().map(|k| B64.encode(k)),
        "policy": policy,
        "ttl_seconds": r.ttl_seconds,
        "checkout_id": r.checkout_id,
        "votes": votes.iter().map(|v| json!({
            "custodian": v.custodian,
            "decision": v.decision.as_str(),
            "at": rfc3339(v.created_at),
            "signature": B64.encode(&v.signature),
        })).collect::<Vec<_>>(),
    });
    if let Some(c) = &r.change {
        v["change"] = json!(c);
        v["change_sha256"] = json!(vault_core::custodian::governance::sha256_hex(c.as_bytes()));
    }
    v
}

/// Opens a request for a gated checkout, a break-glass opening or (with
/// `change`) a governance change.
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_request(
    st: &Arc<AppState>,
    auth: &Auth,
    kind: RequestKind,
    path: &str,
    version: u64,
    reason: &str,
    ttl_seconds: u64,
    policy: Vec<GroupRule>,
    recipient_key: Option<Vec<u8>>,
    change: Option<String>,
) -> ApiResult<Response> {
    let now = st.now();
    let mut nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let row = RequestRow {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        path: path.into(),
        version,
        requester: auth.principal.name.clone(),
        requester_fingerprint: auth.principal.fingerprint.clone(),
        reason: reason.into(),
        created_at: now,
        expires_at: now + st.config.custodians.request_ttl_secs as i64,
        nonce,
        recipient_key,
        policy: rules_json(&policy),
        ttl_seconds,
        status: RequestStatus::Pending,
        collected_at: None,
        checkout_id: None,
        change,
    };
    let id = row.id.clone();
    let action = kind.open_action().as_str();
    let (rid, pol, rsn) = (id.clone(), row.policy.clone(), reason.to_owned());
    let mut audit = auth
        .audit(st, action, path)
        .on_success("request_id", rid)
        .on_success("version", version.to_string())
        .on_success("policy", pol)
        .on_success("reason", rsn);
    if let Some(c) = &row.change {
        let name = vault_core::custodian::governance::parse(c)
            .map(|c| c.name())
            .unwrap_or("invalid");
        audit = audit.on_success("change", name).on_success(
            "change_sha256",
            vault_core::custodian::governance::sha256_hex(c.as_bytes()),
        );
    }
    let r = st
        .store
        .write_audited(WriteOp::OpenRequest(row.clone()), audit);
    auth.after_write(&r);
    r?;
    tracing::info!(principal = %auth.principal.name, %path, request_id = %id, kind = kind.as_str(), "approval request opened");
    let needs: Vec<Value> = match super::governance::genesis_signers(&row)? {
        Some(names) => vec![json!({"group": approval::EVERYONE, "remaining": names.len()})],
        None => policy
            .iter()
            .map(|r| json!({"group": r.group, "remaining": r.k}))
            .collect(),
    };
    let mut out = json!({
        "request_id": id,
        "kind": kind.as_str(),
        "status": Phase::PendingApproval.as_str(),
        "path": path,
        "version": version,
        "expires_at": rfc3339(row.expires_at),
        "needs": needs,
    });
    if let Some(c) = row.change {
        out["change"] = json!(c);
    }
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/requests`: pam principals see their own requests only.
pub async fn list_requests(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidQuery, e.body_text()))?;
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(RequestStatus::parse(s).ok_or_else(|| {
            ApiError::new(
                Code::InvalidQuery,
                "status is pending, approved, denied or all",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::new(Code::InvalidQuery, "limit must be 1..=1000"));
    }
    let s = st.clone();
    let (rows, custodians, votes) = blocking(move || -> Result<_, StoreError> {
        let rows = s.store.requests(status, limit)?;
        let custodians = s.store.custodians()?;
        let votes = rows
            .iter()
            .map(|r| s.store.votes(&r.id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, custodians, votes))
    })
    .await??;
    let mine_only = auth.principal.role == Role::Pam;
    let out: Vec<Value> = rows
        .iter()
        .zip(&votes)
        .filter(|(r, _)| !mine_only || r.requester == auth.principal.name)
        .map(|(r, v)| request_json(&st, r, v, &custodians))
        .collect();
    Ok(Json(json!({ "requests": out })))
}

/// `GET /v1/requests/{id}`: the request in full, with the caller's stored
/// share envelope when the caller is a custodian of a break-glass secret.
pub async fn get_request(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_request_id(&id)?;
    let s = st.clone();
    let (row, votes, custodians, sealed) = blocking(move || -> Result<_, StoreError> {
        let row = s.store.request(&id)?.ok_or(StoreError::NotFound)?;
        let votes = s.store.votes(&id)?;
        let custodians = s.store.custodians()?;
        let sealed = if row.kind == RequestKind::Breakglass {
            s.store.sealed_version(&row.path, row.version)?
        } else {
            None
        };
        Ok((row, votes, custodians, sealed))
    })
    .await??;
    if auth.principal.role == Role::Pam && row.requester != auth.principal.name {
        return Err(ApiError::forbidden(
            "this request belongs to another principal",
        ));
    }
    let mut v = request_json(&st, &row, &votes, &custodians);
    if auth.principal.role == Role::Custodian {
        if let Some(sv) = sealed {
            if let Some((_, env)) = sv.shares.iter().find(|(c, _)| *c == auth.principal.name) {
                v["your_share"] = json!(B64.encode(env));
            }
        }
    }
    Ok(Json(v))
}

fn check_request_id(id: &str) -> ApiResult<()> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ApiError::new(Code::InvalidRequestId, "request ids are UUIDs"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    decision: String,
    /// Base64 DER ECDSA signature by the custodian's 9c key.
    signature: String,
    /// Break-glass approvals: the custodian's share re-sealed to the
    /// requester's one-time key (base64).
    #[serde(default)]
    share: Option<String>,
}

/// A validated vote body.
struct VoteInput {
    decision: Decision,
    signature: Vec<u8>,
    share: Option<Vec<u8>>,
}

impl VoteInput {
    fn parse(req: VoteRequest) -> ApiResult<VoteInput> {
        let decision = Decision::parse(&req.decision)
            .ok_or_else(|| ApiError::new(Code::InvalidDecision, "decision is approve or deny"))?;
        let signature = b64("signature", &req.signature, 256)?;
        let share = match &req.share {
            Some(s) => Some(b64("share", s, 1024)?),
            None => None,
        };
        Ok(VoteInput {
            decision,
            signature,
            share,
        })
    }
}

/// `POST /v1/requests/{id}/vote` (custodian): a signed approval or denial.
pub async fn vote(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<VoteRequest>,
) -> ApiResult<Json<Value>> {
    check_request_id(&id)?;
    let input = VoteInput::parse(req)?;
    let decision = input.decision;
    let (s, i2) = (st.clone(), id.clone());
    let status = blocking(move || cast_vote(&s, &auth, &i2, input)).await??;
    Ok(Json(json!({
        "request_id": id,
        "decision": decision.as_str(),
        "status": status.phase(),
    })))
}

/// The caller's custodian record, and whether a share must come with an
/// approval: a custodian who holds a share of the sealed value forwards it
/// with their approval; nobody else sends one.
fn voter(
    st: &AppState,
    auth: &Auth,
    row: &RequestRow,
    custodians: &[CustodianRow],
    input: &VoteInput,
) -> ApiResult<Custodian> {
    let me = custodians
        .iter()
        .find(|c| c.name == auth.principal.name)
        .ok_or_else(|| {
            ApiError::new(
                Code::NotACustodian,
                "this principal has no enrolled custodian key",
            )
        })?;
    let me = as_custodian(me)?;
    let sealed = match row.kind {
        RequestKind::Breakglass => st.store.sealed_version(&row.path, row.version)?,
        RequestKind::Checkout | RequestKind::Governance => None,
    };
    let holds_share = sealed
        .as_ref()
        .is_some_and(|sv| sv.shares.iter().any(|(c, _)| *c == me.id));
    match (
        holds_share && input.decision == Decision::Approve,
        &input.share,
    ) {
        (true, None) => Err(ApiError::new(
            Code::ShareRequired,
            "this break-glass approval must carry the custodian's re-sealed share",
        )),
        (false, Some(_)) => Err(ApiError::new(
            Code::UnexpectedShare,
            "only a break-glass approval by a share holder carries a share",
        )),
        _ => Ok(me),
    }
}

/// A vote the quorum rules refuse.
fn vote_refused(e: approval::VoteError) -> ApiError {
    use approval::VoteError;
    match e {
        VoteError::SelfApproval => ApiError::new(
            Code::SelfApproval,
            "requesters cannot approve their own request",
        ),
        VoteError::NotInPolicy => ApiError::new(
            Code::NotInPolicy,
            "this custodian is in none of the request's groups",
        ),
        // Every other refusal is a conflict with the request's state.
        e => ApiError::with_status(StatusCode::CONFLICT, Code::named(e.code()), e.to_string()),
    }
}

/// Verifies and records one vote; the request's stored status after it.
/// The signature is checked first, outside the writer. The vote is then
/// decided on the votes read just before and written only if no other vote
/// landed in between (else read again, up to [`WRITE_TRIES`]).
fn cast_vote(st: &AppState, auth: &Auth, id: &str, input: VoteInput) -> ApiResult<RequestStatus> {
    let row = st.store.request(id)?.ok_or(StoreError::NotFound)?;
    let custodians = st.store.custodians()?;
    let me = voter(st, auth, &row, &custodians, &input)?;
    let VoteInput {
        decision,
        signature,
        share,
    } = input;
    if let Err(e) = approval::verify_vote(&core_request(st, &row), decision, &me, &signature) {
        tracing::warn!(custodian = %me.id, request_id = %id, "vote signature does not verify");
        return Err(ApiError::lower(
            e.code(),
            StatusCode::BAD_REQUEST,
            e.to_string(),
        ));
    }
    let now = st.now();
    let mut tries = 0;
    let r = loop {
        tries += 1;
        let current = st.store.request(id)?.ok_or(StoreError::NotFound)?;
        let votes = st.store.votes(id)?;
        let audit = auth.audit(st, "approval.vote", &row.path);
        let decided = tally(st, &current, &votes, &custodians)
            .map_err(|e| (e.audit_outcome(), e.code(), ApiError::from(e)))
            .and_then(|mut t| {
                t.vote(&me, decision, &signature, now)
                    .map(|s| RequestStatus::after_vote(&s))
                    .map_err(|e| (Outcome::Denied, e.code(), vote_refused(e)))
            });
        let status = match decided {
            Ok(s) => s,
            Err((outcome, code, refusal)) => {
                let a = st.store.audit(audit.refused(outcome, code));
                auth.after_write(&a);
                a?;
                return Err(refusal);
            }
        };
        let vote = VoteRow {
            request_id: id.to_owned(),
            custodian: me.id.clone(),
            decision,
            signature: signature.clone(),
            share: share.clone(),
            created_at: now,
        };
        let audit = audit
            .on_success("request_id", id.to_owned())
            .on_success("decision", decision.as_str())
            .on_success("status", status.as_str());
        let op = WriteOp::Vote {
            row: vote,
            status,
            expect_votes: votes.len(),
        };
        let r = st.store.write_audited(op, audit);
        if matches!(r, Err(StoreError::Stale(_))) && tries < WRITE_TRIES {
            continue;
        }
        auth.after_write(&r);
        break r;
    };
    let WriteOutcome::Voted(status) = r? else {
        return Err(ApiError::internal("unexpected store outcome"));
    };
    tracing::info!(custodian = %me.id, request_id = %id, decision = decision.as_str(), status = status.as_str(), "vote recorded");
    Ok(status)
}

/// `POST /v1/requests/{id}/collect` (the requester, once approved).
pub async fn collect(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_request_id(&id)?;
    let s = st.clone();
    let i2 = id.clone();
    let row = blocking(move || s.store.request(&i2))
        .await??
        .ok_or_else(|| ApiError::not_found("no such request"))?;
    if row.requester != auth.principal.name {
        return Err(ApiError::forbidden(
            "only the requester can collect a request",
        ));
    }
    match row.kind {
        RequestKind::Checkout => super::secrets::collect_checkout(st, auth, row).await,
        RequestKind::Breakglass => collect_breakglass(st, auth, row).await,
        RequestKind::Governance => Err(ApiError::new(
            Code::WrongRequestKind,
            "a governance change is applied with POST /v1/requests/{id}/apply",
        )),
    }
}

async fn collect_breakglass(
    st: Arc<AppState>,
    auth: Auth,
    row: RequestRow,
) -> ApiResult<Json<Value>> {
    let rid = row.id.clone();
    let audit = auth
        .audit(&st, "breakglass.collect", &row.path)
        .on_success("request_id", rid);
    let s = st.clone();
    let (id, principal, now) = (row.id.clone(), auth.principal.name.clone(), st.now());
    let fingerprint = auth.principal.fingerprint.clone();
    let r = blocking(move || {
        s.store.write_audited(
            WriteOp::Collect {
                request_id: id,
                requester: principal,
                fingerprint,
                now,
                checkout: None,
            },
            audit,
        )
    })
    .await?;
    auth.after_write(&r);
    r?;
    let s = st.clone();
    let (p, v, i) = (row.path.clone(), row.version, row.id.clone());
    let (sealed, votes, info) = blocking(move || -> Result<_, StoreError> {
        Ok((
            s.store.sealed_version(&p, v)?,
            s.store.votes(&i)?,
            s.store.secret(&p)?,
        ))
    })
    .await??;
    let sealed = sealed.ok_or_else(ApiError::integrity)?;
    let custody = info
        .and_then(|i| i.policy.custody)
        .ok_or_else(ApiError::integrity)?;
    let (_, k) = parse_custody(&serde_json::from_str(&custody).map_err(|_| ApiError::integrity())?)
        .map_err(|_| ApiError::integrity())?;
    tracing::info!(principal = %auth.principal.name, path = %row.path, request_id = %row.id, "break-glass shares collected");
    Ok(Json(json!({
        "request_id": row.id,
        "path": row.path,
        "version": row.version,
        "k": k,
        "ciphertext": B64.encode(&sealed.ciphertext),
        "shares": votes.iter().filter_map(|v| v.share.as_ref().map(|s| json!({
            "custodian": v.custodian,
            "envelope": B64.encode(s),
        }))).collect::<Vec<_>>(),
    })))
}

// ---------------------------------------------------------------- recovery

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryRequest {
    group: String,
    k: usize,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/sys/recovery` (admin): propose splitting the root key k-of-n
/// among a group's custodians (their 9d keys), replacing any earlier
/// bundle. A governance change (202): refused before genesis, applied with
/// `POST /v1/requests/{id}/apply` once the custodians approve.
pub async fn configure_recovery(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<RecoveryRequest>,
) -> ApiResult<Response> {
    check_name(&req.group, "group")?;
    if req.k < 2 {
        // One custodian alone must never be able to rebuild the root key.
        return Err(ApiError::new(Code::InvalidCustody, "recovery needs k >= 2"));
    }
    let reason = super::secrets::reason_or(req.reason.as_deref(), || {
        format!("recovery bundle for {}, k = {}", req.group, req.k)
    })?;
    let s = st.clone();
    blocking(move || {
        let rule = super::governance::require_established(&s)?;
        let custodians = s.store.custodians()?;
        check_reachable(
            &[GroupRule {
                group: req.group.clone(),
                k: req.k,
            }],
            &custodians,
        )?;
        let in_group: Vec<CustodianRow> = custodians
            .into_iter()
            .filter(|c| c.groups.contains(&req.group))
            .collect();
        let change = vault_core::custodian::governance::Change::Recovery {
            group: req.group.clone(),
            k: req.k as u64,
            recipients: vault_store::members(&in_group),
        };
        super::governance::propose(&s, &auth, &change, rule, &reason)
    })
    .await?
}

/// `GET /v1/sys/recovery`: the recovery bundle.
pub async fn get_recovery(State(st): State<Arc<AppState>>, _auth: Auth) -> ApiResult<Json<Value>> {
    let s = st.clone();
    let raw = blocking(move || s.store.get_meta("recovery_bundle"))
        .await??
        .ok_or_else(|| ApiError::not_found("no recovery bundle has been configured"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| ApiError::integrity())?;
    Ok(Json(v))
}
