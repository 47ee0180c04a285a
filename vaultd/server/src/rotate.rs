//! Credential rotation: the state machine that changes a secret's value on
//! its target, written to the store before every step so that a crash at
//! any point loses nothing (the keyring's own rotation is `rotation.rs`).
//!
//! A rotation row goes `due` → `pending` → `applying` → promoted:
//!
//! 1. `due`: waits while the secret has an unexpired open lease (a session
//!    using the current value is not cut off; the lease's maximum bounds the
//!    wait). Then a new value is generated under the policy's password rules
//!    and stored, encrypted for the next version, as `pending`. The current
//!    value is still the one in service and checkouts get it.
//! 2. `applying` is written before the connector is called: from then on the
//!    target may hold either value, so checkouts are refused with
//!    `rotation_in_progress` (never a value the target may no longer take).
//!    The connector applies the pending value and logs in with it; once it
//!    is accepted it becomes the current version in one transaction with
//!    its `secret.rotate` audit entry, and the sessions the old value opened
//!    are ended.
//! 3. A failure that certainly changed nothing (target down, connector
//!    credential refused, change refused) goes back to `pending` with the
//!    old value in service, retried with backoff; after `rotation.max_tries` the
//!    rotation is `failed` (`rotation.failed`) until an admin starts it
//!    again. A failure after which the target may hold either value is
//!    resolved by logging in with the current value: accepted, back to
//!    `pending`; otherwise it stays `applying` and is retried.
//!
//! After a restart, an `applying` rotation applies its pending value again
//! (applying is idempotent) and verifies it: the target ends up with
//! exactly the value the vault hands out.

use std::sync::Arc;
use std::time::Duration;

use vault_connect::{ConnectorError, ExecHook, PostgresRole, Verdict};
use vault_core::audit::entry::Outcome;
use vault_core::keyring::{Keyring, Tier};
use vault_core::rotation::{Connector, RotationPolicy};
use vault_core::secret::SecretBytes;
use vault_store::{AuditDrafts, Conflict, RotationRow, RotationState, StoreError, WriteOp};

use crate::audit::Who;
use crate::state::AppState;

/// How often the engine looks for work.
pub const TICK: Duration = Duration::from_secs(1);

/// How long a connector step may take.
const CONNECTOR_TIMEOUT: Duration = Duration::from_secs(15);

/// The wait before try `n` (1-based): 2, 4, 8, … seconds, at most 5 min.
fn backoff(n: u32) -> i64 {
    1i64 << n.clamp(1, 8).min(8)
}

/// A test build stops dead at `point` when `VAULTD_FAULT_ROTATION` names
/// it (as `kill -9` would); release builds have no such hook.
#[cfg(debug_assertions)]
fn fault(point: &str) {
    if std::env::var("VAULTD_FAULT_ROTATION").as_deref() == Ok(point) {
        eprintln!("vaultd: fault injection at rotation step {point}");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
fn fault(_point: &str) {}

/// A connector with what it logs in with.
enum Target {
    Postgres(PostgresRole, SecretBytes),
    Exec(ExecHook),
}

/// A connector step with a bound on its whole run: a target that takes the
/// connection and then stalls (the PostgreSQL connect timeout covers the
/// TCP connect only) cannot hold the engine. Past the bound the step is
/// uncertain when it may have changed the target, else unanswered.
async fn bounded<T>(
    step: impl std::future::Future<Output = Result<T, ConnectorError>>,
    may_change: bool,
) -> Result<T, ConnectorError> {
    let limit = CONNECTOR_TIMEOUT * 2;
    match tokio::time::timeout(limit, step).await {
        Ok(r) => r,
        Err(_) => {
            let why = format!("no answer within {} s", limit.as_secs());
            Err(match may_change {
                true => ConnectorError::Uncertain(why),
                false => ConnectorError::Unreachable(why),
            })
        }
    }
}

impl Target {
    async fn apply(&self, v: &SecretBytes) -> Result<(), ConnectorError> {
        match self {
            Target::Postgres(t, cred) => bounded(t.apply(cred, v), true).await,
            Target::Exec(h) => bounded(h.apply(v), true).await,
        }
    }

    async fn verify(&self, v: &SecretBytes) -> Result<Verdict, ConnectorError> {
        match self {
            Target::Postgres(t, _) => bounded(t.verify(v), false).await,
            Target::Exec(h) => bounded(h.verify(v), false).await,
        }
    }

    async fn end_sessions(&self) -> Result<u64, ConnectorError> {
        match self {
            Target::Postgres(t, cred) => bounded(t.end_sessions(cred), false).await,
            Target::Exec(h) => bounded(h.end_sessions(), false).await.map(|_| 0),
        }
    }
}

/// Why a step could not run (the store, or the stored rows).
#[derive(Debug)]
enum StepError {
    Store(StoreError),
    /// Something the rotation needs is missing or does not decrypt.
    Broken(String),
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError::Store(e)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        Err(StoreError::TransactionFailed(
            "the rotation task panicked".into(),
        ))
    })
}

/// The current value of a standard-tier secret, decrypted.
fn current_value(st: &AppState, kr: &Keyring, path: &str) -> Result<(u64, SecretBytes), StepError> {
    let (v, sealed, _) = st
        .store
        .current(path)?
        .ok_or_else(|| StepError::Broken(format!("no secret at {path}")))?;
    let value = kr
        .open_value(path, v, Tier::Standard, &sealed)
        .map_err(|_| StepError::Broken(format!("{path} v{v} does not decrypt")))?;
    Ok((v, value))
}

fn target(st: &AppState, kr: &Keyring, policy: &RotationPolicy) -> Result<Target, StepError> {
    Ok(match &policy.connector {
        Connector::Postgres {
            host,
            port,
            dbname,
            role,
            connector_user,
            credential,
        } => {
            let (_, cred) = current_value(st, kr, credential)?;
            Target::Postgres(
                PostgresRole {
                    host: host.clone(),
                    port: *port,
                    dbname: dbname.clone(),
                    role: role.clone(),
                    connector_user: connector_user.clone(),
                    connect_timeout: CONNECTOR_TIMEOUT,
                },
                cred,
            )
        }
        Connector::Exec { program, args } => Target::Exec(ExecHook {
            program: allowed_hook(st, program).map_err(StepError::Broken)?,
            args: args.clone(),
            timeout: CONNECTOR_TIMEOUT,
        }),
    })
}

/// An exec hook's program, resolved, if it lies below
/// `rotation.exec_hook_dir` (checked when a policy is set and at every
/// run: a symlink or a changed configuration cannot point a hook
/// elsewhere).
pub fn allowed_hook(st: &AppState, program: &str) -> Result<std::path::PathBuf, String> {
    let Some(dir) = &st.config.rotation.exec_hook_dir else {
        return Err(
            "exec hooks are disabled: the configuration sets no rotation.exec_hook_dir".into(),
        );
    };
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| format!("rotation.exec_hook_dir {}: {e}", dir.display()))?;
    let p = std::fs::canonicalize(program).map_err(|e| format!("the hook {program}: {e}"))?;
    if !p.starts_with(&dir) || p == dir {
        return Err(format!(
            "the hook {program} is not below rotation.exec_hook_dir ({})",
            dir.display()
        ));
    }
    Ok(p)
}

/// Starts the engine: a look now and every [`TICK`] while unsealed.
pub fn spawn(st: Arc<AppState>) {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            match tick(&st).await {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "rotation engine: the store failed; retrying");
                        failing = true;
                    }
                }
            }
            tokio::time::sleep(TICK).await;
        }
    });
}

/// Starts scheduled rotations and works on every due one.
pub async fn tick(st: &Arc<AppState>) -> Result<(), StoreError> {
    let Some(kr) = st.keyring() else {
        return Ok(());
    };
    let now = st.now();
    let s = st.clone();
    let mut scheduled = blocking(move || s.store.scheduled_rotations(now)).await?;
    let s = st.clone();
    for (path, text, since) in blocking(move || s.store.cron_schedules()).await? {
        match vault_core::cron::Cron::parse(&text) {
            Ok(c) if c.next_after(since).is_some_and(|t| t <= now) => scheduled.push(path),
            Ok(_) => {}
            // Written only from a parsed policy: a row that does not parse
            // was changed behind the daemon's back, and is not acted on.
            Err(e) => {
                tracing::error!(%path, error = %e, "rotation: a stored cron schedule does not parse")
            }
        }
    }
    for path in scheduled {
        let s = st.clone();
        blocking(move || {
            match s.store.write(WriteOp::RequestRotation {
                path,
                trigger: "schedule".into(),
                now,
            }) {
                Ok(_) | Err(StoreError::NotFound) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await?;
    }
    let s = st.clone();
    for path in blocking(move || s.store.heartbeats_due(now)).await? {
        match heartbeat(st, &kr, &path).await {
            Ok(()) => {}
            // A rotation started or promoted meanwhile, or the rows went:
            // the result was about a value no longer current.
            Err(StepError::Store(StoreError::Conflict(_) | StoreError::NotFound)) => {}
            Err(StepError::Store(e)) => return Err(e),
            Err(StepError::Broken(why)) => {
                tracing::error!(%path, %why, "heartbeat cannot run");
                let s = st.clone();
                let p = path.clone();
                let row = blocking(move || {
                    Ok(s.store
                        .rotation_policy(&p)?
                        .zip(s.store.current_version(&p)?))
                })
                .await?;
                if let Some((row, expect)) = row {
                    let op = WriteOp::Heartbeat {
                        path,
                        policy_set_at: row.set_at,
                        expect,
                        accepted: None,
                        now,
                    };
                    match store_write(st, op).await {
                        Ok(()) | Err(StoreError::Conflict(_) | StoreError::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    let s = st.clone();
    let due = blocking(move || s.store.due_rotations(now, 16)).await?;
    for r in due {
        let path = r.path.clone();
        match work(st, &kr, r).await {
            Ok(()) => {}
            Err(StepError::Store(StoreError::Conflict(
                Conflict::RotationChanged | Conflict::VersionChanged,
            ))) => {}
            // Its rows went away under it (the secret or a credential was
            // deleted): the next look finds out what is left.
            Err(StepError::Store(StoreError::NotFound)) => {
                tracing::warn!(%path, "rotation: a row it needs is gone");
            }
            Err(StepError::Store(e)) => return Err(e),
            Err(StepError::Broken(why)) => {
                tracing::error!(%path, %why, "rotation cannot proceed");
                let s = st.clone();
                let p = path.clone();
                let state = blocking(move || s.store.rotation(&p))
                    .await?
                    .map(|r| r.state);
                let s = st.clone();
                if let Some(from) = state {
                    let next = s.now() + 60;
                    blocking(move || {
                        s.store
                            .write(WriteOp::RotationStep {
                                path,
                                from,
                                to: from,
                                attempt: Some((why, next)),
                                next_at: next,
                            })
                            .map(|_| ())
                    })
                    .await?;
                }
            }
        }
    }
    Ok(())
}

/// A heartbeat of `path`: vaultd logs in to the target with the current
/// value and records the answer. The first refusal is audited as
/// `secret.drift`; with `reconcile_drift` a rotation starts (trigger
/// `drift`), whose connector sets a fresh value with its own credential.
/// No answer (the target is down) is no verdict: the next heartbeat asks
/// again.
async fn heartbeat(st: &Arc<AppState>, kr: &Arc<Keyring>, path: &str) -> Result<(), StepError> {
    let s = st.clone();
    let p = path.to_owned();
    let Some(row) = blocking(move || s.store.rotation_policy(&p)).await? else {
        return Ok(());
    };
    let policy = serde_json::from_str(&row.policy)
        .map_err(|e| e.to_string())
        .and_then(|v| RotationPolicy::parse(path, &v))
        .map_err(|e| StepError::Broken(format!("the stored policy does not parse: {e}")))?;
    let reconcile = policy.reconcile_drift;
    let s = st.clone();
    let k = kr.clone();
    let p = path.to_owned();
    let (t, (version, current)) = tokio::task::spawn_blocking(move || {
        Ok::<_, StepError>((target(&s, &k, &policy)?, current_value(&s, &k, &p)?))
    })
    .await
    .map_err(|_| StepError::Broken("the heartbeat task panicked".into()))??;
    let accepted = match t.verify(&current).await {
        Ok(Verdict::Accepted) => Some(true),
        Ok(Verdict::Rejected) => Some(false),
        Err(e) => {
            tracing::warn!(%path, error = %e, "heartbeat: no answer from the target");
            None
        }
    };
    drop(current);
    let now = st.now();
    let op = WriteOp::Heartbeat {
        path: path.to_owned(),
        policy_set_at: row.set_at,
        expect: version,
        accepted,
        now,
    };
    if accepted != Some(false) {
        return Ok(store_write(st, op).await?);
    }
    tracing::warn!(%path, version, reconcile, "heartbeat: the target refuses the current value (drift)");
    if row.drift_at.is_none() {
        let audit = AuditDrafts::new(Who::system().draft(
            st,
            "secret.drift",
            path,
            Outcome::Error,
            "drift",
        ))
        .detail("version", version.to_string())
        .detail("reconcile", reconcile.to_string());
        let s = st.clone();
        blocking(move || s.store.write_audited(op, audit).map(|_| ())).await?;
    } else {
        store_write(st, op).await?;
    }
    if reconcile {
        store_write(
            st,
            WriteOp::RequestRotation {
                path: path.to_owned(),
                trigger: "drift".into(),
                now,
            },
        )
        .await?;
    }
    Ok(())
}

async fn store_write(st: &Arc<AppState>, op: WriteOp) -> Result<(), StoreError> {
    let s = st.clone();
    blocking(move || s.store.write(op).map(|_| ())).await
}

async fn work(st: &Arc<AppState>, kr: &Arc<Keyring>, r: RotationRow) -> Result<(), StepError> {
    let s = st.clone();
    let p = r.path.clone();
    let Some(row) = blocking(move || s.store.rotation_policy(&p)).await? else {
        return Ok(());
    };
    let policy = serde_json::from_str(&row.policy)
        .map_err(|e| e.to_string())
        .and_then(|v| RotationPolicy::parse(&r.path, &v))
        .map_err(|e| StepError::Broken(format!("the stored policy does not parse: {e}")))?;
    match r.state {
        RotationState::Due => generate(st, kr, &policy, r).await,
        RotationState::Pending => apply(st, kr, &policy, r).await,
        RotationState::Applying => finish(st, kr, &policy, r).await,
        RotationState::Failed => Ok(()),
    }
}

async fn generate(
    st: &Arc<AppState>,
    kr: &Arc<Keyring>,
    policy: &RotationPolicy,
    r: RotationRow,
) -> Result<(), StepError> {
    let now = st.now();
    let s = st.clone();
    let p = r.path.clone();
    let info = blocking(move || s.store.secret(&p))
        .await?
        .filter(|i| i.deleted.is_none())
        .ok_or_else(|| StepError::Broken("the secret is gone".into()))?;
    if info.open_checkouts.iter().any(|c| c.expires_at > now) {
        // A session is using the current value: wait for its lease.
        return Ok(store_write(
            st,
            WriteOp::RotationStep {
                path: r.path,
                from: RotationState::Due,
                to: RotationState::Due,
                attempt: None,
                next_at: now + 5,
            },
        )
        .await?);
    }
    let value = vault_core::rotation::generate(&policy.password, &mut rand::rngs::OsRng);
    let next = info.current_version + 1;
    let sealed = kr.seal_value(&r.path, next, Tier::Standard, value.expose_secret());
    drop(value);
    store_write(
        st,
        WriteOp::RotationPending {
            path: r.path.clone(),
            expect_current: info.current_version,
            sealed,
        },
    )
    .await?;
    fault("after_pending");
    let s = st.clone();
    let p = r.path.clone();
    match blocking(move || s.store.rotation(&p)).await? {
        Some(r) => apply(st, kr, policy, r).await,
        None => Ok(()),
    }
}

async fn apply(
    st: &Arc<AppState>,
    kr: &Arc<Keyring>,
    policy: &RotationPolicy,
    r: RotationRow,
) -> Result<(), StepError> {
    store_write(
        st,
        WriteOp::RotationStep {
            path: r.path.clone(),
            from: RotationState::Pending,
            to: RotationState::Applying,
            attempt: None,
            next_at: st.now(),
        },
    )
    .await?;
    fault("after_applying");
    finish(
        st,
        kr,
        policy,
        RotationRow {
            state: RotationState::Applying,
            ..r
        },
    )
    .await
}

/// A failed try: back to `pending` (the old value in service) or kept
/// `applying`; `failed` after `rotation.max_tries` tries that changed
/// nothing.
async fn retry(
    st: &Arc<AppState>,
    r: &RotationRow,
    back_to_pending: bool,
    why: String,
) -> Result<(), StepError> {
    let tries = r.attempts + 1;
    let now = st.now();
    let to = match back_to_pending {
        true if tries >= st.config.rotation.max_tries => RotationState::Failed,
        true => RotationState::Pending,
        false => RotationState::Applying,
    };
    tracing::warn!(path = %r.path, tries, error = %why, next = to.as_str(), "rotation try failed");
    let op = WriteOp::RotationStep {
        path: r.path.clone(),
        from: RotationState::Applying,
        to,
        attempt: Some((why.clone(), now)),
        next_at: now + backoff(tries),
    };
    if to == RotationState::Failed {
        let audit = AuditDrafts::new(Who::system().draft(
            st,
            "rotation.failed",
            &r.path,
            Outcome::Error,
            "rotation_failed",
        ))
        .detail("tries", tries.to_string())
        .detail("trigger", r.trigger.clone())
        .detail("error", why);
        let s = st.clone();
        blocking(move || s.store.write_audited(op, audit).map(|_| ())).await?;
        tracing::error!(path = %r.path, tries, "rotation failed; the current value stays in service");
        return Ok(());
    }
    Ok(store_write(st, op).await?)
}

async fn finish(
    st: &Arc<AppState>,
    kr: &Arc<Keyring>,
    policy: &RotationPolicy,
    r: RotationRow,
) -> Result<(), StepError> {
    let Some((version, sealed)) = r.pending.clone() else {
        return Err(StepError::Broken(
            "an applying rotation without its value".into(),
        ));
    };
    let new = kr
        .open_value(&r.path, version, Tier::Standard, &sealed)
        .map_err(|_| StepError::Broken("the pending value does not decrypt".into()))?;
    let s = st.clone();
    let k = kr.clone();
    let pol = policy.clone();
    let t = tokio::task::spawn_blocking(move || target(&s, &k, &pol))
        .await
        .map_err(|_| StepError::Broken("the rotation task panicked".into()))??;
    if let Err(e) = t.apply(&new).await {
        if e.changed_nothing() {
            return retry(st, &r, true, e.to_string()).await;
        }
        // Which value does the target take now?
        let s = st.clone();
        let k = kr.clone();
        let p = r.path.clone();
        let current = tokio::task::spawn_blocking(move || current_value(&s, &k, &p))
            .await
            .map_err(|_| StepError::Broken("the rotation task panicked".into()))??;
        let old_works = matches!(t.verify(&current.1).await, Ok(Verdict::Accepted));
        return retry(st, &r, old_works, e.to_string()).await;
    }
    fault("after_apply");
    match t.verify(&new).await {
        Ok(Verdict::Accepted) => {}
        Ok(Verdict::Rejected) => {
            return retry(
                st,
                &r,
                false,
                "the target refused the new value after it was applied".into(),
            )
            .await
        }
        Err(e) => return retry(st, &r, false, e.to_string()).await,
    }
    let audit =
        AuditDrafts::new(Who::system().draft(st, "secret.rotate", &r.path, Outcome::Success, ""))
            .detail("version", version.to_string())
            .detail("trigger", r.trigger.clone())
            .detail("tries", (r.attempts + 1).to_string());
    let s = st.clone();
    let path = r.path.clone();
    let now = st.now();
    blocking(move || {
        s.store
            .write_audited(WriteOp::RotationPromote { path, now }, audit)
            .map(|_| ())
    })
    .await?;
    fault("after_promote");
    tracing::info!(path = %r.path, version, trigger = %r.trigger, "credential rotated on its target");
    // What the old value opened ends with it.
    match t.end_sessions().await {
        Ok(n) => tracing::info!(path = %r.path, sessions = n, "sessions of the old value ended"),
        Err(e) => {
            tracing::warn!(path = %r.path, error = %e, "ending the old value's sessions failed")
        }
    }
    Ok(())
}
