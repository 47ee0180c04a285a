//! `/v1/sys/*`: health, seal status, unseal, certificates, keyring, principals.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};
use vault_core::policy::{validate_name, Role};
use vault_store::{PrincipalRow, WriteOp, WriteOutcome};

use super::blocking;
use super::error::{ApiError, ApiResult, Code};
use super::extract::{Auth, JsonBody};
use crate::state::{AppState, Vault};
use crate::timefmt::rfc3339;
use crate::{ca, rotation, unseal};

pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    let sealed = st.is_sealed();
    let body = json!({
        "status": if sealed { "sealed" } else { "ok" },
        "sealed": sealed,
        "initialized": true,
        "version": env!("CARGO_PKG_VERSION"),
        "appliance_id": st.appliance_id,
        // Unix seconds: clients check their clock against it (`vaultctl doctor`).
        "time": st.now(),
    });
    let code = if sealed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

fn seal_status_body(st: &AppState) -> Value {
    let mut v = seal_state(st);
    // What every client sees of the server certificate at the handshake
    // anyway; `reissue_due` means the automatic reissue has not happened
    // yet (sealed, or the CA key unreachable).
    if let Some(i) = st.server_cert.info() {
        v["server_certificate"] = json!({
            "not_after": rfc3339(i.not_after),
            "reissue_due": crate::servercert::due(st),
        });
    }
    v
}

fn seal_state(st: &AppState) -> Value {
    match &*st.vault.read().unwrap_or_else(|e| e.into_inner()) {
        Vault::Sealed(r) => json!({
            "sealed": true,
            "mode": st.config.seal.mode,
            "reason": {"code": r.code, "message": r.message},
            "since": rfc3339(r.since),
        }),
        Vault::Unsealed(u) => json!({
            "sealed": false,
            "mode": st.config.seal.mode,
            "reason": null,
            "since": rfc3339(u.since),
            "keyring_version": u.keyring.active_version(),
            "ca_available": u.ca.is_some(),
        }),
    }
}

pub async fn seal_status(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(seal_status_body(&st))
}

pub async fn unseal(State(st): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<Value>> {
    let _guard = st.unseal_lock.lock().await;
    if !st.is_sealed() && st.ca().is_none() {
        let s = st.clone();
        let who = auth.who.clone();
        let _ = tokio::task::spawn_blocking(move || unseal::try_unseal(&s, &who)).await;
    }
    if st.is_sealed() {
        tracing::info!(principal = %auth.principal.name, "unseal requested");
        let s = st.clone();
        let who = auth.who.clone();
        let r = tokio::task::spawn_blocking(move || unseal::try_unseal(&s, &who))
            .await
            .map_err(|_| ApiError::internal("unseal task failed"))?;
        // try_unseal wrote the entry, success or not.
        auth.audited();
        if let Err(f) = r {
            if st.sealed_reason_code().as_deref() == Some("audit_unavailable") {
                return Err(ApiError::audit_unavailable());
            }
            return Err(ApiError::lower(
                f.code(),
                StatusCode::SERVICE_UNAVAILABLE,
                f.message(),
            ));
        }
        rotation::spawn_rewrap(st.clone());
    }
    Ok(Json(seal_status_body(&st)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    name: String,
    role: String,
    csr_pem: String,
    #[serde(default)]
    validity_days: Option<u32>,
    /// Why (recorded with the governance request of a pam or admin
    /// certificate once the governance is established).
    #[serde(default)]
    reason: Option<String>,
    /// A pam certificate's first access grants for its name (`*`, a path,
    /// or a prefix ending with `/`). Without any, a new pam name reaches
    /// no secret until granted (`POST /v1/grants`).
    #[serde(default)]
    grants: Vec<String>,
}

/// The most grants one request may set.
pub(crate) const MAX_GRANTS: usize = 32;

/// Checks a list of grant prefixes for a principal of `role`: sorted and
/// without duplicates on return.
pub(crate) fn check_grants(role: Role, grants: &[String]) -> ApiResult<Vec<String>> {
    if grants.is_empty() {
        return Ok(Vec::new());
    }
    if role != Role::Pam {
        return Err(ApiError::new(
            Code::InvalidGrant,
            "only a pam principal has access grants",
        ));
    }
    if grants.len() > MAX_GRANTS {
        return Err(ApiError::new(
            Code::InvalidGrant,
            format!("at most {MAX_GRANTS} grants at once"),
        ));
    }
    for g in grants {
        check_grant(g)?;
    }
    let mut v = grants.to_vec();
    v.sort();
    v.dedup();
    Ok(v)
}

/// One grant prefix: `*`, a secret path, or a path prefix ending with `/`.
pub(crate) fn check_grant(prefix: &str) -> ApiResult<()> {
    if vault_core::custodian::governance::valid_grant(prefix) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::InvalidGrant,
            "a grant is *, a secret path, or a path prefix ending with /",
        ))
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    if validate_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::InvalidName,
            "name must be 1-64 characters of A-Z a-z 0-9 . _ -",
        ))
    }
}

/// `POST /v1/sys/certs` (admin). A `pam` or `admin` certificate is a
/// governance change once the custodians' governance is established (202);
/// the others, and every role before genesis, are issued at once.
pub async fn issue_cert(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<IssueRequest>,
) -> ApiResult<Response> {
    check_name(&req.name)?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::new(
            Code::InvalidRole,
            "role must be admin, writer, pam, auditor, custodian or metrics",
        )
    })?;
    let max = st.config.limits.client_cert_days;
    let days = req.validity_days.unwrap_or(max);
    if days == 0 || days > max {
        return Err(ApiError::new(
            Code::InvalidValidity,
            format!("validity_days must be 1..={max}"),
        ));
    }
    let grants = check_grants(role, &req.grants)?;
    if vault_core::custodian::governance::role_needs_quorum(role) {
        let s = st.clone();
        if let Some(rule) = blocking(move || super::governance::current_rule(&s)).await?? {
            ca::check_csr(&req.csr_pem).map_err(|e| match e {
                ca::CaError::BadCsr(m) => ApiError::new(Code::InvalidCsr, m),
                _ => ApiError::new(Code::InvalidCsr, "the CSR does not parse"),
            })?;
            let reason = super::secrets::reason_or(req.reason.as_deref(), || {
                format!("{} certificate for {}", role.as_str(), req.name)
            })?;
            let change = vault_core::custodian::governance::Change::IssueCertificate {
                name: req.name.clone(),
                role: role.as_str().into(),
                validity_days: days,
                csr_pem: req.csr_pem.clone(),
                grants,
            };
            let s = st.clone();
            return blocking(move || super::governance::propose(&s, &auth, &change, rule, &reason))
                .await?;
        }
    }
    let issued = sign_client_cert(&st, req.csr_pem, &req.name, role, days).await?;
    let row = principal_row(&st, &issued, &req.name, role);
    let s = st.clone();
    let (fp, serial) = (issued.fingerprint.clone(), issued.serial.clone());
    let mut audit = auth
        .audit(&st, "cert.issue", &req.name)
        .on_success("role", role.as_str())
        .on_success("fingerprint", fp)
        .on_success("serial", serial);
    let op = if grants.is_empty() {
        WriteOp::AddPrincipal(row)
    } else {
        audit = audit.detail("grants", grants.join(","));
        WriteOp::AddPrincipalGranted {
            row,
            grants: grants.clone(),
            by: auth.principal.name.clone(),
            now: st.now(),
        }
    };
    let r = tokio::task::spawn_blocking(move || s.store.write_audited(op, audit))
        .await
        .map_err(|_| ApiError::internal("store task failed"))?;
    auth.after_write(&r);
    r?;
    st.reload_principals()?;
    tracing::info!(issuer = %auth.principal.name, name = %req.name, %role, fingerprint = %issued.fingerprint, "client certificate issued");
    let mut out = issued_json(&st, &issued, &req.name, role);
    if role == Role::Pam {
        out["grants"] = json!(grants);
    }
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    csr_pem: String,
}

/// `POST /v1/sys/certs/renew` (every role, for its own certificate): a
/// new certificate for the CSR's key with the caller's name and role, as
/// long as the old one lasted (at most `limits.client_cert_days`). Open
/// from `renew_opens` until the certificate expires. The old certificate
/// keeps working until the new one is first used, then it is revoked; a
/// second renewal before that replaces the first (its answer was lost).
/// Not a governance change: it adds no principal and changes no role, and
/// a thief who renews a stolen certificate locks its owner out at first
/// use, which the owner notices (and revoking either revokes the chain).
pub async fn renew_cert(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<RenewRequest>,
) -> ApiResult<Json<Value>> {
    let p = auth.principal.clone();
    let now = st.now();
    let opens = crate::state::renew_opens(&st.config, p.issued_at, p.not_after);
    if now < opens {
        return Err(ApiError::new(
            Code::RenewalTooEarly,
            format!(
                "this certificate can be renewed from {} (it expires {})",
                rfc3339(opens),
                rfc3339(p.not_after)
            ),
        ));
    }
    let lifetime_days = ((p.not_after - p.issued_at).max(86_400) / 86_400) as u32;
    let days = lifetime_days.min(st.config.limits.client_cert_days).max(1);
    let issued = sign_client_cert(&st, req.csr_pem, &p.name, p.role, days).await?;
    if issued.fingerprint == p.fingerprint {
        return Err(ApiError::new(
            Code::InvalidCsr,
            "the CSR repeats the certificate",
        ));
    }
    let mut row = principal_row(&st, &issued, &p.name, p.role);
    row.renewed_from = Some(p.fingerprint.clone());
    let audit = auth
        .audit(&st, "cert.renew", &p.name)
        .detail("step", "issue")
        .detail("renewed", p.fingerprint.clone())
        .on_success("role", p.role.as_str())
        .on_success("fingerprint", issued.fingerprint.clone())
        .on_success("serial", issued.serial.clone())
        .on_success("not_after", rfc3339(issued.not_after));
    let s = st.clone();
    let old = p.fingerprint.clone();
    let r = blocking(move || {
        s.store
            .write_audited(WriteOp::RenewPrincipal { old, new: row, now }, audit)
    })
    .await?;
    auth.after_write(&r);
    let WriteOutcome::Revoked(replaced) = r? else {
        return Err(ApiError::internal("unexpected store outcome"));
    };
    for fp in &replaced {
        st.mark_revoked(fp);
    }
    st.reload_principals()?;
    tracing::info!(name = %p.name, role = %p.role, renewed = %p.fingerprint, fingerprint = %issued.fingerprint, "client certificate renewed");
    let mut body = issued_json(&st, &issued, &p.name, p.role);
    body["renewed"] = json!(p.fingerprint);
    body["replaced"] = json!(replaced);
    Ok(Json(body))
}

fn server_cert_json(st: &AppState, i: &crate::servedcert::ServerCertInfo) -> Value {
    let window = i64::from(st.config.tls.server_cert_renew_days) * 86_400;
    json!({
        "fingerprint": i.fingerprint,
        "not_after": rfc3339(i.not_after),
        "expires_in_seconds": i.not_after - st.now(),
        "reissue_from": rfc3339(i.not_after - window),
        "names": i.names,
    })
}

/// `GET /v1/sys/server-cert` (admin): the served server certificate.
pub async fn server_cert(State(st): State<Arc<AppState>>, _auth: Auth) -> ApiResult<Json<Value>> {
    let i = st
        .server_cert
        .info()
        .ok_or_else(|| ApiError::internal("no server certificate is loaded"))?;
    Ok(Json(server_cert_json(&st, &i)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReissueRequest {
    /// The DNS names and IP addresses the certificate is for (loopback is
    /// always added); none: the names it has.
    #[serde(default)]
    names: Option<Vec<String>>,
}

/// `POST /v1/sys/server-cert` (admin): reissues the server certificate now,
/// with a new key, for its names or new ones; every later handshake gets
/// it. Audited as `cert.server_reissue`.
pub async fn reissue_server_cert(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<ReissueRequest>,
) -> ApiResult<Json<Value>> {
    use crate::servercert::ReissueError;
    let names = match &req.names {
        Some(n) => Some(
            crate::servercert::check_names(n).map_err(|m| ApiError::new(Code::InvalidNames, m))?,
        ),
        None => None,
    };
    let s = st.clone();
    let who = auth.who.clone();
    let i = blocking(move || crate::servercert::reissue(&s, &who, names, "admin"))
        .await?
        .map_err(|e| match e {
            ReissueError::Store(s) => ApiError::from(s),
            e @ (ReissueError::CaUnavailable | ReissueError::Sign) => {
                ApiError::new(Code::CaUnavailable, e.to_string())
            }
            e => ApiError::internal(e.to_string()),
        })?;
    // Its entry is written (a refusal is recorded by the access layer).
    auth.audited();
    tracing::warn!(by = %auth.principal.name, fingerprint = %i.fingerprint, "server certificate reissued");
    Ok(Json(server_cert_json(&st, &i)))
}

/// The principal row of a certificate just signed.
pub(crate) fn principal_row(
    st: &AppState,
    issued: &ca::Issued,
    name: &str,
    role: Role,
) -> PrincipalRow {
    PrincipalRow {
        fingerprint: issued.fingerprint.clone(),
        name: name.to_owned(),
        role,
        serial: issued.serial.clone(),
        not_after: issued.not_after,
        issued_at: st.now(),
        revoked: false,
        renewed_from: None,
    }
}

/// What the issuer is given: the certificate and the CA.
pub(crate) fn issued_json(st: &AppState, issued: &ca::Issued, name: &str, role: Role) -> Value {
    json!({
        "name": name,
        "role": role,
        "certificate_pem": issued.cert_pem,
        "ca_pem": st.ca_pem,
        "fingerprint": issued.fingerprint,
        "serial": issued.serial,
        "not_after": rfc3339(issued.not_after),
    })
}

/// Signs a client certificate for `name` and `role` from a CSR with the CA
/// key in the token, valid from five minutes ago for `days`.
async fn sign_client_cert(
    st: &Arc<AppState>,
    csr_pem: String,
    name: &str,
    role: Role,
    days: u32,
) -> ApiResult<ca::Issued> {
    let s = st.clone();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || sign_client_cert_now(&s, &csr_pem, &name, role, days))
        .await
        .map_err(|_| ApiError::internal("issuance task failed"))?
}

/// [`sign_client_cert`] on the calling (blocking) thread.
pub(crate) fn sign_client_cert_now(
    st: &AppState,
    csr_pem: &str,
    name: &str,
    role: Role,
    days: u32,
) -> ApiResult<ca::Issued> {
    let key = st.ca().ok_or_else(|| {
        ApiError::new(
            Code::CaUnavailable,
            "the CA key in the token is not available",
        )
    })?;
    let now =
        OffsetDateTime::from_unix_timestamp(st.now()).unwrap_or_else(|_| OffsetDateTime::now_utc());
    ca::issuer(&st.ca_pem, &key)
        .and_then(|issuer| {
            ca::issue_client_csr(
                &issuer,
                csr_pem,
                name,
                role,
                now - Duration::minutes(5),
                now + Duration::days(i64::from(days)),
            )
        })
        .map_err(|e| match e {
            ca::CaError::BadCsr(m) => ApiError::new(Code::InvalidCsr, m),
            other => {
                tracing::error!(error = %other, "certificate issuance failed");
                ApiError::new(Code::CaUnavailable, "certificate issuance failed")
            }
        })
}

pub async fn list_principals(
    State(st): State<Arc<AppState>>,
    _auth: Auth,
) -> ApiResult<Json<Value>> {
    let rows = st.store.principals()?;
    let list: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "name": r.name, "role": r.role.as_str(), "fingerprint": r.fingerprint, "serial": r.serial,
                "not_after": rfc3339(r.not_after), "issued_at": rfc3339(r.issued_at), "revoked": r.revoked,
            })
        })
        .collect();
    Ok(Json(json!({ "principals": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeNameRequest {
    name: String,
}

/// `POST /v1/sys/principals/revoke` (admin): revokes every certificate of a
/// principal name, in force at once (also on open connections).
pub async fn revoke_name(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<RevokeNameRequest>,
) -> ApiResult<Json<Value>> {
    check_name(&req.name)?;
    let s = st.clone();
    let name = req.name.clone();
    let audit = auth.audit(&st, "principal.revoke", &req.name);
    let now = st.now();
    let r = blocking(move || {
        s.store
            .write_audited(WriteOp::RevokeName { name, now }, audit)
    })
    .await?;
    auth.after_write(&r);
    let WriteOutcome::Revoked(fps) = r? else {
        return Err(ApiError::internal("unexpected store outcome"));
    };
    for fp in &fps {
        st.mark_revoked(fp);
    }
    tracing::warn!(by = %auth.principal.name, name = %req.name, certificates = fps.len(), "principal name revoked");
    st.reload_principals()?;
    Ok(Json(json!({"name": req.name, "revoked": fps})))
}

pub async fn revoke_principal(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    Path(fingerprint): Path<String>,
) -> ApiResult<Json<Value>> {
    if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            Code::InvalidFingerprint,
            "fingerprint must be 64 hex digits (SHA-256)",
        ));
    }
    let fp = fingerprint.to_ascii_lowercase();
    let s = st.clone();
    let f2 = fp.clone();
    let audit = auth.audit(&st, "principal.revoke", &fp);
    let now = st.now();
    let r = tokio::task::spawn_blocking(move || {
        s.store.write_audited(
            WriteOp::RevokePrincipal {
                fingerprint: f2,
                now,
            },
            audit,
        )
    })
    .await
    .map_err(|_| ApiError::internal("store task failed"))?;
    auth.after_write(&r);
    r?;
    st.mark_revoked(&fp);
    tracing::warn!(by = %auth.principal.name, fingerprint = %fp, "principal revoked");
    st.reload_principals()?;
    Ok(Json(json!({"fingerprint": fp, "revoked": true})))
}

pub async fn keyring_status(
    State(st): State<Arc<AppState>>,
    _auth: Auth,
) -> ApiResult<Json<Value>> {
    let kr = st.keyring().ok_or_else(ApiError::sealed)?;
    let counts = st.store.key_version_counts()?;
    let versions: Vec<Value> = kr
        .versions()
        .into_iter()
        .map(|v| {
            let n = counts
                .iter()
                .find(|(k, _)| *k == v)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            json!({"version": v, "secret_versions": n})
        })
        .collect();
    let stale: u64 = counts
        .iter()
        .filter(|(k, _)| *k != kr.active_version())
        .map(|(_, n)| n)
        .sum();
    Ok(Json(json!({
        "active_version": kr.active_version(),
        "versions": versions,
        "pending_rewrap": stale,
        "rewrap_running": st.rewrap_running.load(std::sync::atomic::Ordering::SeqCst),
    })))
}

pub async fn keyring_rotate(State(st): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<Value>> {
    let s = st.clone();
    let who = auth.who.clone();
    let audited = auth.audit_done.clone();
    let v = tokio::task::spawn_blocking(move || rotation::rotate(&s, &who, &audited))
        .await
        .map_err(|_| ApiError::internal("rotation task failed"))?
        .map_err(|e| match e {
            rotation::RotateError::Sealed => ApiError::sealed(),
            rotation::RotateError::Store(s) => ApiError::from(s),
        })?;
    tracing::info!(by = %auth.principal.name, version = v, "keyring rotated");
    Ok(Json(json!({"active_version": v, "rewrap": "started"})))
}

pub async fn metrics(State(st): State<Arc<AppState>>, _auth: Auth) -> Response {
    let s = st.clone();
    let now = st.now();
    let g = blocking(move || (s.store.gauges(now), s.store.audit_log().size())).await;
    let scraped = match g {
        Ok((Ok(g), entries)) => crate::metrics::Scraped {
            open_checkouts: g.open_checkouts,
            pending_requests: g.pending_requests,
            rotations_failed: g.rotations_failed,
            drifted: g.drifted,
            audit_entries: entries,
            checkpoint_age_secs: g.checkpoint_at.map(|t| now.saturating_sub(t).max(0) as u64),
            server_cert_expiry: st.server_cert.info().map(|i| i.not_after),
            certs: st.certificate_summary(),
        },
        Ok((Err(e), _)) => return ApiError::from(e).into_response(),
        Err(e) => return e.into_response(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        st.metrics.render(&scraped),
    )
        .into_response()
}
