//! `/v1/sys/update`: staging an update bundle, and the update state. The
//! staging, verification and installation are [`crate::update`]'s.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use vault_core::audit::entry::Outcome;

use super::blocking;
use super::error::{ApiError, ApiResult, Code};
use super::extract::Auth;
use crate::state::AppState;
use crate::update::{booted_slot, running_version};

/// `POST /v1/sys/update`: stage a signed bundle for the installer.
pub async fn stage(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let dir = crate::update::staging_dir(st.config.appliance.as_ref())?;
    // One upload at a time: they share the staging file.
    let Some(_one_at_a_time) = crate::update::upload_slot() else {
        return Err(ApiError::new(
            Code::UpdateInProgress,
            "another update bundle is being uploaded",
        ));
    };
    // Stream the body to disk with a hard size cap.
    let written = crate::update::receive(&dir, body).await;
    let st2 = st.clone();
    let who = auth.who.clone();
    let r = blocking(move || {
        let r = written.and_then(|size| crate::update::verify_and_stage(&st2.config, size));
        let (outcome, code) = match &r {
            Ok(_) => (Outcome::Success, ""),
            Err(e) => (Outcome::Denied, e.code()),
        };
        let mut d = who.draft(&st2, "sys.update.stage", "", outcome, code);
        match &r {
            Ok((m, size)) => {
                d.details.insert("version".into(), m.version.clone());
                d.details.insert("build".into(), m.build.to_string());
                d.details.insert("roothash".into(), m.roothash.clone());
                d.details.insert("bundle_bytes".into(), size.to_string());
            }
            Err(e) => {
                d.details.insert("message".into(), e.to_string());
            }
        }
        let audited = st2.store.audit(d);
        (r, audited)
    })
    .await?;
    auth.audited();
    let (r, audited) = r;
    if audited.is_err() {
        // No audit entry, no update: withdraw what was staged.
        let _ = std::fs::remove_file(dir.join("ready"));
        let _ = std::fs::remove_file(dir.join("staged.vupd"));
        return Err(ApiError::audit_unavailable());
    }
    let (m, _) = r?;
    tracing::info!(by = %auth.principal.name, version = %m.version, build = m.build, "update staged");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "staged",
            "version": m.version,
            "build": m.build,
            "roothash": m.roothash,
            "next": "the installer writes the inactive slot and reboots the appliance",
        })),
    ))
}

/// `GET /v1/sys/update`: the running image and the update state.
pub async fn status(State(st): State<Arc<AppState>>, _auth: Auth) -> ApiResult<Json<Value>> {
    let a = st.config.appliance.as_ref();
    let version = running_version(a.and_then(|a| a.version_file.as_deref()))
        .map(|(v, _)| v)
        .unwrap_or_default();
    let read = |name: &str| -> Value {
        a.and_then(|a| a.update_dir.as_ref())
            .and_then(|d| std::fs::read(d.join(name)).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    Ok(Json(json!({
        "version": version,
        "slot": booted_slot().map(String::from),
        "staged": read("ready"),
        "installed": read("installed.json"),
        "failed": read("failed.json"),
    })))
}
