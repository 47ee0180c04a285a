//! The REST API under `/v1`.
//!
//! # Layout
//!
//! * [`error`]: `ApiError`, the single error → HTTP mapping.
//! * [`extract`]: the principal (from the verified client certificate) and
//!   JSON bodies whose errors are JSON.
//! * [`sys`]: health, seal status, unseal, certificates, keyring, principals.
//! * [`secrets`]: secrets and checkouts.
//! * [`audit`]: the auditor's API (checkpoints, entries, proofs, value hashes).
//! * `openapi.json`: the OpenAPI 3 document served at `/v1/openapi.json`.

pub mod audit;
pub mod custodians;
pub mod error;
pub mod extract;
pub mod secrets;
pub mod sys;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use self::error::{ApiError, ErrorCode};
use self::extract::Peer;
use crate::audit::Who;
use crate::state::AppState;
use vault_core::audit::entry::Outcome;

pub const OPENAPI: &str = include_str!("openapi.json");

/// RFC 3339 UTC time for a unix timestamp.
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// How often a write computed from a read (a value encrypted for the next
/// version, a vote decided on the votes so far) is retried when another
/// write got there first ([`vault_store::StoreError::Stale`]).
pub(crate) const WRITE_TRIES: usize = 5;

/// Runs blocking work (storage, crypto) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::internal("worker task failed"))
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/v1/sys/health", get(sys::health))
        .route("/v1/sys/seal-status", get(sys::seal_status))
        .route("/v1/sys/unseal", post(sys::unseal))
        .route("/v1/sys/certs", post(sys::issue_cert))
        .route("/v1/sys/principals", get(sys::list_principals))
        .route(
            "/v1/sys/principals/{fingerprint}/revoke",
            post(sys::revoke_principal),
        )
        .route(
            "/v1/sys/update",
            post(crate::update::stage).get(crate::update::status),
        )
        .route("/v1/sys/keyring", get(sys::keyring_status))
        .route("/v1/sys/keyring/rotate", post(sys::keyring_rotate))
        .route("/v1/secrets", get(secrets::list))
        .route(
            "/v1/secrets/{*path}",
            get(secrets::get).put(secrets::put).post(secrets::post),
        )
        .route("/v1/checkouts/{id}/checkin", post(secrets::checkin))
        .route(
            "/v1/custodians",
            get(custodians::list).post(custodians::enroll),
        )
        .route("/v1/policies/{*path}", put(custodians::set_policy))
        .route("/v1/requests", get(custodians::list_requests))
        .route("/v1/requests/{id}", get(custodians::get_request))
        .route("/v1/requests/{id}/vote", post(custodians::vote))
        .route("/v1/requests/{id}/collect", post(custodians::collect))
        .route(
            "/v1/sys/recovery",
            get(custodians::get_recovery).post(custodians::configure_recovery),
        )
        .route(
            "/v1/audit/checkpoint",
            get(audit::checkpoint).post(audit::new_checkpoint),
        )
        .route("/v1/audit/public-key", get(audit::public_key))
        .route("/v1/audit/entries", get(audit::entries))
        .route("/v1/audit/proof/inclusion", get(audit::inclusion))
        .route("/v1/audit/proof/consistency", get(audit::consistency))
        .route("/v1/audit/hash", post(audit::hash))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(sys::metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), access))
        .with_state(state)
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// Request id, deadline, access log and metrics for every request.
async fn access(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let audited = Arc::new(std::sync::atomic::AtomicBool::new(false));
    req.extensions_mut().insert(extract::RequestCtx {
        request_id: request_id.clone(),
        audited: audited.clone(),
    });
    let target = req.uri().path().to_owned();
    let peer = req.extensions().get::<Peer>().cloned();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let cn = req
        .extensions()
        .get::<Peer>()
        .map(|p| p.0.common_name.clone())
        .unwrap_or_default();
    // An update bundle is hundreds of megabytes: its upload gets longer.
    let deadline = if route == "/v1/sys/update" {
        Duration::from_secs(st.config.limits.request_timeout_secs.max(900))
    } else {
        Duration::from_secs(st.config.limits.request_timeout_secs)
    };
    let mut resp = match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long",
        )
        .into_response(),
    };
    // Every refusal that no handler recorded is recorded here, before the
    // response leaves; if that fails, the answer becomes audit_unavailable.
    // Only real refusals carry an ErrorCode: a sealed health probe's 503 is a
    // status report, not a refused request.
    let refused = resp.extensions().get::<ErrorCode>().map(|c| c.0);
    if let (Some(code), false) = (refused, audited.load(std::sync::atomic::Ordering::SeqCst)) {
        if code != "audit_unavailable" {
            let who = peer_who(&st, peer.as_ref(), &request_id);
            let outcome = if resp.status().is_server_error()
                && resp.status() != StatusCode::SERVICE_UNAVAILABLE
            {
                Outcome::Error
            } else {
                Outcome::Denied
            };
            let mut d = who.draft(&st, action_for(&method, &route), &target, outcome, code);
            d.details
                .insert("status".into(), resp.status().as_u16().to_string());
            let s = st.clone();
            let ok = tokio::task::spawn_blocking(move || s.store.audit(d)).await;
            if !matches!(ok, Ok(Ok(()))) {
                tracing::error!(request_id, "refusal could not be audited");
                resp = ApiError::audit_unavailable().into_response();
            }
        }
    }
    let status = resp.status().as_u16();
    let code = resp.extensions().get::<ErrorCode>().map(|c| c.0);
    if let Some(c) = code {
        st.metrics.error(c);
    }
    st.metrics.request(&route, status);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(
        target: "vaultd::access",
        request_id,
        %method,
        route,
        status,
        error = code.unwrap_or(""),
        client = %cn,
        elapsed_us = start.elapsed().as_micros() as u64,
    );
    resp
}

/// The audit identity of a request's peer, registered or not.
fn peer_who(st: &AppState, peer: Option<&Peer>, request_id: &str) -> Who {
    let mut who = Who {
        request_id: request_id.to_owned(),
        ..Who::default()
    };
    if let Some(p) = peer {
        who.fingerprint = p.0.fingerprint.clone();
        match st.principal(&p.0.fingerprint) {
            Some(Ok(pr)) => {
                who.principal = pr.name;
                who.role = pr.role.as_str().into();
            }
            _ => {
                // Not a registered principal: record what the certificate claims.
                who.principal = format!("unregistered:{}", p.0.common_name);
                who.role = String::new();
            }
        }
    }
    who
}

/// The audit action name of a route.
fn action_for(method: &axum::http::Method, route: &str) -> &'static str {
    use axum::http::Method as M;
    match (method, route) {
        (&M::PUT, "/v1/secrets/{*path}") => "secret.write",
        (&M::POST, "/v1/secrets/{*path}") => "secret.checkout",
        (&M::POST, "/v1/custodians") => "custodian.enroll",
        (&M::GET, "/v1/custodians") => "custodian.list",
        (&M::PUT, "/v1/policies/{*path}") => "policy.set",
        (&M::GET, "/v1/requests") => "request.list",
        (&M::GET, "/v1/requests/{id}") => "request.read",
        (&M::POST, "/v1/requests/{id}/vote") => "approval.vote",
        (&M::POST, "/v1/requests/{id}/collect") => "request.collect",
        (&M::POST, "/v1/sys/recovery") => "recovery.configure",
        (&M::GET, "/v1/secrets/{*path}") => "secret.metadata",
        (&M::GET, "/v1/secrets") => "secret.list",
        (&M::POST, "/v1/checkouts/{id}/checkin") => "checkout.checkin",
        (&M::POST, "/v1/sys/unseal") => "sys.unseal",
        (&M::POST, "/v1/sys/certs") => "cert.issue",
        (&M::GET, "/v1/sys/principals") => "principal.list",
        (&M::POST, "/v1/sys/principals/{fingerprint}/revoke") => "principal.revoke",
        (&M::GET, "/v1/sys/keyring") => "keyring.status",
        (&M::POST, "/v1/sys/keyring/rotate") => "keyring.rotate",
        (&M::POST, "/v1/audit/hash") => "audit.hash",
        (&M::POST, "/v1/audit/checkpoint") => "audit.checkpoint",
        (_, r) if r.starts_with("/v1/audit/") => "audit.read",
        (_, "/metrics") => "metrics.read",
        (_, r) if r.starts_with("/v1/sys/") => "sys.read",
        _ => "request",
    }
}
