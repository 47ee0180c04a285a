//! Request extractors: the authenticated principal and JSON bodies with
//! JSON errors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use vault_core::policy::{allowed, Action};

use super::error::{ApiError, Code};
use crate::audit::Who;
use crate::state::{AppState, Principal};
use crate::tls::Peer;
use vault_core::audit::entry::{Draft, Outcome};
use vault_store::{AuditDrafts, StoreError};

/// Set on a request by the access middleware.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    /// Set once a handler has written the request's audit entry, so the
    /// middleware does not write a second one.
    pub audited: Arc<AtomicBool>,
}

/// The pipeline's principal for a request: registered, unrevoked and
/// (for a route that names a permission) authorised.
#[derive(Clone)]
pub struct Auth {
    /// The principal the client certificate maps to.
    pub principal: Principal,
    /// Who to name in this request's audit entries.
    pub who: Who,
    /// Set once this request's audit entry is written (see
    /// [`RequestCtx::audited`]).
    pub audit_done: Arc<AtomicBool>,
}

impl Auth {
    /// Marks the request as audited by its handler.
    pub fn audited(&self) {
        self.audit_done.store(true, Ordering::SeqCst);
    }

    /// The audit entries of a store write by this request (add details
    /// with [`AuditDrafts::detail`] / [`AuditDrafts::on_success`]).
    pub fn audit(&self, st: &AppState, action: &str, target: &str) -> AuditDrafts {
        AuditDrafts::new(self.who.draft(st, action, target, Outcome::Success, ""))
    }

    /// After an audited store write: the store wrote the entry unless the
    /// writer was gone or the write was stale (then the access middleware
    /// records the refusal).
    pub fn after_write<T>(&self, r: &Result<T, StoreError>) {
        if !matches!(r, Err(StoreError::WriterGone | StoreError::Stale(_))) {
            self.audited();
        }
    }

    /// A draft entry for this request.
    pub fn draft(
        &self,
        st: &AppState,
        action: &str,
        target: &str,
        outcome: Outcome,
        error: &str,
    ) -> Draft {
        self.who.draft(st, action, target, outcome, error)
    }

    /// Checks the permission table; refusals are logged.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if allowed(self.principal.role, action) {
            Ok(())
        } else {
            tracing::warn!(principal = %self.principal.name, role = %self.principal.role, ?action, "permission denied");
            Err(ApiError::forbidden(format!(
                "role {} may not perform {:?}",
                self.principal.role, action
            )))
        }
    }
}

impl Auth {
    /// The pipeline's principal step: the verified client certificate's
    /// registered, unrevoked principal, or the refusal.
    pub fn resolve(parts: &Parts, state: &AppState) -> Result<Auth, ApiError> {
        let peer = parts.extensions.get::<Peer>().ok_or_else(|| {
            ApiError::new(
                Code::NoClientCertificate,
                "a client certificate is required",
            )
        })?;
        let ctx = parts
            .extensions
            .get::<RequestCtx>()
            .cloned()
            .unwrap_or_else(|| RequestCtx {
                request_id: String::new(),
                audited: Arc::default(),
            });
        match state.principal(&peer.0.fingerprint) {
            Some(Ok(p)) => {
                let who = Who {
                    request_id: ctx.request_id.clone(),
                    principal: p.name.clone(),
                    role: p.role.as_str().into(),
                    fingerprint: p.fingerprint.clone(),
                };
                Ok(Auth {
                    principal: p,
                    who,
                    audit_done: ctx.audited,
                })
            }
            Some(Err(why)) => {
                tracing::warn!(cn = %peer.0.common_name, fingerprint = %peer.0.fingerprint, why, "refused certificate");
                Err(match why {
                    "expired" => ApiError::new(
                        Code::CertificateExpired,
                        "this client certificate has expired",
                    ),
                    _ => ApiError::new(
                        Code::RevokedCertificate,
                        "this client certificate has been revoked",
                    ),
                })
            }
            None => {
                tracing::warn!(cn = %peer.0.common_name, fingerprint = %peer.0.fingerprint, "unknown principal");
                Err(ApiError::new(
                    Code::UnknownPrincipal,
                    "this client certificate is not registered with the vault",
                ))
            }
        }
    }
}

/// A handler's principal: the one the pipeline resolved and authorised
/// ([`super::routes::authorize`]).
impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Auth>() {
            Some(a) => Ok(a.clone()),
            None => Auth::resolve(parts, state),
        }
    }
}

/// A JSON body whose errors are JSON too.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                "the body must be application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(Code::BodyTooLarge, "the request body is too large")
            } else {
                ApiError::new(Code::InvalidBody, "the request body could not be read")
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            // serde's message names the field and position; it never echoes values.
            .map_err(|e| {
                ApiError::new(
                    Code::InvalidJson,
                    format!("invalid request body: {}", strip_value(&e)),
                )
            })
    }
}

/// serde_json messages can quote input (`invalid type: string "..."`); keep
/// only the classification and position so a secret in a body never reaches
/// a response or log.
fn strip_value(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let cut = msg
        .find(['"', '`'])
        .map(|i| msg[..i].trim_end().to_owned())
        .unwrap_or(msg);
    format!("{cut} (line {}, column {})", e.line(), e.column())
}

/// A secret value from a request body: zeroized on drop, no Debug.
pub struct SecretInput(pub zeroize::Zeroizing<String>);

impl<'de> serde::Deserialize<'de> for SecretInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SecretInput(zeroize::Zeroizing::new(String::deserialize(
            d,
        )?)))
    }
}
