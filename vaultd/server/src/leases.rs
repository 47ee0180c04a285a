//! Leases: every checkout ends, by check-in or at its TTL. The reaper finds
//! open checkouts whose `expires_at` has passed, ends each one in an audited
//! write (`checkout.expire`, which also releases an exclusive secret's lock
//! for good) and runs every [`REAP_EVERY`] while the vault is unsealed,
//! first right at start: a lease that expired while vaultd was down is
//! ended then.

use std::sync::Arc;
use std::time::Duration;

use vault_store::{AuditDrafts, Conflict, StoreError, WriteOp};

use crate::audit::Who;
use crate::state::AppState;
use crate::timefmt::rfc3339;

/// How often the reaper looks.
pub const REAP_EVERY: Duration = Duration::from_secs(5);

/// Leases ended per read.
const BATCH: usize = 100;

/// Ends every lease past its TTL now; how many it ended. Nothing while
/// sealed (nothing is written to a sealed vault).
pub fn reap(st: &AppState) -> Result<usize, StoreError> {
    if st.is_sealed() {
        return Ok(0);
    }
    let now = st.now();
    let mut ended = 0;
    loop {
        let due = st.store.expiring_checkouts(now, BATCH)?;
        let n = due.len();
        for c in due {
            let who = Who::system();
            let audit = AuditDrafts::new(who.draft(
                st,
                "checkout.expire",
                &c.path,
                vault_core::audit::entry::Outcome::Success,
                "",
            ))
            .detail("checkout_id", c.id.clone())
            .detail("principal", c.principal.clone())
            .detail("version", c.version.to_string())
            .detail("expires_at", rfc3339(c.expires_at));
            match st.store.write_audited(
                WriteOp::ExpireCheckout {
                    id: c.id.clone(),
                    now,
                },
                audit,
            ) {
                Ok(_) => {
                    ended += 1;
                    tracing::info!(checkout_id = %c.id, principal = %c.principal, path = %c.path, "lease expired");
                }
                // Checked in (or ended) between the read and the write.
                Err(StoreError::Conflict(Conflict::AlreadyCheckedIn | Conflict::LeaseExpired)) => {}
                Err(e) => return Err(e),
            }
        }
        if n < BATCH {
            return Ok(ended);
        }
    }
}

/// Runs [`reap`] now and every [`REAP_EVERY`].
pub fn spawn_reaper(st: Arc<AppState>) {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let s = st.clone();
            match tokio::task::spawn_blocking(move || reap(&s)).await {
                Ok(Ok(_)) => failing = false,
                Ok(Err(e)) => {
                    if !failing {
                        tracing::error!(error = %e, "lease reaper failed; retrying");
                        failing = true;
                    }
                }
                Err(_) => {}
            }
            tokio::time::sleep(REAP_EVERY).await;
        }
    });
}
