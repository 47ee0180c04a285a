//! The REST API under `/v1`.
//!
//! # Layout
//!
//! * [`error`]: `ApiError`, the single error → HTTP mapping.
//! * [`extract`]: the principal (from the verified client certificate) and
//!   JSON bodies whose errors are JSON.
//! * [`sys`]: health, seal status, unseal, certificates, keyring, principals.
//! * [`secrets`]: secrets and checkouts.
//! * `openapi.json`: the OpenAPI 3 document served at `/v1/openapi.json`.

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
use axum::routing::{get, post};
use axum::Router;

use self::error::{ApiError, ErrorCode};
use self::extract::Peer;
use crate::state::AppState;

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
        .route("/v1/sys/keyring", get(sys::keyring_status))
        .route("/v1/sys/keyring/rotate", post(sys::keyring_rotate))
        .route("/v1/secrets", get(secrets::list))
        .route(
            "/v1/secrets/{*path}",
            get(secrets::get).put(secrets::put).post(secrets::post),
        )
        .route("/v1/checkouts/{id}/checkin", post(secrets::checkin))
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
async fn access(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
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
    let deadline = Duration::from_secs(st.config.limits.request_timeout_secs);
    let mut resp = match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long",
        )
        .into_response(),
    };
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
