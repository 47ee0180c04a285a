//! The one way a standard-tier value leaves the vault, for a checkout and
//! for the collection of an approved request alike: decrypt and check it,
//! record the checkout together with its audit entry, and hand the value
//! out only once that record is durable. A value that fails its integrity
//! check produces no record and no value.

use std::sync::atomic::Ordering;

use axum::Json;
use serde_json::{json, Value};
use vault_core::keyring::{Keyring, SealedValue, Tier};
use vault_core::secret::SecretBytes;
use vault_store::{StoreError, WriteOutcome};

use super::error::ApiError;
use super::extract::Auth;
use crate::state::AppState;
use crate::timefmt::rfc3339;

/// A value disclosed under a durable checkout record.
pub(crate) struct Disclosed {
    pub checkout_id: String,
    pub path: String,
    pub version: u64,
    pub expires_at: i64,
    value: SecretBytes,
}

/// Why nothing was disclosed.
pub(crate) enum NotDisclosed {
    /// The stored value failed to decrypt or is not text (logged).
    Integrity,
    /// The record was refused or could not be written (and audited as such
    /// by the store, unless the writer was gone).
    Store(StoreError),
}

impl From<NotDisclosed> for ApiError {
    fn from(e: NotDisclosed) -> Self {
        match e {
            NotDisclosed::Integrity => ApiError::integrity(),
            NotDisclosed::Store(s) => s.into(),
        }
    }
}

/// A checkout's record: written by `record(checkout_id, now, expires_at)`,
/// an audited store write.
pub(crate) struct Record<'a> {
    pub path: &'a str,
    pub version: u64,
    pub ttl_seconds: u64,
    /// How it is logged: `checkout` or `collect`.
    pub how: &'static str,
}

/// Opens `sealed` (the value of `path` at `version`), then records the
/// checkout; the value is returned only after the record is durable.
pub(crate) fn disclose(
    st: &AppState,
    kr: &Keyring,
    auth: &Auth,
    sealed: &SealedValue,
    rec: Record<'_>,
    record: impl FnOnce(String, i64, i64) -> Result<WriteOutcome, StoreError>,
) -> Result<Disclosed, NotDisclosed> {
    let Record {
        path,
        version,
        ttl_seconds,
        how,
    } = rec;
    let value = kr
        .open_value(path, version, Tier::Standard, sealed)
        .map_err(|e| {
            tracing::error!(%path, version, error = %e, how, "secret failed its integrity check");
            NotDisclosed::Integrity
        })?;
    // Values are stored from JSON strings; anything else is a forged row.
    if std::str::from_utf8(value.expose_secret()).is_err() {
        tracing::error!(%path, version, how, "secret is not UTF-8 after decryption");
        return Err(NotDisclosed::Integrity);
    }
    let checkout_id = uuid::Uuid::new_v4().to_string();
    let now = st.now();
    let expires_at = now + ttl_seconds as i64;
    let r = record(checkout_id.clone(), now, expires_at);
    auth.after_write(&r);
    r.map_err(NotDisclosed::Store)?;
    st.metrics.checkouts.fetch_add(1, Ordering::Relaxed);
    tracing::info!(principal = %auth.principal.name, %path, version, checkout_id = %checkout_id, how, "checkout");
    Ok(Disclosed {
        checkout_id,
        path: path.to_owned(),
        version,
        expires_at,
        value,
    })
}

impl Disclosed {
    /// The checkout answer (`checkout_id`, `path`, `value`, `version`,
    /// `expires_at`).
    pub fn into_json(self) -> Json<Value> {
        // Checked to be UTF-8 before the record was written.
        let text = std::str::from_utf8(self.value.expose_secret()).unwrap_or_default();
        Json(json!({
            "checkout_id": self.checkout_id,
            "path": self.path,
            "value": text,
            "version": self.version,
            "expires_at": rfc3339(self.expires_at),
        }))
    }
}
