//! Keyring rotation: add a version, then rewrap data keys in the background.
//!
//! The new version is made durable first and only then used, so no value is
//! ever encrypted under a key the database does not know. Rewrapping touches
//! only wrapped data keys (never value ciphertext), each row conditionally
//! (`WHERE key_version = old`), so it is safe to interrupt and to resume:
//! it restarts after every unseal while stale rows remain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vault_core::keyring::{Keyring, KeyringVersion, Tier};
use vault_store::{AuditDrafts, StoreError, WriteOp, WriteOutcome};

use crate::audit::Who;
use crate::state::{AppState, Vault};
use vault_core::audit::entry::Outcome;

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("the vault is sealed")]
    Sealed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adds a keyring version and makes it active. Returns the new version.
pub fn rotate(state: &Arc<AppState>, who: &Who, audited: &AtomicBool) -> Result<u32, RotateError> {
    if state.is_sealed() {
        return Err(RotateError::Sealed);
    }
    let versions = state.store.keyring_versions()?;
    let next = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
    let kv = KeyringVersion::new_random(next);
    // Durable (with its audit entry) first.
    let (w, st) = (who.clone(), state.clone());
    let r = state.store.write_audited(
        WriteOp::AddKeyringVersion {
            kv: kv.clone(),
            now: state.now(),
        },
        AuditDrafts::new(w.draft(&st, "keyring.rotate", "", Outcome::Success, ""))
            .detail("version", next.to_string()),
    );
    if !matches!(r, Err(StoreError::WriterGone)) {
        audited.store(true, Ordering::SeqCst);
    }
    r?;
    {
        let mut vault = state.vault.write().unwrap_or_else(|e| e.into_inner());
        let Vault::Unsealed(u) = &mut *vault else {
            return Err(RotateError::Sealed);
        };
        let mut all = versions;
        all.push(kv);
        let kr = Keyring::load(&u.rk, &all).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        u.keyring = Arc::new(kr);
    }
    tracing::info!(
        version = next,
        "keyring rotated; rewrapping data keys in the background"
    );
    spawn_rewrap(state.clone());
    Ok(next)
}

/// Starts the background rewrap unless one is running.
pub fn spawn_rewrap(state: Arc<AppState>) {
    if state.rewrap_running.swap(true, Ordering::SeqCst) {
        return;
    }
    std::thread::Builder::new()
        .name("vaultd-rewrap".into())
        .spawn(move || {
            let r = rewrap_all(&state);
            state.rewrap_running.store(false, Ordering::SeqCst);
            match r {
                Ok(n) if n > 0 => tracing::info!(rewrapped = n, "keyring rewrap finished"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "keyring rewrap stopped; it resumes at the next unseal or rotation"),
            }
        })
        .expect("spawning the rewrap thread");
}

fn rewrap_all(state: &AppState) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let Some(kr) = state.keyring() else {
            return Ok(total);
        };
        let batch = state.store.stale_versions(kr.active_version(), 256)?;
        if batch.is_empty() {
            return Ok(total);
        }
        let mut progressed = false;
        for row in batch {
            match kr.rewrap(
                &row.path,
                row.version,
                Tier::Standard,
                row.key_version,
                &row.wrapped_dek,
            ) {
                Ok(Some((to, wrapped_dek))) => {
                    if let WriteOutcome::Rewrapped(true) = state.store.write(WriteOp::Rewrap {
                        path: row.path,
                        version: row.version,
                        from: row.key_version,
                        to,
                        wrapped_dek,
                    })? {
                        total += 1;
                        progressed = true;
                        state.metrics.rewrapped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(path = %row.path, version = row.version, error = %e, "cannot rewrap a data key (integrity)");
                }
            }
        }
        if !progressed {
            // Only unrewrappable rows left; they are reported above.
            return Ok(total);
        }
    }
}
