//! The REST API under `/v1`.
//!
//! # Layout
//!
//! * [`error`]: `ApiError`, the single error → HTTP mapping, and
//!   [`error::Code`], every error code with its HTTP status.
//! * [`extract`]: the principal (from the verified client certificate) and
//!   JSON bodies whose errors are JSON.
//! * [`sys`]: health, seal status, unseal, certificates, keyring, principals.
//! * [`update`]: `/v1/sys/update` (stage a bundle, update state); the
//!   staging and verification are [`crate::update`]'s.
//! * [`secrets`]: secrets, checkout and check-in.
//! * [`checkouts`]: the leases: list, renew, revoke.
//! * [`governance`]: the custodian quorum over the control plane (genesis,
//!   rule, applying approved changes).
//! * [`custodians`]: custodians, approval policies, requests and votes,
//!   recovery.
//! * [`audit`]: the auditor's API (checkpoints, entries, proofs, value hashes).
//! * [`bootstrap`]: the routes of the bootstrap servers (first-boot
//!   `POST /v1/sys/init`, status of a locked data volume), served by
//!   [`crate::bootstrap`].
//! * `openapi.json`: the OpenAPI 3 document served at `/v1/openapi.json`.
//!
//! The verified client certificate ([`crate::tls::Peer`]) is put on every
//! request by the TLS layer. Nothing outside this module depends on it.

pub mod audit;
pub mod bootstrap;
pub mod checkouts;
pub mod custodians;
mod disclose;
pub mod error;
pub mod extract;
pub mod governance;
pub mod grants;
pub mod lifecycle;
pub mod rotations;
pub mod routes;
pub mod secrets;
pub mod sys;
pub mod update;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

use self::error::{ApiError, Code, ErrorCode};
use crate::audit::Who;
use crate::state::AppState;
use crate::tls::Peer;
use vault_core::audit::entry::Outcome;

pub const OPENAPI: &str = include_str!("openapi.json");

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
    let mut router = Router::new();
    for (path, mr) in routes::method_routers(&routes::TABLE) {
        router = router.route(path, mr);
    }
    router
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            routes::authorize,
        ))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
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
        OPENAPI_DOC.as_str(),
    )
        .into_response()
}

/// The served OpenAPI document: [`OPENAPI`] with what the code knows
/// written into it, so that part cannot drift: every operation's
/// `x-roles` from the route table and the permission table, and the
/// stable error codes (`x-error-codes` of the `Error` schema) from
/// [`error::Code`]. `tests/openapi.rs` checks that the document has exactly
/// the routes the router has and that its prose agrees with `x-roles`.
pub static OPENAPI_DOC: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| openapi_document(&routes::TABLE).to_string());

/// The document paths a route answers: its own (`{*path}` written
/// `{path}`), and for `POST /v1/secrets/{*path}` the two operations the
/// handler tells apart by the last segment.
pub fn doc_paths(r: &routes::Route) -> Vec<String> {
    let p = r.path.replace("{*path}", "{path}");
    if r.method == axum::http::Method::POST && r.path == "/v1/secrets/{*path}" {
        return vec![format!("{p}/checkout"), format!("{p}/breakglass")];
    }
    vec![p]
}

/// Builds the served document from [`OPENAPI`] and `table`.
pub fn openapi_document(table: &[routes::Route]) -> serde_json::Value {
    use serde_json::{json, Value};
    let mut d: Value = serde_json::from_str(OPENAPI).unwrap_or_else(|_| json!({}));
    let codes: Vec<&str> = error::Code::ALL.iter().map(|c| c.as_str()).collect();
    if let Some(e) = d.pointer_mut("/components/schemas/Error/properties/error/properties/code") {
        e["x-error-codes"] = json!(codes);
    }
    for r in table {
        let roles: Vec<&str> = match r.access {
            routes::Access::Public => vec!["any"],
            routes::Access::Permission(a) => vault_core::policy::Role::ALL
                .iter()
                .filter(|role| vault_core::policy::allowed(**role, a))
                .map(|role| role.as_str())
                .collect(),
        };
        let method = r.method.as_str().to_ascii_lowercase();
        for p in doc_paths(r) {
            if let Some(op) = d.pointer_mut(&format!(
                "/paths/{}/{method}",
                p.replace('~', "~0").replace('/', "~1")
            )) {
                op["x-roles"] = json!(roles);
            }
        }
    }
    d
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
    // Every log line while the request runs carries its ID (the ID is also
    // in its audit entries and the `x-request-id` response header).
    let span = tracing::info_span!("request", request_id = %request_id);
    let mut resp =
        match tracing::Instrument::instrument(tokio::time::timeout(deadline, next.run(req)), span)
            .await
        {
            Ok(r) => r,
            Err(_) => ApiError::new(Code::Timeout, "the request took too long").into_response(),
        };
    // Every refusal that no handler recorded is recorded here, before the
    // response leaves; if that fails, the answer becomes audit_unavailable.
    // Only real refusals carry an ErrorCode: a sealed health probe's 503 is a
    // status report, not a refused request.
    let refused = resp.extensions().get::<ErrorCode>().map(|c| c.0);
    if let (Some(code), false) = (refused, audited.load(std::sync::atomic::Ordering::SeqCst)) {
        if code != Code::AuditUnavailable {
            let who = peer_who(&st, peer.as_ref(), &request_id);
            let outcome = if resp.status().is_server_error()
                && resp.status() != StatusCode::SERVICE_UNAVAILABLE
            {
                Outcome::Error
            } else {
                Outcome::Denied
            };
            let action = routes::audit_action(&routes::TABLE, &method, &route);
            let mut d = who.draft(&st, action.as_str(), &target, outcome, code.as_str());
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
    let code = resp.extensions().get::<ErrorCode>().map(|c| c.0.as_str());
    if let Some(c) = code {
        st.metrics.error(c);
    }
    st.metrics.request(&route, status, start.elapsed());
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
        // Revoked and expired certificates are refused under the principal
        // they were issued to.
        match st.registered_as(&p.0.fingerprint) {
            Some((name, role)) => {
                who.principal = name;
                who.role = role.as_str().into();
            }
            None => {
                // Not a registered principal: record what the certificate claims.
                who.principal = format!("unregistered:{}", p.0.common_name);
                who.role = String::new();
            }
        }
    }
    who
}
