//! `/v1/rotation/{path}`: a secret's rotation policy (what changes its
//! value on the target, on which triggers and schedule) and its rotation in
//! flight. A policy decides where new values go, so once the governance is
//! established setting one is a governance change (202) the custodian
//! quorum approves; before that it is immediate. Removing a policy and
//! starting a rotation now are immediate (admin). The engine is
//! `crate::rotate`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::custodian::governance::Change;
use vault_core::rotation::RotationPolicy;
use vault_store::{RotationPolicyRow, WriteOp};

use super::blocking;
use super::error::{ApiError, ApiResult, Code};
use super::extract::{Auth, JsonBody};
use super::secrets::{check_path, reason_or};
use crate::state::AppState;
use crate::timefmt::rfc3339;

/// The stored row of a policy.
pub(crate) fn row_of(path: &str, p: &RotationPolicy, by: &str, now: i64) -> RotationPolicyRow {
    RotationPolicyRow {
        path: path.to_owned(),
        policy: p.text(),
        triggers: p
            .triggers
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(","),
        interval_seconds: p.interval_seconds,
        cron: p.cron.clone(),
        heartbeat_seconds: p.heartbeat_seconds,
        checked_at: None,
        drift_at: None,
        credential: p.credential().map(str::to_owned),
        set_at: now,
        set_by: by.to_owned(),
        last_rotated_at: None,
    }
}

/// The secret must exist in the standard tier (the appliance cannot read
/// or write a sealed-tier value alone), and so must the credential.
fn check_secrets(st: &AppState, path: &str, p: &RotationPolicy) -> ApiResult<()> {
    for (what, s) in std::iter::once(("the secret", path))
        .chain(p.credential().map(|c| ("the connector credential", c)))
    {
        let info = st
            .store
            .secret(s)?
            .filter(|i| i.deleted.is_none())
            .ok_or_else(|| ApiError::not_found(format!("{what} {s} does not exist")))?;
        if info.policy.tier != "standard" {
            return Err(ApiError::new(
                Code::SealedTier,
                format!("{what} {s} is in the sealed tier: the appliance cannot rotate or use it"),
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRequest {
    policy: Value,
    #[serde(default)]
    reason: Option<String>,
}

/// `PUT /v1/rotation/{path} {"policy", "reason"?}` (admin).
pub async fn set(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(path): Path<String>,
    JsonBody(req): JsonBody<SetRequest>,
) -> ApiResult<Response> {
    check_path(&path)?;
    let policy = RotationPolicy::parse(&path, &req.policy)
        .map_err(|e| ApiError::new(Code::InvalidRotationPolicy, e))?;
    if let vault_core::rotation::Connector::Exec { program, .. } = &policy.connector {
        crate::rotate::allowed_hook(&st, program)
            .map_err(|e| ApiError::new(Code::InvalidRotationPolicy, e))?;
    }
    let reason = reason_or(req.reason.as_deref(), || {
        format!("rotation policy of {path}")
    })?;
    let s = st.clone();
    blocking(move || {
        check_secrets(&s, &path, &policy)?;
        if let Some(rule) = super::governance::current_rule(&s)? {
            let change = Change::SetRotationPolicy {
                path: path.clone(),
                policy,
            };
            return super::governance::propose(&s, &auth, &change, rule, &reason);
        }
        let audit = auth
            .audit(&s, "rotation.set", &path)
            .detail("policy", policy.text())
            .detail("reason", reason);
        let r = s.store.write_audited(
            WriteOp::SetRotationPolicy {
                row: row_of(&path, &policy, &auth.principal.name, s.now()),
            },
            audit,
        );
        auth.after_write(&r);
        r?;
        tracing::info!(admin = %auth.principal.name, %path, "rotation policy set");
        Ok(Json(json!({"path": path, "policy": serde_json::from_str::<Value>(&policy.text()).unwrap_or(Value::Null)})).into_response())
    })
    .await?
}

/// `GET /v1/rotation/{path}` (admin): the policy and the rotation in flight.
pub async fn get(
    State(st): State<Arc<AppState>>,
    _auth: Auth,
    Path(path): Path<String>,
) -> ApiResult<Json<Value>> {
    check_path(&path)?;
    let s = st.clone();
    let p = path.clone();
    let (row, rot) = blocking(move || -> ApiResult<_> {
        Ok((s.store.rotation_policy(&p)?, s.store.rotation(&p)?))
    })
    .await??;
    let row = row.ok_or_else(|| ApiError::not_found(format!("{path} has no rotation policy")))?;
    let policy: Value = serde_json::from_str(&row.policy).map_err(|_| ApiError::integrity())?;
    Ok(Json(json!({
        "path": path,
        "policy": policy,
        "set_at": rfc3339(row.set_at),
        "set_by": row.set_by,
        "last_rotated_at": row.last_rotated_at.map(rfc3339),
        "last_heartbeat_at": row.checked_at.map(rfc3339),
        "drift_since": row.drift_at.map(rfc3339),
        "rotation": rot.map(|r| rotation_json(&r)),
    })))
}

/// A rotation in flight, as answered (never its value).
pub(crate) fn rotation_json(r: &vault_store::RotationRow) -> Value {
    json!({
        "state": r.state.as_str(),
        "trigger": r.trigger,
        "tries": r.attempts,
        "last_error": r.last_error,
        "started_at": rfc3339(r.started_at),
        "next_try_at": rfc3339(r.next_at),
        "pending_version": r.pending.as_ref().map(|p| p.0),
    })
}

/// `DELETE /v1/rotation/{path}` (admin): immediate; refused (409
/// `rotation_in_progress`) while a new value may have reached the target.
pub async fn remove(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(path): Path<String>,
) -> ApiResult<Json<Value>> {
    check_path(&path)?;
    let audit = auth.audit(&st, "rotation.remove", &path);
    let s = st.clone();
    let p = path.clone();
    let r = blocking(move || {
        s.store
            .write_audited(WriteOp::RemoveRotationPolicy { path: p }, audit)
    })
    .await?;
    auth.after_write(&r);
    r?;
    tracing::warn!(admin = %auth.principal.name, %path, "rotation policy removed");
    Ok(Json(json!({"path": path, "removed": true})))
}

/// `POST /v1/rotation/{path}` (admin): a rotation now (a failed one starts
/// again; one in flight is left as it is).
pub async fn request(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(path): Path<String>,
) -> ApiResult<Json<Value>> {
    check_path(&path)?;
    let audit = auth.audit(&st, "rotation.request", &path);
    let s = st.clone();
    let p = path.clone();
    let now = st.now();
    let r = blocking(move || {
        s.store.write_audited(
            WriteOp::RequestRotation {
                path: p,
                trigger: "manual".into(),
                now,
            },
            audit,
        )
    })
    .await?;
    auth.after_write(&r);
    r?;
    let s = st.clone();
    let p = path.clone();
    let rot = blocking(move || s.store.rotation(&p)).await??;
    tracing::info!(admin = %auth.principal.name, %path, "rotation requested");
    Ok(Json(
        json!({"path": path, "rotation": rot.map(|r| rotation_json(&r))}),
    ))
}
