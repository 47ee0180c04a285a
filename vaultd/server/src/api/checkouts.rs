//! `/v1/checkouts`: the leases. The owner renews one (up to its secret's
//! maximum lease); an admin lists them and ends one early, with a reason;
//! an auditor lists them; a pam principal lists only its own. Check-in is
//! [`super::secrets::checkin`]; the reaper that ends leases at their TTL is
//! [`crate::leases`].

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::policy::Role;
use vault_store::{CheckoutFilter, CheckoutRow, WriteOp, WriteOutcome};

use super::blocking;
use super::error::{ApiError, ApiResult, Code};
use super::extract::{Auth, JsonBody};
use crate::state::AppState;
use crate::timefmt::{parse_rfc3339, rfc3339};

const MAX_LIST: usize = 1000;

fn check_id(id: &str) -> ApiResult<()> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::new(
            Code::InvalidCheckoutId,
            "checkout ids are UUIDs",
        ));
    }
    Ok(())
}

/// How a lease stands at `now`.
fn state_of(r: &CheckoutRow, now: i64) -> &'static str {
    match (&r.revoked, r.checked_in_at, r.expired_at) {
        (Some(_), _, _) => "revoked",
        (None, Some(_), _) => "checked_in",
        (None, None, Some(_)) => "expired",
        // Past its TTL; the reaper has not recorded it yet.
        (None, None, None) if r.expires_at <= now => "expired",
        (None, None, None) => "open",
    }
}

pub(crate) fn checkout_json(r: &CheckoutRow, now: i64) -> Value {
    json!({
        "checkout_id": r.id,
        "path": r.path,
        "version": r.version,
        "principal": r.principal,
        "fingerprint": (!r.fingerprint.is_empty()).then_some(&r.fingerprint),
        "reason": r.reason,
        "exclusive": r.exclusive,
        "state": state_of(r, now),
        "created_at": rfc3339(r.created_at),
        "expires_at": rfc3339(r.expires_at),
        "renewals": r.renewals,
        "checked_in_at": r.checked_in_at.map(rfc3339),
        "expired_at": r.expired_at.map(rfc3339),
        "revoked_by": r.revoked.as_ref().map(|(by, _)| by),
        "revoke_reason": r.revoked.as_ref().map(|(_, why)| why),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    principal: Option<String>,
    /// `open` (default) or `all`.
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    /// Paging: the `next_before` of the previous page (a checkout id).
    #[serde(default)]
    before: Option<String>,
}

impl ListQuery {
    fn filter(self, auth: &Auth) -> ApiResult<CheckoutFilter> {
        let bad = |m: &str| ApiError::new(Code::InvalidQuery, m);
        let open_only = match self.state.as_deref() {
            None | Some("open") => true,
            Some("all") => false,
            Some(_) => return Err(bad("state is open or all")),
        };
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_LIST {
            return Err(bad("limit must be 1..=1000"));
        }
        if let Some(p) = &self.principal {
            if !vault_core::policy::validate_name(p) {
                return Err(bad("principal is a principal name"));
            }
        }
        if self.path_prefix.as_ref().is_some_and(|p| p.len() > 256) {
            return Err(bad("path_prefix is at most 256 bytes"));
        }
        // A pam principal sees its own leases, and says so if it asks for
        // another's.
        let principal = if auth.principal.role == Role::Pam {
            match self.principal {
                Some(p) if p != auth.principal.name => {
                    return Err(ApiError::forbidden(
                        "a pam principal lists only its own checkouts",
                    ))
                }
                _ => Some(auth.principal.name.clone()),
            }
        } else {
            self.principal
        };
        if self
            .before
            .as_deref()
            .is_some_and(|b| uuid::Uuid::parse_str(b).is_err())
        {
            return Err(bad("before is a next_before value (a checkout id)"));
        }
        Ok(CheckoutFilter {
            path_prefix: self.path_prefix,
            principal,
            open_only,
            before: self.before,
            limit,
        })
    }
}

/// `GET /v1/checkouts?path_prefix=&principal=&state=open|all&limit=&before=`:
/// the most recently recorded first.
pub async fn list(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidQuery, e.body_text()))?;
    let filter = q.filter(&auth)?;
    let limit = filter.limit;
    let s = st.clone();
    let rows = blocking(move || s.store.checkouts(&filter)).await??;
    let now = st.now();
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(json!({
        "checkouts": rows.iter().map(|r| checkout_json(r, now)).collect::<Vec<_>>(),
        "next_before": next,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// `POST /v1/checkouts/{id}/renew {"ttl_seconds"}` (the owner; `{}` for the
/// default): the lease
/// then ends `ttl_seconds` from now (default `limits.default_ttl_seconds`),
/// at most the secret's maximum lease after the checkout.
pub async fn renew(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RenewRequest>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let limits = &st.config.limits;
    let ttl = super::secrets::check_ttl(limits, req.ttl_seconds)?;
    let now = st.now();
    let op = WriteOp::RenewCheckout {
        id: id.clone(),
        principal: auth.principal.name.clone(),
        fingerprint: auth.principal.fingerprint.clone(),
        now,
        expires_at: now.saturating_add(ttl as i64),
        max_lease: limits.max_lease_seconds as i64,
    };
    let audit = auth
        .audit(&st, "checkout.renew", &id)
        .detail("ttl_seconds", ttl.to_string());
    let row = write(&st, &auth, &id, op, audit).await?;
    tracing::info!(principal = %auth.principal.name, checkout_id = %id, renewals = row.renewals, "lease renewed");
    Ok(Json(checkout_json(&row, now)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    reason: String,
}

/// `POST /v1/checkouts/{id}/revoke {"reason"}` (admin): ends an open lease
/// now. The owner's check-in or renewal after it is refused
/// (`already_checked_in`); an exclusive secret is free again.
pub async fn revoke(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RevokeRequest>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let reason = super::secrets::check_reason(&req.reason)?;
    let now = st.now();
    let op = WriteOp::RevokeCheckout {
        id: id.clone(),
        by: auth.principal.name.clone(),
        reason: reason.clone(),
        now,
    };
    let audit = auth
        .audit(&st, "checkout.revoke", &id)
        .detail("reason", reason);
    let row = write(&st, &auth, &id, op, audit).await?;
    tracing::warn!(admin = %auth.principal.name, checkout_id = %id, owner = %row.principal, "lease revoked");
    Ok(Json(checkout_json(&row, now)))
}

/// An audited write of one checkout; its entry names the lease's path,
/// version and owner when it succeeds.
async fn write(
    st: &Arc<AppState>,
    auth: &Auth,
    id: &str,
    op: WriteOp,
    mut audit: vault_store::AuditDrafts,
) -> ApiResult<CheckoutRow> {
    let s = st.clone();
    let id = id.to_owned();
    let r = blocking(move || {
        // A checkout row's path, version and owner never change.
        if let Ok(Some(row)) = s.store.checkout(&id) {
            audit = audit
                .on_success("path", row.path)
                .on_success("version", row.version.to_string())
                .on_success("owner", row.principal);
        }
        s.store.write_audited(op, audit)
    })
    .await?;
    auth.after_write(&r);
    match r? {
        WriteOutcome::Checkout(row) => Ok(row),
        _ => Err(ApiError::internal("unexpected store outcome")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingRequest {
    sha256: String,
    size: u64,
    started_at: String,
    ended_at: String,
    #[serde(default)]
    label: Option<String>,
}

/// The largest recording size accepted: JSON numbers stay exact below 2^53.
const MAX_RECORDING_SIZE: u64 = (1 << 53) - 1;

fn check_label(l: &str) -> bool {
    (1..=128).contains(&l.len())
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@-".contains(&b))
}

/// `POST /v1/checkouts/{id}/recordings {"sha256","size","started_at",
/// "ended_at","label"?}` (the checkout's owner, its certificate or a renewal
/// of it; the checkout open or ended): registers a session recording made
/// with the checked-out credential. Nothing but the audit entry
/// `checkout.recording` is stored, so the recording stays where the PAM
/// server keeps it, and `vaultctl audit verify-recording` later proves it
/// unchanged against the signed log.
pub async fn record(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RecordingRequest>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let bad = |m: &str| ApiError::new(Code::InvalidRecording, m);
    let sha = req.sha256;
    if sha.len() != 64 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad(
            "sha256 is the recording's SHA-256: 64 lowercase hex digits",
        ));
    }
    if req.size > MAX_RECORDING_SIZE {
        return Err(bad("size is at most 2^53 - 1 bytes"));
    }
    let started = parse_rfc3339(&req.started_at)
        .ok_or_else(|| bad("started_at is an RFC 3339 time with an offset"))?;
    let ended = parse_rfc3339(&req.ended_at)
        .ok_or_else(|| bad("ended_at is an RFC 3339 time with an offset"))?;
    if ended < started {
        return Err(bad("ended_at is before started_at"));
    }
    let now = st.now();
    if ended > now.saturating_add(vault_store::RECORDING_SKEW) {
        return Err(bad("ended_at is in the future"));
    }
    if let Some(l) = &req.label {
        if !check_label(l) {
            return Err(bad(
                "label is 1 to 128 characters: letters, digits and . _ : / @ -",
            ));
        }
    }
    let mut audit = auth
        .audit(&st, "checkout.recording", &id)
        .detail("sha256", sha.clone())
        .detail("size", req.size.to_string())
        .detail("started_at", rfc3339(started))
        .detail("ended_at", rfc3339(ended));
    if let Some(l) = &req.label {
        audit = audit.detail("label", l.clone());
    }
    let op = WriteOp::RecordSession {
        id: id.clone(),
        principal: auth.principal.name.clone(),
        fingerprint: auth.principal.fingerprint.clone(),
        started_at: started,
    };
    let row = write(&st, &auth, &id, op, audit).await?;
    tracing::info!(principal = %auth.principal.name, checkout_id = %id, size = req.size, "session recording registered");
    Ok(Json(json!({
        "checkout_id": id,
        "path": row.path,
        "version": row.version,
        "sha256": sha,
        "size": req.size,
        "started_at": rfc3339(started),
        "ended_at": rfc3339(ended),
        "label": req.label,
    })))
}
