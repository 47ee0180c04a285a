//! The one place where errors become HTTP responses.
//!
//! Every error body is `{"error": {"code": "...", "message": "..."}}`; codes
//! are stable and documented in docs/API.md. Messages never carry secret
//! values or key material.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vault_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// Carried on error responses so the access log and metrics see the code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn sealed() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sealed",
            "the vault is sealed; see GET /v1/sys/seal-status",
        )
    }
    pub fn integrity() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "integrity",
            "stored data failed an integrity check; the incident has been logged",
        )
    }
    pub fn audit_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit log cannot be written; nothing was done or disclosed",
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound => ApiError::not_found("no such object"),
            StoreError::Conflict("checked_out") => ApiError::new(
                StatusCode::CONFLICT,
                "checked_out",
                "the secret is exclusive and already checked out",
            ),
            StoreError::Conflict(code) => ApiError::new(StatusCode::CONFLICT, code, e.to_string()),
            StoreError::Forbidden(m) => ApiError::forbidden(*m),
            // Retried by the service; this is what is left after the last try.
            StoreError::Stale(_) => ApiError::new(
                StatusCode::CONFLICT,
                "version_changed",
                "other writes kept landing first; nothing was changed, retry",
            ),
            StoreError::AuditUnavailable(_) => {
                tracing::error!(error = %e, "audit log unavailable; request refused");
                ApiError::audit_unavailable()
            }
            StoreError::Corrupt(m) => {
                tracing::error!(error = %m, "stored row failed to decode");
                ApiError::integrity()
            }
            StoreError::Sqlite(_)
            | StoreError::Fenced { .. }
            | StoreError::WriterGone
            | StoreError::TransactionFailed(_)
            | StoreError::SchemaTooNew { .. } => {
                tracing::error!(error = %e, "storage failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "storage is unavailable; nothing was changed",
                )
            }
            _ => ApiError::internal("unexpected storage error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_fenced_writes_have_their_codes() {
        let e = ApiError::from(StoreError::Stale("version_changed"));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, "version_changed")
        );
        let e = ApiError::from(StoreError::Fenced {
            epoch: 1,
            current: 2,
        });
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
        );
    }
}
