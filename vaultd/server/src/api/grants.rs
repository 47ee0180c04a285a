//! `/v1/grants`: which paths each PAM server may check out. Default deny:
//! a pam principal reaches only the paths one of its name's grants covers
//! (`*` every path, `a/b/` every path under it, `a/b` that path), checked
//! in the transaction that records a checkout, a checkout request or a
//! break-glass collection. A grant widens access, so once the governance
//! is established it is a governance change the custodian quorum approves
//! (202 with the request); before that (on a fresh appliance, while the
//! admin sets it up) it is immediate. Removing one narrows access and is
//! always immediate.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::custodian::governance::Change;
use vault_core::policy::validate_name;
use vault_store::{WriteOp, WriteOutcome};

use super::blocking;
use super::error::{ApiError, ApiResult, Code};
use super::extract::{Auth, JsonBody};
use crate::state::AppState;
use crate::timefmt::rfc3339;

/// `GET /v1/grants` (admin, auditor, custodian): every grant.
pub async fn list(State(st): State<Arc<AppState>>, _auth: Auth) -> ApiResult<Json<Value>> {
    let s = st.clone();
    let rows = blocking(move || s.store.grants()).await??;
    let list: Vec<Value> = rows
        .iter()
        .map(|g| {
            json!({
                "principal": g.principal, "prefix": g.prefix,
                "granted_at": rfc3339(g.granted_at), "granted_by": g.granted_by,
            })
        })
        .collect();
    Ok(Json(json!({ "grants": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    principal: String,
    prefix: String,
    /// Why (the governance request's reason once governance is established).
    #[serde(default)]
    reason: Option<String>,
}

fn check(principal: &str, prefix: &str) -> ApiResult<()> {
    if !validate_name(principal) {
        return Err(ApiError::new(
            Code::InvalidName,
            "principal is a principal name (1-64 of A-Z a-z 0-9 . _ -)",
        ));
    }
    super::sys::check_grant(prefix)
}

/// `POST /v1/grants {"principal","prefix","reason"?}` (admin): 200 at once
/// before genesis, 202 with a governance request after. The principal must
/// be a pam name with an unrevoked certificate (404 otherwise); a grant it
/// has already is 409 `grant_exists`.
pub async fn add(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<GrantRequest>,
) -> ApiResult<Response> {
    check(&req.principal, &req.prefix)?;
    let s = st.clone();
    if let Some(rule) = blocking(move || super::governance::current_rule(&s)).await?? {
        let reason = super::secrets::reason_or(req.reason.as_deref(), || {
            format!("grant {} to {}", req.prefix, req.principal)
        })?;
        let change = Change::GrantAccess {
            principal: req.principal.clone(),
            prefix: req.prefix.clone(),
        };
        let s = st.clone();
        return blocking(move || super::governance::propose(&s, &auth, &change, rule, &reason))
            .await?;
    }
    let op = WriteOp::Grant {
        principal: req.principal.clone(),
        prefix: req.prefix.clone(),
        by: auth.principal.name.clone(),
        now: st.now(),
    };
    let audit = auth
        .audit(&st, "grant.add", &req.principal)
        .detail("prefix", req.prefix.clone());
    let s = st.clone();
    let r = blocking(move || s.store.write_audited(op, audit)).await?;
    auth.after_write(&r);
    r?;
    tracing::info!(admin = %auth.principal.name, principal = %req.principal, prefix = %req.prefix, "access granted");
    Ok(Json(json!({"principal": req.principal, "prefix": req.prefix})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    principal: String,
    prefix: String,
}

/// `POST /v1/grants/remove {"principal","prefix"}` (admin): immediate; the
/// next checkout, request or collection the grant covered is refused (open
/// leases run to their end: revoke them with `POST
/// /v1/checkouts/{id}/revoke`).
pub async fn remove(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<RemoveRequest>,
) -> ApiResult<Json<Value>> {
    check(&req.principal, &req.prefix)?;
    let op = WriteOp::Ungrant {
        principal: req.principal.clone(),
        prefix: req.prefix.clone(),
    };
    let audit = auth
        .audit(&st, "grant.remove", &req.principal)
        .detail("prefix", req.prefix.clone());
    let s = st.clone();
    let r = blocking(move || s.store.write_audited(op, audit)).await?;
    auth.after_write(&r);
    match r? {
        WriteOutcome::Done => {}
        _ => return Err(ApiError::internal("unexpected store outcome")),
    }
    tracing::warn!(admin = %auth.principal.name, principal = %req.principal, prefix = %req.prefix, "access grant removed");
    Ok(Json(
        json!({"principal": req.principal, "prefix": req.prefix, "removed": true}),
    ))
}
