//! `DELETE /v1/secrets/{path}`: destroying a secret's old versions
//! (`?versions=1,2`) or deleting the secret (no `versions`). Both erase
//! values for good, so one admin cannot do either alone once governance is
//! established: it is then a governance change (202 with the request) that
//! the custodian quorum approves; before that (a fresh appliance) it is
//! immediate. A destroyed version's row stays (its number is never reused,
//! the audit log's version numbers keep their meaning) and is never
//! decrypted or checked out again; a deleted secret stays a tombstone with
//! its approvals and tier, and a later write continues its versions.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use vault_core::custodian::governance::Change;
use vault_store::{Conflict, StoreError, WriteOp, WriteOutcome};

use super::blocking;
use super::error::{ApiError, ApiResult, Code};
use super::extract::Auth;
use super::secrets::{check_path, reason_or};
use crate::state::AppState;

/// The most versions one call destroys.
const MAX_VERSIONS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Comma-separated version numbers to destroy (absent: delete the
    /// secret).
    #[serde(default)]
    versions: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// `1,2,5`: distinct positive numbers, in the order given.
fn parse_versions(s: &str) -> ApiResult<Vec<u64>> {
    let bad = || {
        ApiError::new(
            Code::InvalidVersions,
            format!("versions is a comma-separated list of 1 to {MAX_VERSIONS} distinct version numbers (1, 2, ...)"),
        )
    };
    let mut out: Vec<u64> = Vec::new();
    for part in s.split(',') {
        let v: u64 = part.trim().parse().map_err(|_| bad())?;
        if v == 0 || out.contains(&v) || out.len() == MAX_VERSIONS {
            return Err(bad());
        }
        out.push(v);
    }
    Ok(out)
}

/// The store operation and audit action of a destroy or delete change.
pub(crate) fn write_of(change: &Change, by: &str, now: i64) -> Option<(WriteOp, &'static str)> {
    match change {
        Change::DestroyVersions { path, versions } => Some((
            WriteOp::DestroyVersions {
                path: path.clone(),
                versions: versions.clone(),
                by: by.to_owned(),
                now,
            },
            "secret.destroy",
        )),
        Change::DeleteSecret { path } => Some((
            WriteOp::DeleteSecret {
                path: path.clone(),
                by: by.to_owned(),
                now,
            },
            "secret.delete",
        )),
        _ => None,
    }
}

/// `DELETE /v1/secrets/{path}[?versions=1,2][&reason=…]` (admin). Checked
/// before it is proposed: the secret exists and is not deleted, each named
/// version exists and is not the current one (409 `version_current`:
/// delete the secret instead). Open leases run to their end (the value is
/// out already): the answer lists them, for `POST /v1/checkouts/{id}/revoke`.
pub async fn delete(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(path): Path<String>,
    q: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    check_path(&path)?;
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidQuery, e.body_text()))?;
    let versions = q.versions.as_deref().map(parse_versions).transpose()?;
    let reason = reason_or(q.reason.as_deref(), || match &versions {
        Some(_) => format!("destroy old versions of {path}"),
        None => format!("delete {path}"),
    })?;
    let s = st.clone();
    blocking(move || {
        let info = s
            .store
            .secret(&path)?
            .filter(|i| i.deleted.is_none())
            .ok_or_else(|| ApiError::not_found(format!("no secret at {path}")))?;
        if let Some(vs) = &versions {
            for v in vs {
                if *v == info.current_version {
                    return Err(StoreError::Conflict(Conflict::VersionCurrent).into());
                }
                if !info.versions.iter().any(|i| i.version == *v) {
                    return Err(ApiError::not_found(format!("{path} has no version {v}")));
                }
            }
        }
        let change = match &versions {
            Some(vs) => Change::DestroyVersions {
                path: path.clone(),
                versions: vs.clone(),
            },
            None => Change::DeleteSecret { path: path.clone() },
        };
        if let Some(rule) = super::governance::current_rule(&s)? {
            return super::governance::propose(&s, &auth, &change, rule, &reason);
        }
        let (op, action) =
            write_of(&change, &auth.principal.name, s.now()).ok_or_else(ApiError::integrity)?;
        let mut audit = auth.audit(&s, action, &path).detail("reason", reason);
        if let Some(vs) = &versions {
            audit = audit.detail("versions", join(vs));
        }
        let r = s.store.write_audited(op, audit);
        auth.after_write(&r);
        let WriteOutcome::Destroyed(done) = r? else {
            return Err(ApiError::internal("unexpected store outcome"));
        };
        tracing::warn!(admin = %auth.principal.name, %path, versions = %join(&done), deleted = versions.is_none(), "secret values destroyed");
        Ok(Json(answer(&path, &done, versions.is_none(), &info.open_checkouts)).into_response())
    })
    .await?
}

/// What a destroy or delete answers (also a governance apply's `applied`).
pub(crate) fn answer(
    path: &str,
    destroyed: &[u64],
    deleted: bool,
    open: &[vault_store::types::OpenCheckout],
) -> serde_json::Value {
    json!({
        "path": path,
        "destroyed_versions": destroyed,
        "deleted": deleted,
        "open_checkouts": open.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
    })
}

fn join(vs: &[u64]) -> String {
    vs.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::parse_versions;

    #[test]
    fn versions_parse_strictly() {
        assert_eq!(parse_versions("1,3, 2").unwrap(), [1, 3, 2]);
        for bad in [
            "",
            "0",
            "1,1",
            "x",
            "1,,2",
            "-1",
            "1.5",
            "18446744073709551616",
        ] {
            assert!(parse_versions(bad).is_err(), "{bad:?} accepted");
        }
        let many: Vec<String> = (1..=1001).map(|v| v.to_string()).collect();
        assert!(parse_versions(&many.join(",")).is_err());
    }
}
