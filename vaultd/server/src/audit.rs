//! Audit plumbing in the daemon: who did what (entry drafts), value HMACs,
//! and signed checkpoints.
//!
//! Entries are written by the store, atomically with the change they record
//! ([`vault_store::Store::write_audited`]); refusals that never reach the
//! store are written by the access middleware before the response leaves.
//! A checkpoint (C2SP signed note over the RFC 9162 root) is signed by the
//! audit key in the token at most every `audit.checkpoint_interval_secs`
//! while entries arrive, and on request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use vault_store::Backend as _;

use vault_core::audit::entry::{Draft, Outcome};
use vault_core::audit::note::Checkpoint;
use vault_store::WriteOp;

use crate::state::AppState;
use crate::timefmt::rfc3339;

/// Who made a request, for its audit entry.
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub request_id: String,
    pub principal: String,
    pub role: String,
    pub fingerprint: String,
}

impl Who {
    /// The daemon itself (start, unseal at start, shutdown).
    pub fn system() -> Who {
        Who {
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            principal: "vaultd".into(),
            role: "system".into(),
            fingerprint: String::new(),
        }
    }

    pub fn draft(
        &self,
        st: &AppState,
        action: &str,
        target: &str,
        outcome: Outcome,
        error: &str,
    ) -> Draft {
        Draft {
            time: rfc3339(st.now()),
            request_id: self.request_id.clone(),
            principal: self.principal.clone(),
            role: self.role.clone(),
            fingerprint: self.fingerprint.clone(),
            action: action.into(),
            target: target.into(),
            outcome,
            error: error.into(),
            details: BTreeMap::new(),
            hmac: BTreeMap::new(),
        }
    }
}

/// The key name and origin line of this appliance's checkpoints.
pub fn origin(appliance_id: &str) -> String {
    format!("vaultd.appliance/{appliance_id}")
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("the audit signing key is not available (vault sealed or token absent)")]
    SignerUnavailable,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error(transparent)]
    Store(#[from] vault_store::StoreError),
}

/// Signs a checkpoint of the current tree unless the newest one already
/// covers it. Blocking (talks to the token). Returns (size, note).
pub fn checkpoint_now(st: &AppState) -> Result<(u64, String), CheckpointError> {
    let (size, root) = {
        let t = st.store.audit_log().read();
        (t.size(), t.root())
    };
    if let Some((n, note)) = st.store.latest_checkpoint()? {
        if n >= size {
            return Ok((n, note));
        }
    }
    let signer = st
        .audit_signer()
        .ok_or(CheckpointError::SignerUnavailable)?;
    let cp = Checkpoint {
        origin: st.origin.clone(),
        size,
        root,
    };
    let sig = signer
        .sign_sha256_der(cp.body().as_bytes())
        .map_err(|e| CheckpointError::Sign(e.to_string()))?;
    let note = cp.signed(&st.origin, &st.audit_spki, &sig);
    st.store.write(WriteOp::AddCheckpoint {
        tree_size: size,
        note: note.clone(),
        now: st.now(),
    })?;
    Ok((size, note))
}

/// Signs a new checkpoint every interval while the log grows.
pub fn spawn_checkpointer(st: Arc<AppState>) {
    let every = Duration::from_secs(st.config.audit.checkpoint_interval_secs);
    tokio::spawn(async move {
        let mut last_warned = false;
        loop {
            tokio::time::sleep(every).await;
            let s = st.clone();
            let r = tokio::task::spawn_blocking(move || {
                let size = s.store.audit_log().size();
                let signed = s.store.latest_checkpoint()?.map(|(n, _)| n).unwrap_or(0);
                if size > signed || size == 0 {
                    checkpoint_now(&s).map(Some)
                } else {
                    Ok(None)
                }
            })
            .await;
            match r {
                Ok(Ok(_)) => last_warned = false,
                Ok(Err(CheckpointError::SignerUnavailable)) => {}
                Ok(Err(e)) => {
                    if !last_warned {
                        tracing::error!(error = %e, "audit checkpoint failed");
                        last_warned = true;
                    }
                }
                Err(_) => {}
            }
        }
    });
}

/// At start: the stored log must still match the newest checkpoint this
/// appliance signed. A database whose history was edited (and whose leaf
/// hashes were recomputed) would otherwise be signed over at the next
/// checkpoint; refusing to start keeps the edit visible.
pub fn check_log_against_checkpoint(
    store: &vault_store::Store,
    origin: &str,
    spki: &[u8],
) -> Result<(), vault_store::StoreError> {
    use vault_store::StoreError;
    let Some((size, note)) = store.latest_checkpoint()? else {
        return Ok(());
    };
    let cp = Checkpoint::verify(&note, origin, spki).map_err(|e| {
        StoreError::Corrupt(format!(
            "newest audit checkpoint (size {size}) does not verify: {e}"
        ))
    })?;
    let t = store.audit_log().read();
    let root = t.root_at(cp.size).map_err(|_| {
        StoreError::Corrupt(format!(
            "the audit log has {} entries but a checkpoint of size {} is signed: entries were removed",
            t.size(),
            cp.size
        ))
    })?;
    if root != cp.root {
        return Err(StoreError::Corrupt(format!(
            "the audit log does not match its signed checkpoint of size {}: history was modified",
            cp.size
        )));
    }
    Ok(())
}
