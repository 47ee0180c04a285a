//! The HTTP side of the bootstrap servers ([`crate::bootstrap`]): the
//! first-boot ceremony's `POST /v1/sys/init` and the status endpoints of an
//! uninitialised appliance or one whose data volume stayed locked.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::error::{ApiError, Code};
use super::extract::JsonBody;
use crate::bootstrap::{Boot, InitRefused};
use crate::init::InitError;

/// The routes of a bootstrap server.
pub fn router(boot: Arc<Boot>) -> Router {
    let body_limit = 64 * 1024;
    Router::new()
        .route("/v1/sys/health", get(health))
        .route("/v1/sys/seal-status", get(seal_status))
        .route("/v1/sys/init", post(init))
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(boot)
}

async fn health(State(b): State<Arc<Boot>>) -> Response {
    let (code, message) = b.reason();
    let initialised = b.initialised();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": if initialised { "sealed" } else { "uninitialized" },
            "sealed": true,
            "initialized": initialised,
            "version": env!("CARGO_PKG_VERSION"),
            "reason": {"code": code, "message": message},
        })),
    )
        .into_response()
}

async fn seal_status(State(b): State<Arc<Boot>>) -> Json<serde_json::Value> {
    let (code, message) = b.reason();
    Json(json!({
        "sealed": true,
        "initialized": b.initialised(),
        "mode": b.seal_mode(),
        "reason": {"code": code, "message": message},
        "since": null,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitBody {
    code: String,
    #[serde(default = "default_admin")]
    admin_name: String,
    csr_pem: String,
}

fn default_admin() -> String {
    "admin".into()
}

async fn init(
    State(b): State<Arc<Boot>>,
    peer: Option<axum::Extension<crate::bootstrap::PeerAddr>>,
    JsonBody(req): JsonBody<InitBody>,
) -> Response {
    // Without a peer address (never, from the listener) every request
    // shares one source's limit.
    let source = peer
        .map(|p| p.0 .0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match do_init(&b, source, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn do_init(
    b: &Arc<Boot>,
    source: std::net::IpAddr,
    req: InitBody,
) -> Result<Response, ApiError> {
    let req_code = Zeroizing::new(req.code);
    let report = match b
        .initialise(source, &req_code, &req.admin_name, req.csr_pem)
        .await
    {
        Ok(r) => r,
        Err(InitRefused::NotServed(code, message)) => {
            return Err(ApiError::lower(
                code,
                StatusCode::SERVICE_UNAVAILABLE,
                message,
            ));
        }
        Err(InitRefused::CodeBurnt) => {
            return Err(ApiError::new(
                Code::InitCodeBurnt,
                "the init code is no longer valid (used, or too many wrong codes): \
                 restart the appliance for a new one",
            ));
        }
        Err(InitRefused::CodeInvalid) => {
            return Err(ApiError::new(Code::InitCodeInvalid, "wrong init code"));
        }
        Err(InitRefused::SourceLocked) => {
            return Err(ApiError::new(
                Code::InitSourceLocked,
                "too many wrong init codes from this address: it is refused until the \
                 appliance restarts (other addresses may still use the code)",
            ));
        }
        Err(InitRefused::TaskFailed) => return Err(ApiError::internal("init task failed")),
        Err(InitRefused::Init(InitError::BadName(n))) => {
            return Err(ApiError::new(
                Code::InvalidName,
                format!("invalid admin name {n:?}: 1-64 characters of A-Z a-z 0-9 . _ -"),
            ))
        }
        Err(InitRefused::Init(InitError::BadCsr(m))) => {
            return Err(ApiError::new(Code::InvalidCsr, m))
        }
        Err(InitRefused::Init(InitError::AlreadyInitialized(_))) => {
            return Err(ApiError::new(
                Code::AlreadyInitialized,
                "the vault is already initialised",
            ))
        }
        Err(InitRefused::Init(e)) => {
            tracing::error!(error = %e, "first-boot init failed");
            let message = format!("init failed: {e}");
            return Err(match &e {
                InitError::Seal(s) => {
                    ApiError::lower(s.code(), StatusCode::SERVICE_UNAVAILABLE, message)
                }
                _ => ApiError::new(Code::InitFailed, message),
            });
        }
    };
    Ok((
        StatusCode::OK,
        Json(json!({
            "appliance_id": report.appliance_id,
            "seal_mode": report.seal_mode,
            "ca_pem": report.ca_pem,
            "admin_name": req.admin_name,
            "admin_cert_pem": report.admin_cert_pem,
            "admin_fingerprint": report.admin_fingerprint,
        })),
    )
        .into_response())
}

async fn fallback(State(b): State<Arc<Boot>>) -> Response {
    let (code, message) = b.reason();
    ApiError::lower(code, StatusCode::SERVICE_UNAVAILABLE, message).into_response()
}
