//! `/v1/audit/*`: what auditors need to verify the log without trusting
//! the appliance: signed checkpoints, the verifying key, entries as their
//! exact leaf bytes, inclusion and consistency proofs, value HMACs.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::audit::entry::{Entry, Outcome};
use vault_core::audit::note::key_id;

use super::blocking;
use super::error::{ApiError, ApiResult, Code};
use super::extract::{Auth, JsonBody, SecretInput};
use crate::audit::{checkpoint_now, CheckpointError};
use crate::state::AppState;

/// Most entries per page.
pub const MAX_PAGE: u64 = 1000;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn note_response(note: String) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        note,
    )
        .into_response()
}

/// `GET /v1/audit/checkpoint`: the newest signed checkpoint (the note).
pub async fn checkpoint(State(st): State<Arc<AppState>>, _auth: Auth) -> ApiResult<Response> {
    let s = st.clone();
    match blocking(move || s.store.latest_checkpoint()).await?? {
        Some((_, note)) => Ok(note_response(note)),
        None => Err(ApiError::new(
            Code::NoCheckpoint,
            "no checkpoint has been signed yet; POST /v1/audit/checkpoint",
        )),
    }
}

fn checkpoint_error(e: CheckpointError) -> ApiError {
    match e {
        CheckpointError::SignerUnavailable => ApiError::new(
            Code::SignerUnavailable,
            "the audit signing key is not available (sealed, or the token is absent)",
        ),
        CheckpointError::Store(s) => s.into(),
        other => {
            tracing::error!(error = %other, "checkpoint signing failed");
            ApiError::new(Code::SignerUnavailable, "checkpoint signing failed")
        }
    }
}

/// `POST /v1/audit/checkpoint`: sign one now (if the log grew) and return it.
pub async fn new_checkpoint(State(st): State<Arc<AppState>>, _auth: Auth) -> ApiResult<Response> {
    let s = st.clone();
    let (_, note) = blocking(move || checkpoint_now(&s))
        .await?
        .map_err(checkpoint_error)?;
    Ok(note_response(note))
}

/// `GET /v1/audit/public-key`
pub async fn public_key(State(st): State<Arc<AppState>>, _auth: Auth) -> ApiResult<Json<Value>> {
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        b64(&st.audit_spki)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(Json(json!({
        "key_name": st.origin,
        "public_key_pem": pem,
        "key_id": hex::encode(key_id(&st.audit_spki)),
        "algorithm": "ECDSA P-256 SHA-256, DER signature (C2SP signed-note type 0x02)",
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    start: u64,
    end: u64,
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::new(Code::InvalidQuery, e.body_text()))
}

/// `GET /v1/audit/entries?start=S&end=E`: entries `[S, E)`, at most 1000.
pub async fn entries(
    State(st): State<Arc<AppState>>,
    _auth: Auth,
    q: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Range { start, end } = query(q)?;
    let size = st.store.audit_log().size();
    if start >= end {
        return Err(ApiError::new(Code::InvalidRange, "start must be below end"));
    }
    if start >= size {
        return Err(ApiError::new(
            Code::InvalidRange,
            format!("start {start} is beyond the log (size {size})"),
        ));
    }
    if end - start > MAX_PAGE {
        return Err(ApiError::new(
            Code::InvalidRange,
            format!("at most {MAX_PAGE} entries per request"),
        ));
    }
    let end = end.min(size);
    let s = st.clone();
    let rows = blocking(move || s.store.audit_entries(start, end)).await??;
    let list: Vec<Value> = rows
        .iter()
        .map(|(i, bytes)| {
            let decoded = Entry::parse(bytes)
                .ok()
                .and_then(|e| serde_json::to_value(e).ok())
                .unwrap_or(Value::Null);
            json!({"index": i, "entry": b64(bytes), "decoded": decoded})
        })
        .collect();
    Ok(Json(json!({"tree_size": size, "entries": list})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    index: u64,
    tree_size: u64,
}

/// `GET /v1/audit/proof/inclusion?index=I&tree_size=N`
pub async fn inclusion(
    State(st): State<Arc<AppState>>,
    _auth: Auth,
    q: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let InclusionQuery { index, tree_size } = query(q)?;
    let t = st.store.audit_log().read();
    if tree_size == 0 || tree_size > t.size() {
        return Err(ApiError::new(
            Code::InvalidTreeSize,
            format!("tree_size must be 1..={}", t.size()),
        ));
    }
    if index >= tree_size {
        return Err(ApiError::new(
            Code::InvalidIndex,
            "index must be below tree_size",
        ));
    }
    let proof = t
        .inclusion_proof(index, tree_size)
        .map_err(|e| ApiError::new(Code::InvalidIndex, e.to_string()))?;
    Ok(Json(json!({
        "leaf_index": index,
        "tree_size": tree_size,
        "hashes": proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    first: u64,
    second: u64,
}

/// `GET /v1/audit/proof/consistency?first=M&second=N`
pub async fn consistency(
    State(st): State<Arc<AppState>>,
    _auth: Auth,
    q: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let ConsistencyQuery { first, second } = query(q)?;
    let t = st.store.audit_log().read();
    if second > t.size() {
        return Err(ApiError::new(
            Code::InvalidTreeSize,
            format!("second must be at most {}", t.size()),
        ));
    }
    if first == 0 || first > second {
        return Err(ApiError::new(
            Code::InvalidRange,
            "need 0 < first <= second",
        ));
    }
    let proof = t
        .consistency_proof(first, second)
        .map_err(|e| ApiError::new(Code::InvalidRange, e.to_string()))?;
    Ok(Json(json!({
        "first": first,
        "second": second,
        "hashes": proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashRequest {
    value: SecretInput,
}

/// `POST /v1/audit/hash`: the HMAC a value would have in an entry, so an
/// auditor can check a known value against the log. The request is audited
/// (with the HMAC, never the value).
pub async fn hash(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<HashRequest>,
) -> ApiResult<Json<Value>> {
    let h = st
        .audit_hmac(req.value.0.as_bytes())
        .ok_or_else(ApiError::sealed)?;
    let mut d = auth.draft(&st, "audit.hash", "", Outcome::Success, "");
    d.hmac.insert("value".into(), h.clone());
    let s = st.clone();
    blocking(move || s.store.audit(d)).await??;
    auth.audited();
    Ok(Json(json!({"hmac": h})))
}
