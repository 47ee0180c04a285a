//! Write operations and the group-commit writer thread.

use std::sync::{mpsc, Arc};
use std::thread;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use vault_core::audit::entry::{AuditDrafts, Draft};
use vault_core::audit::merkle::{leaf_hash, Hash};
use vault_core::keyring::{KeyringVersion, SealedValue};

use crate::audit::AuditLog;
use crate::sql::Text;
use crate::types::{
    CheckoutRow, CustodianRow, PrefixPolicy, PrincipalRow, RequestRow, RotationPolicyRow,
    RotationRow, RotationState, SealedVersion, VoteRow,
};
use crate::{Conflict, StoreError};
use vault_core::custodian::approval::Decision;
use vault_core::custodian::request::{RequestKind, RequestStatus};
use vault_core::policy::Role;

/// One durable change. Plain data: the store runs no caller code. Where a
/// change was computed from what the caller read (a value encrypted for the
/// next version, a vote decided on the votes so far), the op names what it
/// expects to find, and a store that finds otherwise answers
/// [`StoreError::Stale`] without writing or auditing anything, so the
/// caller reads again and retries.
#[non_exhaustive]
pub enum WriteOp {
    /// First initialisation. Fails with `already_initialized` if done before.
    Init {
        meta: Vec<(String, Vec<u8>)>,
        keyring: KeyringVersion,
        principals: Vec<PrincipalRow>,
        now: i64,
    },
    SetMeta {
        key: String,
        value: Vec<u8>,
    },
    AddKeyringVersion {
        kv: KeyringVersion,
        now: i64,
    },
    /// A new version of a standard-tier secret: `version` must be the next
    /// one (1 for a new path; the value is encrypted for it, since the
    /// version is part of the associated data).
    PutSecret {
        path: String,
        version: u64,
        exclusive: Option<bool>,
        /// The longest a lease may last, renewals included (`None` keeps
        /// what the secret has; new secrets then have the configured one).
        max_lease_seconds: Option<u64>,
        metadata: Option<Value>,
        created_by: String,
        now: i64,
        sealed: SealedValue,
    },
    /// Records a checkout of the current version, which must still be
    /// `expect_version` (the caller has already decrypted it), or of the
    /// `named` older version, which must not be destroyed.
    Checkout {
        id: String,
        path: String,
        expect_version: Option<u64>,
        named: Option<u64>,
        principal: String,
        /// The certificate making it: only it may check in or renew.
        fingerprint: String,
        reason: String,
        now: i64,
        expires_at: i64,
    },
    /// Destroys old versions' values: ciphertext, wrapped key and
    /// custodian shares are erased, the rows stay (`destroyed_at`). The
    /// current version cannot be destroyed ([`Conflict::VersionCurrent`]:
    /// delete the secret); one destroyed already is left as it is.
    /// [`WriteOutcome::Destroyed`] lists those this op destroyed.
    DestroyVersions {
        path: String,
        versions: Vec<u64>,
        by: String,
        now: i64,
    },
    /// Deletes a secret: every version is destroyed and the secret is a
    /// tombstone (not listed, not checked out, not found) until a write
    /// continues its version numbers under the same approvals and tier.
    DeleteSecret {
        path: String,
        by: String,
        now: i64,
    },
    /// Sets (or replaces) a secret's rotation policy. The secret and the
    /// connector's credential secret must exist (not found otherwise).
    SetRotationPolicy {
        row: RotationPolicyRow,
    },
    /// Removes a secret's rotation policy; refused while a rotation may
    /// have reached the target ([`Conflict::RotationInProgress`]); a
    /// rotation not yet applied is dropped with it.
    RemoveRotationPolicy {
        path: String,
    },
    /// Starts a rotation (`trigger`: `manual`, `schedule`, …) unless one is
    /// in flight; a failed one starts again. Not found without a policy.
    RequestRotation {
        path: String,
        trigger: String,
        now: i64,
    },
    /// The generated value, stored before it goes anywhere: `Due` →
    /// `Pending`, if the secret's current version is still
    /// `expect_current` (the value is encrypted for `expect_current + 1`).
    RotationPending {
        path: String,
        expect_current: u64,
        sealed: SealedValue,
    },
    /// Moves a rotation from `from` to `to`, counting an attempt if
    /// `failed` (with its error and the next try's time).
    RotationStep {
        path: String,
        from: RotationState,
        to: RotationState,
        attempt: Option<(String, i64)>,
        next_at: i64,
    },
    /// The verified new value becomes the current version; the rotation
    /// row is removed (from `Applying` only).
    RotationPromote {
        path: String,
        now: i64,
    },
    /// A heartbeat's result for the secret's current version `expect`: the
    /// target `accepted` it or not (drift, kept from its first time until
    /// a heartbeat or a rotation finds it in sync), or gave no answer
    /// (`None`: only the time is kept). Refused while a rotation is in
    /// flight or once the policy was set again since `policy_set_at` (its
    /// target may be another: `rotation_changed`), or once the version
    /// moved on (`version_changed`): the result is about a value or a
    /// target no longer current.
    Heartbeat {
        path: String,
        policy_set_at: i64,
        expect: u64,
        accepted: Option<bool>,
        now: i64,
    },
    /// A session recording's registration (`POST
    /// /v1/checkouts/{id}/recordings`): only an audit entry is written, in
    /// this transaction, after it checks that the checkout exists, was made
    /// by `principal` with `fingerprint` or a certificate it renews (a
    /// recording often arrives after check-in and after a renewal), and
    /// began no later than the session (`started_at`, with
    /// [`RECORDING_SKEW`] for clocks). The checkout may be open or ended.
    RecordSession {
        id: String,
        principal: String,
        fingerprint: String,
        started_at: i64,
    },
    /// Revokes a certificate and every renewal made from it (a stolen
    /// certificate's holder cannot keep access through a renewal).
    RevokePrincipal {
        fingerprint: String,
        now: i64,
    },
    /// Revokes every unrevoked certificate of a principal name (not found
    /// if it has none).
    RevokeName {
        name: String,
        now: i64,
    },
    /// A certificate's renewal: `new` (same name and role, `renewed_from`
    /// = `old`) is added if `old` is still unrevoked and unexpired at
    /// `now`. An earlier renewal of `old` that was never used is revoked
    /// (its answer was lost, or someone else holds `old`'s key: the
    /// audit log shows both). [`WriteOutcome::Revoked`] lists those.
    RenewPrincipal {
        old: String,
        new: PrincipalRow,
        now: i64,
    },
    /// A renewed certificate's first use: the certificate it renewed is
    /// revoked, and its open checkouts and uncollected requests move to
    /// this one. [`WriteOutcome::Revoked`] lists what was revoked (empty if
    /// it was already).
    RetirePredecessor {
        fingerprint: String,
    },
    /// A new version of a sealed-tier secret: ciphertext and custodian
    /// shares only. `custody` is the JSON `{"group", "k"}`.
    PutSealedSecret {
        path: String,
        version: u64,
        metadata: Option<Value>,
        custody: String,
        created_by: String,
        now: i64,
        sealed: SealedVersion,
    },
    /// A new custodian: its name and keys must never have been enrolled
    /// (also not by a removed custodian).
    EnrollCustodian(CustodianRow),
    /// Removes an enrolled custodian (not found if none): it no longer
    /// votes or counts; its row stays, so its name and keys are never
    /// enrolled again.
    RemoveCustodian {
        name: String,
        by: String,
        now: i64,
    },
    /// The groups of an enrolled custodian (not found if none).
    SetCustodianGroups {
        name: String,
        groups: Vec<String>,
    },
    /// Custodian recovery on new hardware: new sealed root, CA and audit
    /// key (`meta`); every earlier principal is revoked (their certificates
    /// come from the lost CA) and `admin` is the first new one.
    Recover {
        meta: Vec<(String, Vec<u8>)>,
        admin: PrincipalRow,
    },
    /// The approvals a secret's checkouts need (JSON `[{"group", "k"}]`).
    /// With `expect`, only if the stored ones are still exactly those
    /// (`policy_changed`): a change judged to narrow them against what was
    /// read must not land over a stricter one written in between.
    SetApprovals {
        path: String,
        approvals: String,
        expect: Option<String>,
    },
    /// The approvals every secret under `prefix` (ending with `/`) needs;
    /// `[]` removes the prefix policy (not found if there is none).
    SetPrefixApprovals {
        prefix: String,
        approvals: String,
        by: String,
        now: i64,
        /// As for [`WriteOp::SetApprovals`] (`[]`: no prefix policy).
        expect: Option<String>,
    },
    /// An access grant to a pam principal name, which must have an
    /// unrevoked certificate (`not_found` otherwise). Granting one that
    /// exists already is `grant_exists`.
    Grant {
        principal: String,
        prefix: String,
        by: String,
        now: i64,
    },
    /// A pam certificate and its name's first access grants, in one
    /// transaction (grants the name has already are kept).
    AddPrincipalGranted {
        row: PrincipalRow,
        grants: Vec<String>,
        by: String,
        now: i64,
    },
    /// Removes an access grant (not found if there is none).
    Ungrant {
        principal: String,
        prefix: String,
    },
    /// Only a governance request carries a change, and it must. A
    /// checkout or break-glass request needs a grant of the requester
    /// over the path (`not_granted`).
    OpenRequest(RequestRow),
    /// The proposer applies an approved governance change, once, in the
    /// transaction that checks: the request is approved, unexpired, not
    /// applied and made by that certificate; the governance rule it was
    /// approved under is still the stored one (`genesis`: no rule may exist
    /// yet); the custodian set ([`crate::custodian_set`]) is still
    /// `custodians`; with `expect_approvals` = (path, approvals), the
    /// secret's (or, for a path ending with `/`, the prefix's; `[]` if it
    /// has none) stored approvals are still exactly those. `op` is the
    /// change's own write: an enrolment, a meta value, approvals, a
    /// principal or a grant, nothing else.
    ApplyGovernance {
        request_id: String,
        requester: String,
        fingerprint: String,
        now: i64,
        genesis: bool,
        custodians: String,
        expect_approvals: Option<(String, String)>,
        op: Box<WriteOp>,
    },
    /// Records a vote decided on `expect_votes` earlier votes, and the
    /// request's status after it.
    Vote {
        row: VoteRow,
        status: RequestStatus,
        expect_votes: usize,
    },
    /// The requester collects an approved request, once. For a `checkout`
    /// request `checkout` = (checkout id, expires at) records the checkout.
    Collect {
        request_id: String,
        requester: String,
        fingerprint: String,
        now: i64,
        checkout: Option<(String, i64)>,
    },
    /// Nothing but the audit entry (refused requests, unseal, seal).
    AuditOnly,
    /// This handle becomes the writer: the stored fencing epoch goes up by
    /// one and writes from older epochs are refused from now on.
    TakeOver,
    /// A signed checkpoint of the audit log.
    AddCheckpoint {
        tree_size: u64,
        note: String,
        now: i64,
    },
    Checkin {
        id: String,
        principal: String,
        fingerprint: String,
        now: i64,
    },
    /// Ends a lease at its TTL: an open checkout whose `expires_at` has
    /// passed by `now` (refused as `lease_expired` if it has already ended,
    /// `lease_active` if its time has not come).
    ExpireCheckout {
        id: String,
        now: i64,
    },
    /// The owner (that certificate) moves an open lease's end to
    /// `expires_at`, at most to `created_at` + the secret's maximum lease
    /// (`max_lease` if it has none); `lease_max_exceeded` if it asks for an
    /// extension and that leaves none. An earlier end shortens it.
    RenewCheckout {
        id: String,
        principal: String,
        fingerprint: String,
        now: i64,
        expires_at: i64,
        max_lease: i64,
    },
    /// An admin ends an open lease early, with a reason.
    RevokeCheckout {
        id: String,
        by: String,
        reason: String,
        now: i64,
    },
    AddPrincipal(PrincipalRow),
    /// Replaces a wrapped data key if it is still under `from`.
    Rewrap {
        path: String,
        version: u64,
        from: u32,
        to: u32,
        wrapped_dek: Vec<u8>,
    },
}

/// What a write produced.
#[derive(Debug)]
#[non_exhaustive]
pub enum WriteOutcome {
    Done,
    /// The version a `PutSecret` created.
    Version(u64),
    /// A recorded checkout of `version`.
    CheckedOut {
        version: u64,
        exclusive: bool,
    },
    CheckedIn(CheckoutRow),
    /// Whether a `Rewrap` changed the row (false: someone else did first).
    Rewrapped(bool),
    /// A vote was recorded; the request's status after it.
    Voted(RequestStatus),
    /// The collected request.
    Collected(RequestRow),
    /// The fencing epoch a `TakeOver` set.
    Epoch(u64),
    /// The fingerprints a `RevokeName` revoked.
    Revoked(Vec<String>),
    /// The lease an `ExpireCheckout` ended.
    Expired(CheckoutRow),
    /// The lease after a `RenewCheckout` or `RevokeCheckout`.
    Checkout(CheckoutRow),
    /// The versions a `DestroyVersions` or `DeleteSecret` destroyed.
    Destroyed(Vec<u64>),
}

struct Job {
    op: WriteOp,
    /// The fencing epoch of the handle that submitted it.
    epoch: u64,
    audit: Option<AuditDrafts>,
    reply: mpsc::SyncSender<Result<WriteOutcome, StoreError>>,
}

pub(crate) struct Writer {
    /// None once dropped (closing the channel stops the thread).
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Writer {
    /// Stops the writer after the queued writes and waits until it has
    /// closed the database, so a dropped store is a closed store.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            // Never join from the writer thread itself (the writer runs no
            // caller code today, so this is only a guard).
            if t.thread().id() != thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Writer {
    pub(crate) fn start(conn: Connection, max_batch: usize, log: Arc<AuditLog>) -> Writer {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("vault-store-writer".into())
            .spawn(move || run(conn, rx, max_batch.max(1), log))
            .expect("spawning the storage writer thread");
        Writer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    pub(crate) fn submit(
        &self,
        epoch: u64,
        op: WriteOp,
        audit: Option<AuditDrafts>,
    ) -> Result<WriteOutcome, StoreError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx
            .as_ref()
            .ok_or(StoreError::WriterGone)?
            .send(Job {
                op,
                epoch,
                audit,
                reply,
            })
            .map_err(|_| StoreError::WriterGone)?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }
}

fn run(mut conn: Connection, rx: mpsc::Receiver<Job>, max_batch: usize, log: Arc<AuditLog>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, batch, &log);
    }
}

/// Position of the next entry while a batch is being built.
struct Cursor {
    next: u64,
    prev: Option<Hash>,
    leaves: Vec<Hash>,
}

fn append_entry(c: &Connection, cur: &mut Cursor, draft: Draft) -> Result<(), StoreError> {
    let bytes = draft.finalize(cur.next, cur.prev.as_ref());
    let leaf = leaf_hash(&bytes);
    c.execute(
        "INSERT INTO audit_log (idx, entry, leaf_hash) VALUES (?1, ?2, ?3)",
        params![cur.next as i64, bytes, leaf.to_vec()],
    )?;
    cur.next += 1;
    cur.prev = Some(leaf);
    cur.leaves.push(leaf);
    Ok(())
}

/// What only the write itself knows, added to its success entry: the
/// certificates a revocation or renewal revoked (a renewal chain included).
fn with_outcome(mut d: Draft, v: &WriteOutcome) -> Draft {
    if let WriteOutcome::Revoked(fps) = v {
        if !fps.is_empty() {
            d.details.insert("revoked".into(), fps.join(","));
        }
    }
    d
}

/// Runs one job in savepoints. The audit entry of a successful change
/// commits atomically with it; the entry of a refused change is written in
/// its own savepoint after the change is rolled back. If the entry cannot
/// be written, the job fails with `AuditUnavailable` and changes nothing.
fn run_job(
    c: &Connection,
    job_op: WriteOp,
    audit: Option<AuditDrafts>,
    cur: &mut Cursor,
) -> Result<WriteOutcome, StoreError> {
    let mark = (cur.next, cur.prev, cur.leaves.len());
    let undo = |cur: &mut Cursor| {
        cur.next = mark.0;
        cur.prev = mark.1;
        cur.leaves.truncate(mark.2);
    };
    c.execute_batch("SAVEPOINT op")?;
    let r = apply(c, job_op);
    match (r, audit) {
        (Ok(v), None) => {
            c.execute_batch("RELEASE op")?;
            Ok(v)
        }
        (Ok(v), Some(audit)) => match append_entry(c, cur, with_outcome(audit.success, &v)) {
            Ok(()) => {
                c.execute_batch("RELEASE op")?;
                Ok(v)
            }
            Err(e) => {
                undo(cur);
                let _ = c.execute_batch("ROLLBACK TO op; RELEASE op");
                tracing::error!(error = %e, "audit entry could not be written; the change is rolled back");
                Err(StoreError::AuditUnavailable(e.to_string()))
            }
        },
        (Err(e), audit) => {
            let _ = c.execute_batch("ROLLBACK TO op; RELEASE op");
            // A stale op is retried by its caller: only its final outcome
            // is recorded.
            if let (Some(audit), false) = (audit, matches!(e, StoreError::Stale(_))) {
                let draft = audit.refused(e.audit_outcome(), e.code());
                let ok = c
                    .execute_batch("SAVEPOINT entry")
                    .map_err(StoreError::from)
                    .and_then(|_| append_entry(c, cur, draft));
                match ok {
                    Ok(()) => c.execute_batch("RELEASE entry")?,
                    Err(ae) => {
                        undo(cur);
                        let _ = c.execute_batch("ROLLBACK TO entry; RELEASE entry");
                        return Err(StoreError::AuditUnavailable(ae.to_string()));
                    }
                }
            }
            Err(e)
        }
    }
}

fn commit_batch(conn: &mut Connection, batch: Vec<Job>, log: &AuditLog) {
    let fail_all = |batch: Vec<Job>, msg: String| {
        for job in batch {
            let e = if job.audit.is_some() {
                StoreError::AuditUnavailable(msg.clone())
            } else {
                StoreError::TransactionFailed(msg.clone())
            };
            let _ = job.reply.send(Err(e));
        }
    };
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        fail_all(batch, format!("begin: {e}"));
        return;
    }
    let (next, prev) = log.head();
    let mut cur = Cursor {
        next,
        prev,
        leaves: Vec::new(),
    };
    let mut results = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let mut fence = match stored_epoch(conn) {
        Ok(f) => f,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            fail_all(batch, format!("fencing epoch: {e}"));
            return;
        }
    };
    for job in batch {
        let audited = job.audit.is_some();
        // A writer that another has taken over from writes nothing, not
        // even an audit entry (the new writer owns the log).
        let r = if job.epoch < fence && !matches!(job.op, WriteOp::TakeOver) {
            Err(StoreError::Fenced {
                epoch: job.epoch,
                current: fence,
            })
        } else {
            run_job(conn, job.op, job.audit, &mut cur)
        };
        if let Ok(WriteOutcome::Epoch(e)) = &r {
            fence = *e;
        }
        results.push(r);
        replies.push((job.reply, audited));
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            // Durable: only now do the entries join the in-memory tree.
            log.extend(&cur.leaves);
            for ((reply, _), r) in replies.into_iter().zip(results) {
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batch = replies.len(), "group commit failed; every write in the batch fails");
            let _ = conn.execute_batch("ROLLBACK");
            let msg = format!("commit: {e}");
            for (reply, audited) in replies {
                let err = if audited {
                    StoreError::AuditUnavailable(msg.clone())
                } else {
                    StoreError::TransactionFailed(msg.clone())
                };
                let _ = reply.send(Err(err));
            }
        }
    }
}

fn apply(c: &Connection, op: WriteOp) -> Result<WriteOutcome, StoreError> {
    match op {
        WriteOp::Init {
            meta,
            keyring,
            principals,
            now,
        } => {
            let done: Option<i64> = c
                .query_row("SELECT 1 FROM meta WHERE key = 'sealed_root'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if done.is_some() {
                return Err(StoreError::Conflict(Conflict::AlreadyInitialized));
            }
            for (k, v) in meta {
                c.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                    params![k, v],
                )?;
            }
            add_keyring(c, &keyring, now)?;
            for p in principals {
                add_principal(c, &p)?;
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::SetMeta { key, value } => {
            c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::AddKeyringVersion { kv, now } => {
            add_keyring(c, &kv, now)?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::PutSecret {
            path,
            version,
            exclusive,
            max_lease_seconds,
            metadata,
            created_by,
            now,
            sealed,
        } => put_secret(
            c,
            NewVersion {
                path: &path,
                version,
                exclusive,
                max_lease_seconds,
                metadata,
                custody: None,
                created_by: &created_by,
                now,
            },
            sealed,
            Vec::new(),
        ),
        WriteOp::PutSealedSecret {
            path,
            version,
            metadata,
            custody,
            created_by,
            now,
            sealed,
        } => put_secret(
            c,
            NewVersion {
                path: &path,
                version,
                exclusive: None,
                max_lease_seconds: None,
                metadata,
                custody: Some(custody),
                created_by: &created_by,
                now,
            },
            SealedValue {
                key_version: 0,
                wrapped_dek: Vec::new(),
                ciphertext: sealed.ciphertext,
            },
            sealed.shares,
        ),
        WriteOp::RemoveCustodian { name, by, now } => {
            let n = c.execute(
                "UPDATE custodians SET removed_at = ?2, removed_by = ?3
                 WHERE name = ?1 AND removed_at IS NULL",
                params![name, now, by],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::SetCustodianGroups { name, groups } => {
            let groups =
                serde_json::to_string(&groups).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let n = c.execute(
                "UPDATE custodians SET groups = ?2 WHERE name = ?1 AND removed_at IS NULL",
                params![name, groups],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::EnrollCustodian(row) => {
            let exists: Option<i64> = c
                .query_row(
                    "SELECT 1 FROM custodians WHERE name = ?1",
                    [&row.name],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::Conflict(Conflict::AlreadyEnrolled));
            }
            let key_used: Option<i64> = c
                .query_row(
                    "SELECT 1 FROM custodians WHERE sig_key IN (?1, ?2) OR kex_key IN (?1, ?2)",
                    params![row.sig_key, row.kex_key],
                    |r| r.get(0),
                )
                .optional()?;
            if key_used.is_some() {
                return Err(StoreError::Conflict(Conflict::KeyAlreadyEnrolled));
            }
            let groups = serde_json::to_string(&row.groups)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            c.execute(
                "INSERT INTO custodians (name, groups, serial, firmware, pin_policy, touch_policy,
                   sig_key, kex_key, attestation, enrolled_at, enrolled_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    row.name,
                    groups,
                    row.serial,
                    row.firmware,
                    row.pin_policy,
                    row.touch_policy,
                    row.sig_key,
                    row.kex_key,
                    row.attestation,
                    row.enrolled_at,
                    row.enrolled_by
                ],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::Recover { meta, admin } => {
            let done: Option<i64> = c
                .query_row("SELECT 1 FROM meta WHERE key = 'sealed_root'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if done.is_none() {
                return Err(StoreError::Conflict(Conflict::NotInitialized));
            }
            for (k, v) in meta {
                c.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                    params![k, v],
                )?;
            }
            c.execute("UPDATE principals SET revoked = 1", [])?;
            add_principal(c, &admin)?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::SetApprovals {
            path,
            approvals,
            expect,
        } => {
            if let Some(e) = expect {
                if stored_approvals(c, &path)? != e {
                    return Err(StoreError::Conflict(Conflict::PolicyChanged));
                }
            }
            let n = c.execute(
                "UPDATE secrets SET approvals = ?2 WHERE path = ?1",
                params![path, approvals],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::SetPrefixApprovals {
            prefix,
            approvals,
            by,
            now,
            expect,
        } => {
            if !prefix.ends_with('/') {
                return Err(StoreError::Forbidden("a policy prefix ends with '/'"));
            }
            if let Some(e) = expect {
                if stored_approvals(c, &prefix)? != e {
                    return Err(StoreError::Conflict(Conflict::PolicyChanged));
                }
            }
            if approvals == "[]" {
                let n = c.execute("DELETE FROM prefix_policies WHERE prefix = ?1", [&prefix])?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
            } else {
                c.execute(
                    "INSERT INTO prefix_policies (prefix, approvals, set_at, set_by) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (prefix) DO UPDATE SET approvals = ?2, set_at = ?3, set_by = ?4",
                    params![prefix, approvals, now, by],
                )?;
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::Grant {
            principal,
            prefix,
            by,
            now,
        } => {
            let pam: i64 = c.query_row(
                "SELECT count(*) FROM principals WHERE name = ?1 AND role = 'pam' AND revoked = 0",
                [&principal],
                |r| r.get(0),
            )?;
            if pam == 0 {
                return Err(StoreError::NotFound);
            }
            let n = c.execute(
                "INSERT INTO grants (principal, prefix, granted_at, granted_by) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (principal, prefix) DO NOTHING",
                params![principal, prefix, now, by],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(Conflict::GrantExists));
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::AddPrincipalGranted {
            row,
            grants,
            by,
            now,
        } => {
            if row.role != Role::Pam && !grants.is_empty() {
                return Err(StoreError::Forbidden(
                    "only a pam principal has access grants",
                ));
            }
            add_principal(c, &row)?;
            for prefix in grants {
                c.execute(
                    "INSERT INTO grants (principal, prefix, granted_at, granted_by) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (principal, prefix) DO NOTHING",
                    params![row.name, prefix, now, by],
                )?;
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::Ungrant { principal, prefix } => {
            let n = c.execute(
                "DELETE FROM grants WHERE principal = ?1 AND prefix = ?2",
                params![principal, prefix],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::OpenRequest(r) => {
            if (r.kind == RequestKind::Governance) != r.change.is_some() {
                return Err(StoreError::Forbidden(
                    "a governance request, and only one, carries a change",
                ));
            }
            if r.kind != RequestKind::Governance {
                require_grant(c, &r.requester, &r.path)?;
            }
            c.execute(
                "INSERT INTO requests (id, kind, path, version, requester, reason, created_at, expires_at,
                   nonce, recipient_key, policy, ttl_seconds, status, requester_fingerprint, change)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    r.id,
                    Text(r.kind),
                    r.path,
                    r.version as i64,
                    r.requester,
                    r.reason,
                    r.created_at,
                    r.expires_at,
                    r.nonce.to_vec(),
                    r.recipient_key,
                    r.policy,
                    r.ttl_seconds as i64,
                    Text(RequestStatus::Pending),
                    holder_fingerprint(&r.requester_fingerprint)?,
                    r.change
                ],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::Vote {
            row,
            status,
            expect_votes,
        } => {
            let request_id = row.request_id.clone();
            read_request(c, &request_id)?.ok_or(StoreError::NotFound)?;
            if read_votes(c, &request_id)?.len() != expect_votes {
                return Err(StoreError::Stale("votes_changed"));
            }
            c.execute(
                "INSERT INTO votes (request_id, custodian, decision, signature, share, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    row.request_id,
                    row.custodian,
                    Text(row.decision),
                    row.signature,
                    row.share,
                    row.created_at
                ],
            )?;
            c.execute(
                "UPDATE requests SET status = ?2 WHERE id = ?1",
                params![request_id, Text(status)],
            )?;
            Ok(WriteOutcome::Voted(status))
        }
        WriteOp::Collect {
            request_id,
            requester,
            fingerprint,
            now,
            checkout,
        } => {
            let req = claim_approved(c, &request_id, &requester, &fingerprint, now)?;
            let checkout_id = match (req.kind, checkout) {
                (RequestKind::Checkout, Some((id, expires_at))) => {
                    insert_checkout(
                        c,
                        NewCheckout {
                            id: &id,
                            path: &req.path,
                            expect_version: Some(req.version),
                            named: None,
                            principal: &req.requester,
                            fingerprint: &fingerprint,
                            reason: &req.reason,
                            now,
                            expires_at,
                        },
                    )?;
                    Some(id)
                }
                (RequestKind::Breakglass, None) => {
                    require_grant(c, &req.requester, &req.path)?;
                    None
                }
                _ => return Err(StoreError::Conflict(Conflict::WrongRequestKind)),
            };
            c.execute(
                "UPDATE requests SET collected_at = ?2, checkout_id = ?3 WHERE id = ?1",
                params![request_id, now, checkout_id],
            )?;
            Ok(WriteOutcome::Collected(RequestRow {
                collected_at: Some(now),
                checkout_id,
                ..req
            }))
        }
        WriteOp::ApplyGovernance {
            request_id,
            requester,
            fingerprint,
            now,
            genesis,
            custodians,
            expect_approvals,
            op,
        } => {
            let req = claim_approved(c, &request_id, &requester, &fingerprint, now)?;
            if req.kind != RequestKind::Governance {
                return Err(StoreError::Conflict(Conflict::WrongRequestKind));
            }
            let rule = read_meta(c, GOVERNANCE_RULE)?;
            match (genesis, rule) {
                (true, Some(_)) => {
                    return Err(StoreError::Conflict(Conflict::GovernanceEstablished))
                }
                (false, None) => return Err(StoreError::Conflict(Conflict::GovernanceRequired)),
                (false, Some(r)) if r != req.policy.as_bytes() => {
                    return Err(StoreError::Conflict(Conflict::GovernanceChanged))
                }
                _ => {}
            }
            if crate::custodian_set(&read_custodians(c)?) != custodians {
                return Err(StoreError::Conflict(Conflict::CustodiansChanged));
            }
            if let Some((path, previous)) = expect_approvals {
                if stored_approvals(c, &path)? != previous {
                    return Err(StoreError::Conflict(Conflict::PolicyChanged));
                }
            }
            match *op {
                inner @ (WriteOp::EnrollCustodian(_)
                | WriteOp::RemoveCustodian { .. }
                | WriteOp::SetCustodianGroups { .. }
                | WriteOp::SetMeta { .. }
                | WriteOp::SetApprovals { .. }
                | WriteOp::SetPrefixApprovals { .. }
                | WriteOp::Grant { .. }
                | WriteOp::AddPrincipalGranted { .. }
                | WriteOp::AddPrincipal(_)
                | WriteOp::DestroyVersions { .. }
                | WriteOp::DeleteSecret { .. }
                | WriteOp::SetRotationPolicy { .. }) => {
                    apply(c, inner)?;
                }
                _ => {
                    return Err(StoreError::Forbidden(
                        "a governance change enrols, removes or regroups a custodian, sets governance metadata or approvals, adds a principal or a grant, destroys values or sets a rotation policy",
                    ))
                }
            }
            c.execute(
                "UPDATE requests SET collected_at = ?2 WHERE id = ?1",
                params![request_id, now],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::Checkout {
            id,
            path,
            expect_version,
            named,
            principal,
            fingerprint,
            reason,
            now,
            expires_at,
        } => insert_checkout(
            c,
            NewCheckout {
                id: &id,
                path: &path,
                expect_version,
                named,
                principal: &principal,
                fingerprint: &fingerprint,
                reason: &reason,
                now,
                expires_at,
            },
        ),
        WriteOp::Checkin {
            id,
            principal,
            fingerprint,
            now,
        } => {
            let row = owned_checkout(c, &id, &principal, &fingerprint)?;
            c.execute(
                "UPDATE checkouts SET checked_in_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            lease_ended(c, &row.path, "checkin", now)?;
            Ok(WriteOutcome::CheckedIn(CheckoutRow {
                checked_in_at: Some(now),
                ..row
            }))
        }
        WriteOp::SetRotationPolicy { row } => {
            live_secret(c, &row.path)?;
            if let Some(cred) = &row.credential {
                live_secret(c, cred)?;
            }
            c.execute(
                "INSERT INTO rotation_policies (path, policy, triggers, interval_seconds, credential, set_at, set_by,
                   cron, heartbeat_seconds)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (path) DO UPDATE SET policy = ?2, triggers = ?3, interval_seconds = ?4,
                   credential = ?5, set_at = ?6, set_by = ?7, cron = ?8, heartbeat_seconds = ?9,
                   checked_at = NULL, drift_at = NULL",
                params![
                    row.path,
                    row.policy,
                    row.triggers,
                    row.interval_seconds.map(|i| i as i64),
                    row.credential,
                    row.set_at,
                    row.set_by,
                    row.cron,
                    row.heartbeat_seconds.map(|i| i as i64)
                ],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::RemoveRotationPolicy { path } => {
            if rotation_state(c, &path)? == Some(RotationState::Applying) {
                return Err(StoreError::Conflict(Conflict::RotationInProgress));
            }
            // Without its one-time policy a used value could be handed out
            // again: it has to be rotated away first.
            if one_time(c, &path)? && current_handed_out(c, &path)? {
                return Err(StoreError::Conflict(Conflict::OneTimeUsed));
            }
            let n = c.execute("DELETE FROM rotation_policies WHERE path = ?1", [&path])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            c.execute("DELETE FROM rotations WHERE path = ?1", [&path])?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::RequestRotation { path, trigger, now } => {
            let has: Option<i64> = c
                .query_row(
                    "SELECT 1 FROM rotation_policies WHERE path = ?1",
                    [&path],
                    |r| r.get(0),
                )
                .optional()?;
            if has.is_none() {
                return Err(StoreError::NotFound);
            }
            live_secret(c, &path)?;
            c.execute(
                "DELETE FROM rotations WHERE path = ?1 AND state = 'failed'",
                [&path],
            )?;
            start_rotation(c, &path, &trigger, now)?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::RotationPending {
            path,
            expect_current,
            sealed,
        } => {
            if rotation_state(c, &path)? != Some(RotationState::Due) {
                return Err(StoreError::Conflict(Conflict::RotationChanged));
            }
            let (current, _) = live_secret(c, &path)?;
            if current != expect_current {
                return Err(StoreError::Conflict(Conflict::VersionChanged));
            }
            c.execute(
                "UPDATE rotations SET state = 'pending', pending_version = ?2, key_version = ?3,
                   wrapped_dek = ?4, ciphertext = ?5
                 WHERE path = ?1",
                params![
                    path,
                    (current + 1) as i64,
                    sealed.key_version,
                    sealed.wrapped_dek,
                    sealed.ciphertext
                ],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::RotationStep {
            path,
            from,
            to,
            attempt,
            next_at,
        } => {
            if rotation_state(c, &path)? != Some(from) {
                return Err(StoreError::Conflict(Conflict::RotationChanged));
            }
            let (inc, err) = match &attempt {
                Some((e, _)) => (1, Some(e.clone())),
                None => (0, None),
            };
            c.execute(
                "UPDATE rotations SET state = ?2, attempts = attempts + ?3,
                   last_error = coalesce(?4, last_error), next_at = ?5
                 WHERE path = ?1",
                params![path, to.as_str(), inc, err, next_at],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::Heartbeat {
            path,
            policy_set_at,
            expect,
            accepted,
            now,
        } => {
            let set_at: Option<i64> = c
                .query_row(
                    "SELECT set_at FROM rotation_policies WHERE path = ?1",
                    [&path],
                    |r| r.get(0),
                )
                .optional()?;
            match set_at {
                None => return Err(StoreError::NotFound),
                Some(t) if t != policy_set_at => {
                    return Err(StoreError::Conflict(Conflict::RotationChanged))
                }
                Some(_) => {}
            }
            if rotation_state(c, &path)?.is_some() {
                return Err(StoreError::Conflict(Conflict::RotationChanged));
            }
            let (current, _) = live_secret(c, &path)?;
            if current != expect {
                return Err(StoreError::Conflict(Conflict::VersionChanged));
            }
            let n = c.execute(
                "UPDATE rotation_policies SET checked_at = ?2,
                   drift_at = CASE WHEN ?3 IS NULL THEN drift_at WHEN ?3 THEN NULL
                                   ELSE coalesce(drift_at, ?2) END
                 WHERE path = ?1",
                params![path, now, accepted],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::RotationPromote { path, now } => {
            let row = read_rotation(c, &path)?.ok_or(StoreError::NotFound)?;
            let (Some((version, sealed)), RotationState::Applying) = (row.pending, row.state)
            else {
                return Err(StoreError::Conflict(Conflict::RotationChanged));
            };
            let (current, _) = live_secret(c, &path)?;
            if current + 1 != version {
                return Err(StoreError::Conflict(Conflict::VersionChanged));
            }
            c.execute(
                "INSERT INTO secret_versions (path, version, key_version, wrapped_dek, ciphertext, created_at, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'vaultd rotation')",
                params![
                    path,
                    version as i64,
                    sealed.key_version,
                    sealed.wrapped_dek,
                    sealed.ciphertext,
                    now
                ],
            )?;
            c.execute(
                "UPDATE secrets SET current_version = ?2, updated_at = ?3 WHERE path = ?1",
                params![path, version as i64, now],
            )?;
            c.execute("DELETE FROM rotations WHERE path = ?1", [&path])?;
            c.execute(
                "UPDATE rotation_policies SET last_rotated_at = ?2, checked_at = ?2, drift_at = NULL
                 WHERE path = ?1",
                params![path, now],
            )?;
            Ok(WriteOutcome::Version(version))
        }
        WriteOp::DestroyVersions {
            path,
            versions,
            by,
            now,
        } => {
            let (current, _) = live_secret(c, &path)?;
            let mut done = Vec::new();
            for v in versions {
                if v == current {
                    return Err(StoreError::Conflict(Conflict::VersionCurrent));
                }
                if destroy_version(c, &path, v, &by, now)? {
                    done.push(v);
                }
            }
            Ok(WriteOutcome::Destroyed(done))
        }
        WriteOp::DeleteSecret { path, by, now } => {
            let (current, _) = live_secret(c, &path)?;
            let mut done = Vec::new();
            for v in 1..=current {
                if destroy_version(c, &path, v, &by, now)? {
                    done.push(v);
                }
            }
            c.execute(
                "UPDATE secrets SET deleted_at = ?2, deleted_by = ?3, updated_at = ?2 WHERE path = ?1",
                params![path, now, by],
            )?;
            // Nothing left to rotate (a later write starts without a policy).
            c.execute("DELETE FROM rotations WHERE path = ?1", [&path])?;
            c.execute("DELETE FROM rotation_policies WHERE path = ?1", [&path])?;
            Ok(WriteOutcome::Destroyed(done))
        }
        WriteOp::RecordSession {
            id,
            principal,
            fingerprint,
            started_at,
        } => {
            let row = read_checkout(c, &id)?.ok_or(StoreError::NotFound)?;
            let holder = same_holder(&row.principal, &row.fingerprint, &principal, &fingerprint)
                || (row.principal == principal
                    && renewal_ancestors(c, &fingerprint)?.contains(&row.fingerprint));
            if !holder {
                return Err(StoreError::Forbidden(
                    "the checkout belongs to another principal or certificate",
                ));
            }
            if started_at < row.created_at.saturating_sub(RECORDING_SKEW) {
                return Err(StoreError::Conflict(Conflict::RecordingBeforeCheckout));
            }
            Ok(WriteOutcome::Checkout(row))
        }
        WriteOp::ExpireCheckout { id, now } => {
            let row = open_checkout(c, &id)?;
            if row.expires_at > now {
                return Err(StoreError::Conflict(Conflict::LeaseActive));
            }
            c.execute(
                "UPDATE checkouts SET expired_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            lease_ended(c, &row.path, "expiry", now)?;
            Ok(WriteOutcome::Expired(CheckoutRow {
                expired_at: Some(now),
                ..row
            }))
        }
        WriteOp::RenewCheckout {
            id,
            principal,
            fingerprint,
            now,
            expires_at,
            max_lease,
        } => {
            let row = owned_checkout(c, &id, &principal, &fingerprint)?;
            renew_checkout(c, row, now, expires_at, max_lease)
        }
        WriteOp::RevokeCheckout {
            id,
            by,
            reason,
            now,
        } => {
            let row = open_checkout(c, &id)?;
            c.execute(
                "UPDATE checkouts SET checked_in_at = ?2, revoked_by = ?3, revoke_reason = ?4 WHERE id = ?1",
                params![id, now, by, reason],
            )?;
            // An admin ending a lease early: the value is rotated as at expiry.
            lease_ended(c, &row.path, "expiry", now)?;
            Ok(WriteOutcome::Checkout(CheckoutRow {
                checked_in_at: Some(now),
                revoked: Some((by, reason)),
                ..row
            }))
        }
        WriteOp::RevokeName { name, now } => {
            let mut st = c.prepare_cached(
                "SELECT fingerprint, role FROM principals WHERE name = ?1 AND revoked = 0 ORDER BY fingerprint",
            )?;
            let rows = st
                .query_map([&name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            if rows.is_empty() {
                return Err(StoreError::NotFound);
            }
            if rows.iter().any(|(_, role)| role == Role::Admin.as_str()) {
                keep_an_admin(c, "name <> ?1", &name, now)?;
            }
            c.execute(
                "UPDATE principals SET revoked = 1 WHERE name = ?1 AND revoked = 0",
                [&name],
            )?;
            drop_orphan_grants(c, &name)?;
            Ok(WriteOutcome::Revoked(
                rows.into_iter().map(|(fp, _)| fp).collect(),
            ))
        }
        WriteOp::RevokePrincipal { fingerprint, now } => {
            // Read as text: revoking must work also for a row whose role
            // this build does not know (it is not an admin either way).
            let role: String = c
                .query_row(
                    "SELECT role FROM principals WHERE fingerprint = ?1",
                    [&fingerprint],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            let chain = renewal_chain(c, &fingerprint)?;
            if role == Role::Admin.as_str() {
                keep_an_admin(c, OUTSIDE_CHAIN, &fingerprint, now)?;
            }
            for fp in &chain {
                c.execute(
                    "UPDATE principals SET revoked = 1 WHERE fingerprint = ?1",
                    [fp],
                )?;
            }
            let name: String = c.query_row(
                "SELECT name FROM principals WHERE fingerprint = ?1",
                [&fingerprint],
                |r| r.get(0),
            )?;
            drop_orphan_grants(c, &name)?;
            Ok(WriteOutcome::Revoked(chain))
        }
        WriteOp::RenewPrincipal { old, new, now } => {
            let prev = c
                .query_row(
                    "SELECT name, role, not_after, revoked FROM principals WHERE fingerprint = ?1",
                    [&old],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)? != 0,
                        ))
                    },
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            let (name, role, not_after, revoked) = prev;
            if name != new.name
                || role != new.role.as_str()
                || new.renewed_from.as_deref() != Some(old.as_str())
            {
                return Err(StoreError::Forbidden(
                    "a renewal keeps the certificate's name and role and names it",
                ));
            }
            if revoked || not_after <= now {
                return Err(StoreError::Conflict(Conflict::RenewalClosed));
            }
            let mut st = c.prepare_cached(
                "SELECT fingerprint FROM principals WHERE renewed_from = ?1 AND revoked = 0 ORDER BY fingerprint",
            )?;
            let replaced = st
                .query_map([&old], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            for fp in &replaced {
                for f in renewal_chain(c, fp)? {
                    c.execute(
                        "UPDATE principals SET revoked = 1 WHERE fingerprint = ?1",
                        [&f],
                    )?;
                }
            }
            add_principal(c, &new)?;
            Ok(WriteOutcome::Revoked(replaced))
        }
        WriteOp::RetirePredecessor { fingerprint } => {
            let row = c
                .query_row(
                    "SELECT renewed_from, revoked FROM principals WHERE fingerprint = ?1",
                    [&fingerprint],
                    |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)? != 0)),
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            let (Some(old), false) = row else {
                return Ok(WriteOutcome::Revoked(Vec::new()));
            };
            let n = c.execute(
                "UPDATE principals SET revoked = 1 WHERE fingerprint = ?1 AND revoked = 0",
                [&old],
            )?;
            if n == 0 {
                return Ok(WriteOutcome::Revoked(Vec::new()));
            }
            c.execute(
                "UPDATE checkouts SET fingerprint = ?2 WHERE fingerprint = ?1 AND checked_in_at IS NULL",
                params![old, fingerprint],
            )?;
            c.execute(
                "UPDATE requests SET requester_fingerprint = ?2 WHERE requester_fingerprint = ?1 AND collected_at IS NULL",
                params![old, fingerprint],
            )?;
            Ok(WriteOutcome::Revoked(vec![old]))
        }
        WriteOp::AuditOnly => Ok(WriteOutcome::Done),
        WriteOp::TakeOver => {
            let next = stored_epoch(c)?
                .checked_add(1)
                .ok_or_else(|| StoreError::Corrupt("fencing epoch overflow".into()))?;
            c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('fence_epoch', ?1)",
                [next.to_string().into_bytes()],
            )?;
            Ok(WriteOutcome::Epoch(next))
        }
        WriteOp::AddCheckpoint {
            tree_size,
            note,
            now,
        } => {
            c.execute(
                "INSERT OR IGNORE INTO audit_checkpoints (tree_size, note, created_at) VALUES (?1, ?2, ?3)",
                params![tree_size as i64, note, now],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::AddPrincipal(p) => {
            add_principal(c, &p)?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::Rewrap {
            path,
            version,
            from,
            to,
            wrapped_dek,
        } => {
            let n = c.execute(
                "UPDATE secret_versions SET key_version = ?4, wrapped_dek = ?5
                 WHERE path = ?1 AND version = ?2 AND key_version = ?3",
                params![path, version as i64, from, to, wrapped_dek],
            )?;
            Ok(WriteOutcome::Rewrapped(n == 1))
        }
    }
}

fn add_keyring(c: &Connection, kv: &KeyringVersion, now: i64) -> Result<(), StoreError> {
    let n = c.execute(
        "INSERT OR IGNORE INTO keyring (version, salt, created_at) VALUES (?1, ?2, ?3)",
        params![kv.version, kv.salt.to_vec(), now],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(Conflict::KeyringVersionExists));
    }
    Ok(())
}

/// Refuses a revocation that would leave no unrevoked, unexpired admin
/// certificate outside `others` (a SQL condition on `?1`): that would lock
/// everyone out of issuance, unseal and rotation for good.
fn keep_an_admin(c: &Connection, others: &str, key: &str, now: i64) -> Result<(), StoreError> {
    let n: i64 = c.query_row(
        &format!(
            "SELECT count(*) FROM principals WHERE role = 'admin' AND revoked = 0 AND not_after > ?2 AND {others}"
        ),
        params![key, now],
        |r| r.get(0),
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(Conflict::LastAdmin));
    }
    Ok(())
}

/// The certificates of the renewal chain that starts at `?1`.
const CHAIN: &str = "WITH RECURSIVE chain(fp) AS (
         SELECT ?1
         UNION SELECT p.fingerprint FROM principals p JOIN chain ON p.renewed_from = chain.fp
     )
     SELECT fp FROM chain";

/// A [`keep_an_admin`] condition: outside the renewal chain of `?1`.
const OUTSIDE_CHAIN: &str = "fingerprint NOT IN (WITH RECURSIVE chain(fp) AS (
         SELECT ?1
         UNION SELECT p.fingerprint FROM principals p JOIN chain ON p.renewed_from = chain.fp
     )
     SELECT fp FROM chain)";

/// How far (seconds) a session recording's start may lie before its
/// checkout: the PAM server's clock against the appliance's.
pub const RECORDING_SKEW: i64 = 300;

/// The certificates `fingerprint` renews, transitively (nearest first;
/// bounded, since a chain of renewals is short).
fn renewal_ancestors(c: &Connection, fingerprint: &str) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut cur = fingerprint.to_owned();
    while out.len() < 64 {
        let prev: Option<String> = c
            .query_row(
                "SELECT renewed_from FROM principals WHERE fingerprint = ?1",
                [&cur],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        match prev {
            Some(p) if !out.contains(&p) => {
                out.push(p.clone());
                cur = p;
            }
            _ => break,
        }
    }
    Ok(out)
}

/// A certificate and every renewal made from it, transitively (itself
/// first).
fn renewal_chain(c: &Connection, fingerprint: &str) -> Result<Vec<String>, StoreError> {
    let mut st = c.prepare_cached(CHAIN)?;
    let rows = st
        .query_map([fingerprint], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn add_principal(c: &Connection, p: &PrincipalRow) -> Result<(), StoreError> {
    // A name is one principal with one role, for good: new certificates for
    // a name (renewals) must keep its role, since checkouts, requests and
    // audit entries are recorded by name; a revoked name does not come
    // back with another role either.
    let other_role: Option<String> = c
        .query_row(
            "SELECT role FROM principals WHERE name = ?1 AND role <> ?2 LIMIT 1",
            params![p.name, Text(p.role)],
            |r| r.get(0),
        )
        .optional()?;
    if other_role.is_some() {
        return Err(StoreError::Conflict(Conflict::NameInUse));
    }
    c.execute(
        "INSERT INTO principals (fingerprint, name, role, serial, not_after, issued_at, revoked, renewed_from)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            p.fingerprint,
            p.name,
            Text(p.role),
            p.serial,
            p.not_after,
            p.issued_at,
            p.revoked as i64,
            p.renewed_from
        ],
    )?;
    Ok(())
}

pub(crate) fn prefix_policy_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PrefixPolicy> {
    Ok(PrefixPolicy {
        prefix: r.get(0)?,
        approvals: r.get(1)?,
        set_at: r.get(2)?,
        set_by: r.get(3)?,
    })
}

/// The prefix policies whose prefix `path` starts with, shortest first.
pub(crate) fn prefix_policies_over(
    c: &Connection,
    path: &str,
) -> Result<Vec<PrefixPolicy>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT prefix, approvals, set_at, set_by FROM prefix_policies
         WHERE substr(?1, 1, length(prefix)) = prefix ORDER BY length(prefix)",
    )?;
    let rows = st.query_map([path], prefix_policy_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A checkout whose lease has not ended: `already_checked_in` if it was
/// checked in or revoked, `lease_expired` if the reaper ended it.
fn open_checkout(c: &Connection, id: &str) -> Result<CheckoutRow, StoreError> {
    still_open(read_checkout(c, id)?.ok_or(StoreError::NotFound)?)
}

fn still_open(row: CheckoutRow) -> Result<CheckoutRow, StoreError> {
    if row.checked_in_at.is_some() {
        return Err(StoreError::Conflict(Conflict::AlreadyCheckedIn));
    }
    if row.expired_at.is_some() {
        return Err(StoreError::Conflict(Conflict::LeaseExpired));
    }
    Ok(row)
}

/// A new row's certificate fingerprint: never empty, since an empty one
/// would bind the row to the name alone.
fn holder_fingerprint(fp: &str) -> Result<&str, StoreError> {
    if fp.is_empty() {
        return Err(StoreError::Forbidden(
            "a checkout or request needs the certificate that makes it",
        ));
    }
    Ok(fp)
}

/// Whether `(name, fingerprint)` is the holder a row was made by: the same
/// name and the same certificate (a row from before schema 5 has no
/// fingerprint and is bound to the name only).
fn same_holder(row_name: &str, row_fp: &str, name: &str, fp: &str) -> bool {
    row_name == name && (row_fp.is_empty() || row_fp == fp)
}

/// An open checkout made by this principal's certificate (forbidden if by
/// another principal, or by another certificate of the same name).
fn owned_checkout(
    c: &Connection,
    id: &str,
    principal: &str,
    fingerprint: &str,
) -> Result<CheckoutRow, StoreError> {
    let row = read_checkout(c, id)?.ok_or(StoreError::NotFound)?;
    if !same_holder(&row.principal, &row.fingerprint, principal, fingerprint) {
        return Err(StoreError::Forbidden(
            "the checkout belongs to another principal or certificate",
        ));
    }
    still_open(row)
}

fn renew_checkout(
    c: &Connection,
    row: CheckoutRow,
    now: i64,
    wanted: i64,
    max_lease: i64,
) -> Result<WriteOutcome, StoreError> {
    let id = row.id.clone();
    // Its time is up even if the reaper has not looked yet.
    if row.expires_at <= now {
        return Err(StoreError::Conflict(Conflict::LeaseExpired));
    }
    let per_secret: Option<i64> = c
        .query_row(
            "SELECT max_lease_seconds FROM secrets WHERE path = ?1",
            [&row.path],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let limit = row
        .created_at
        .saturating_add(per_secret.unwrap_or(max_lease));
    // A renewal may also shorten the lease (narrowing needs no limit); one
    // that asks for more but can get none is refused.
    let expires_at = wanted.min(limit);
    if wanted > row.expires_at && expires_at <= row.expires_at {
        return Err(StoreError::Conflict(Conflict::LeaseMaxExceeded));
    }
    c.execute(
        "UPDATE checkouts SET expires_at = ?2, renewals = renewals + 1 WHERE id = ?1",
        params![id, expires_at],
    )?;
    Ok(WriteOutcome::Checkout(CheckoutRow {
        expires_at,
        renewals: row.renewals.saturating_add(1),
        ..row
    }))
}

pub(crate) fn read_checkout(c: &Connection, id: &str) -> Result<Option<CheckoutRow>, StoreError> {
    Ok(c.query_row(
        concat!(select_checkouts!(), "WHERE id = ?1"),
        [id],
        checkout_from_row,
    )
    .optional()?)
}

/// `SELECT` of every checkout column, in the order [`checkout_from_row`] reads.
macro_rules! select_checkouts {
    () => {
        "SELECT id, path, version, principal, reason, exclusive, created_at, expires_at,
                checked_in_at, expired_at, renewals, revoked_by, revoke_reason, fingerprint
         FROM checkouts "
    };
}
pub(crate) use select_checkouts;

pub(crate) fn checkout_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckoutRow> {
    Ok(CheckoutRow {
        id: r.get(0)?,
        path: r.get(1)?,
        version: r.get::<_, i64>(2)? as u64,
        principal: r.get(3)?,
        reason: r.get(4)?,
        exclusive: r.get::<_, i64>(5)? != 0,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        checked_in_at: r.get(8)?,
        expired_at: r.get(9)?,
        renewals: r.get::<_, i64>(10)?.try_into().unwrap_or(u32::MAX),
        revoked: match (
            r.get::<_, Option<String>>(11)?,
            r.get::<_, Option<String>>(12)?,
        ) {
            (Some(by), Some(why)) => Some((by, why)),
            _ => None,
        },
        fingerprint: r.get::<_, Option<String>>(13)?.unwrap_or_default(),
    })
}

/// What a new secret version records besides its ciphertext.
struct NewVersion<'a> {
    path: &'a str,
    version: u64,
    exclusive: Option<bool>,
    max_lease_seconds: Option<u64>,
    metadata: Option<Value>,
    custody: Option<String>,
    created_by: &'a str,
    now: i64,
}

fn put_secret(
    c: &Connection,
    v: NewVersion<'_>,
    sealed: SealedValue,
    shares: Vec<(String, Vec<u8>)>,
) -> Result<WriteOutcome, StoreError> {
    let NewVersion {
        path,
        version: wanted,
        exclusive,
        max_lease_seconds,
        metadata,
        custody,
        created_by,
        now,
    } = v;
    let tier = if custody.is_some() {
        "sealed"
    } else {
        "standard"
    };
    let existing = c
        .query_row(
            "SELECT current_version, exclusive, metadata, tier FROM secrets WHERE path = ?1",
            [path],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? != 0,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()?;
    if matches!(
        rotation_state(c, path)?,
        Some(RotationState::Pending | RotationState::Applying)
    ) {
        return Err(StoreError::Conflict(Conflict::RotationInProgress));
    }
    if let Some(e) = &existing {
        // A secret keeps its tier: a standard version of a sealed secret
        // would put it back under the root key, and a sealed version of a
        // standard secret would leave its old versions readable.
        if e.3 != tier {
            return Err(StoreError::Conflict(Conflict::TierMismatch));
        }
    }
    let version = match &existing {
        Some((v, ..)) => v
            .checked_add(1)
            .ok_or(StoreError::Corrupt(format!("{path}: version overflow")))?,
        None => 1,
    };
    if version != wanted {
        // The value was encrypted for another version number.
        return Err(StoreError::Stale("version_changed"));
    }
    let exclusive = exclusive.unwrap_or(existing.as_ref().map(|e| e.1).unwrap_or(false));
    let metadata = match metadata {
        Some(m) => m.to_string(),
        None => existing
            .as_ref()
            .map(|e| e.2.clone())
            .unwrap_or_else(|| "{}".into()),
    };
    let max_lease = max_lease_seconds.map(|m| m as i64);
    if existing.is_some() {
        c.execute(
            "UPDATE secrets SET current_version = ?2, exclusive = ?3, metadata = ?4, updated_at = ?5,
               custody = coalesce(?6, custody), max_lease_seconds = coalesce(?7, max_lease_seconds),
               deleted_at = NULL, deleted_by = NULL
             WHERE path = ?1",
            params![path, version as i64, exclusive as i64, metadata, now, custody, max_lease],
        )?;
    } else {
        c.execute(
            "INSERT INTO secrets (path, exclusive, current_version, metadata, created_at, updated_at, tier, custody,
               max_lease_seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)",
            params![path, exclusive as i64, version as i64, metadata, now, tier, custody, max_lease],
        )?;
    }
    c.execute(
        "INSERT INTO secret_versions (path, version, key_version, wrapped_dek, ciphertext, created_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            path,
            version as i64,
            sealed.key_version,
            sealed.wrapped_dek,
            sealed.ciphertext,
            now,
            created_by
        ],
    )?;
    for (custodian, envelope) in shares {
        c.execute(
            "INSERT INTO sealed_shares (path, version, custodian, envelope) VALUES (?1, ?2, ?3, ?4)",
            params![path, version as i64, custodian, envelope],
        )?;
    }
    Ok(WriteOutcome::Version(version))
}

/// The state of `path`'s rotation in flight, if any.
pub(crate) fn rotation_state(
    c: &Connection,
    path: &str,
) -> Result<Option<RotationState>, StoreError> {
    let s: Option<String> = c
        .query_row("SELECT state FROM rotations WHERE path = ?1", [path], |r| {
            r.get(0)
        })
        .optional()?;
    s.map(|s| {
        RotationState::parse(&s)
            .ok_or_else(|| StoreError::Corrupt(format!("rotation of {path}: state {s}")))
    })
    .transpose()
}

/// Starts a rotation of `path` unless one is in flight.
fn start_rotation(c: &Connection, path: &str, trigger: &str, now: i64) -> Result<(), StoreError> {
    c.execute(
        "INSERT OR IGNORE INTO rotations (path, state, trigger, attempts, next_at, started_at)
         VALUES (?1, 'due', ?2, 0, ?3, ?3)",
        params![path, trigger, now],
    )?;
    Ok(())
}

/// A lease of `path` ended (`trigger` = `checkin` or `expiry`): a rotation
/// starts if the secret's policy has that trigger, in the same transaction.
fn lease_ended(c: &Connection, path: &str, trigger: &str, now: i64) -> Result<(), StoreError> {
    let triggers = policy_triggers(c, path)?;
    if triggers.is_some_and(|t| t.split(',').any(|x| x == trigger || x == ONE_TIME)) {
        start_rotation(c, path, trigger, now)?;
    }
    Ok(())
}

/// The comma-separated triggers of the secret's rotation policy, if it has
/// one.
fn policy_triggers(c: &Connection, path: &str) -> Result<Option<String>, StoreError> {
    Ok(c.query_row(
        "SELECT triggers FROM rotation_policies WHERE path = ?1",
        [path],
        |r| r.get(0),
    )
    .optional()?)
}

/// The trigger of one-time-password mode, as stored in
/// `rotation_policies.triggers`.
const ONE_TIME: &str = "one_time";

/// Whether the secret's current version was ever checked out (by anyone;
/// open or ended).
fn current_handed_out(c: &Connection, path: &str) -> Result<bool, StoreError> {
    let handed_out: Option<i64> = c
        .query_row(
            "SELECT 1 FROM checkouts k JOIN secrets s ON s.path = k.path
             WHERE k.path = ?1 AND k.version = s.current_version LIMIT 1",
            [path],
            |r| r.get(0),
        )
        .optional()?;
    Ok(handed_out.is_some())
}

/// Whether the secret's rotation policy hands each value out once.
fn one_time(c: &Connection, path: &str) -> Result<bool, StoreError> {
    let triggers = policy_triggers(c, path)?;
    Ok(triggers.is_some_and(|t| t.split(',').any(|x| x == ONE_TIME)))
}

/// The columns [`rotation_from_row`] reads, in its order.
pub(crate) const ROTATION_SELECT: &str =
    "SELECT path, state, trigger, attempts, next_at, last_error, started_at, pending_version,
            key_version, wrapped_dek, ciphertext
     FROM rotations";

pub(crate) fn read_rotation(c: &Connection, path: &str) -> Result<Option<RotationRow>, StoreError> {
    let row = c
        .query_row(
            &format!("{ROTATION_SELECT} WHERE path = ?1"),
            [path],
            rotation_from_row,
        )
        .optional()?;
    row.transpose()
}

/// A `rotations` row (the inner result: a state this build does not know
/// is corrupt, never a default).
pub(crate) fn rotation_from_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<RotationRow, StoreError>> {
    let path: String = r.get(0)?;
    let state: String = r.get(1)?;
    let pending = match (
        r.get::<_, Option<i64>>(7)?,
        r.get::<_, Option<i64>>(8)?,
        r.get::<_, Option<Vec<u8>>>(9)?,
        r.get::<_, Option<Vec<u8>>>(10)?,
    ) {
        (Some(v), Some(kv), Some(w), Some(ct)) => Some((
            v as u64,
            SealedValue {
                key_version: kv as u32,
                wrapped_dek: w,
                ciphertext: ct,
            },
        )),
        _ => None,
    };
    let Some(state) = RotationState::parse(&state) else {
        return Ok(Err(StoreError::Corrupt(format!(
            "rotation of {path}: state {state}"
        ))));
    };
    Ok(Ok(RotationRow {
        state,
        trigger: r.get(2)?,
        attempts: r.get::<_, i64>(3)? as u32,
        next_at: r.get(4)?,
        last_error: r.get(5)?,
        started_at: r.get(6)?,
        pending,
        path,
    }))
}

/// A name left with no unrevoked certificate loses its access grants: a
/// certificate issued for it later (a new key, perhaps a new holder)
/// starts from default deny, and whoever approves that issuance sees every
/// grant it gets.
fn drop_orphan_grants(c: &Connection, name: &str) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM grants WHERE principal = ?1
           AND NOT EXISTS (SELECT 1 FROM principals WHERE name = ?1 AND revoked = 0)",
        [name],
    )?;
    Ok(())
}

/// A secret that is not deleted: its current version and whether it is
/// exclusive (not found otherwise).
fn live_secret(c: &Connection, path: &str) -> Result<(u64, bool), StoreError> {
    c.query_row(
        "SELECT current_version, exclusive FROM secrets WHERE path = ?1 AND deleted_at IS NULL",
        [path],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? != 0)),
    )
    .optional()?
    .ok_or(StoreError::NotFound)
}

/// A version's `destroyed_at` (outer `None`: no such version).
fn version_destroyed(
    c: &Connection,
    path: &str,
    version: u64,
) -> Result<Option<Option<i64>>, StoreError> {
    Ok(c.query_row(
        "SELECT destroyed_at FROM secret_versions WHERE path = ?1 AND version = ?2",
        params![path, version as i64],
        |r| r.get(0),
    )
    .optional()?)
}

/// Erases a version's value (false: destroyed already; not found: no such
/// version).
fn destroy_version(
    c: &Connection,
    path: &str,
    version: u64,
    by: &str,
    now: i64,
) -> Result<bool, StoreError> {
    match version_destroyed(c, path, version)? {
        None => return Err(StoreError::NotFound),
        Some(Some(_)) => return Ok(false),
        Some(None) => {}
    }
    c.execute(
        "UPDATE secret_versions SET key_version = 0, wrapped_dek = x'', ciphertext = x'',
           destroyed_at = ?3, destroyed_by = ?4
         WHERE path = ?1 AND version = ?2",
        params![path, version as i64, now, by],
    )?;
    c.execute(
        "DELETE FROM sealed_shares WHERE path = ?1 AND version = ?2",
        params![path, version as i64],
    )?;
    Ok(true)
}

/// A checkout to record.
struct NewCheckout<'a> {
    id: &'a str,
    path: &'a str,
    expect_version: Option<u64>,
    named: Option<u64>,
    principal: &'a str,
    fingerprint: &'a str,
    reason: &'a str,
    now: i64,
    expires_at: i64,
}

/// Default deny: a grant of `principal` must cover `path`, checked in the
/// transaction that records the disclosure, so a grant removed a moment
/// before is never used.
fn require_grant(c: &Connection, principal: &str, path: &str) -> Result<(), StoreError> {
    let mut st = c.prepare_cached("SELECT prefix FROM grants WHERE principal = ?1")?;
    let prefixes = st.query_map([principal], |r| r.get::<_, String>(0))?;
    for p in prefixes {
        if crate::grant_covers(&p?, path) {
            return Ok(());
        }
    }
    Err(StoreError::NotGranted)
}

fn insert_checkout(c: &Connection, n: NewCheckout<'_>) -> Result<WriteOutcome, StoreError> {
    let NewCheckout {
        id,
        path,
        expect_version,
        named,
        principal,
        fingerprint,
        reason,
        now,
        expires_at,
    } = n;
    require_grant(c, principal, path)?;
    let (current, exclusive, max_lease) = c
        .query_row(
            "SELECT current_version, exclusive, max_lease_seconds FROM secrets
             WHERE path = ?1 AND deleted_at IS NULL",
            [path],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? != 0,
                    r.get::<_, Option<i64>>(2)?,
                ))
            },
        )
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let use_only: Option<i64> = c
        .query_row(
            "SELECT 1 FROM rotation_policies WHERE credential = ?1 LIMIT 1",
            [path],
            |r| r.get(0),
        )
        .optional()?;
    if use_only.is_some() {
        return Err(StoreError::Conflict(Conflict::UseOnly));
    }
    let state = rotation_state(c, path)?;
    if state == Some(RotationState::Applying) {
        return Err(StoreError::Conflict(Conflict::RotationInProgress));
    }
    if one_time(c, path)? {
        // A value is handed out once: not an older version, not while a
        // new one is on its way, not the current one a second time.
        if named.is_some() {
            return Err(StoreError::Conflict(Conflict::OneTimeUsed));
        }
        if matches!(state, Some(RotationState::Due | RotationState::Pending)) {
            return Err(StoreError::Conflict(Conflict::RotationInProgress));
        }
        if current_handed_out(c, path)? {
            return Err(StoreError::Conflict(Conflict::OneTimeUsed));
        }
    }
    let version = match named {
        Some(v) => {
            let destroyed = version_destroyed(c, path, v)?.ok_or(StoreError::NotFound)?;
            if destroyed.is_some() {
                return Err(StoreError::Conflict(Conflict::VersionDestroyed));
            }
            v
        }
        None => {
            if expect_version.is_some_and(|v| v != current) {
                return Err(StoreError::Conflict(Conflict::VersionChanged));
            }
            current
        }
    };
    if max_lease.is_some_and(|m| expires_at - now > m) {
        return Err(StoreError::Conflict(Conflict::LeaseMaxExceeded));
    }
    if exclusive {
        let open: i64 = c.query_row(
            "SELECT count(*) FROM checkouts
             WHERE path = ?1 AND checked_in_at IS NULL AND expired_at IS NULL AND expires_at > ?2",
            params![path, now],
            |r| r.get(0),
        )?;
        if open > 0 {
            return Err(StoreError::Conflict(Conflict::CheckedOut));
        }
    }
    c.execute(
        "INSERT INTO checkouts (id, path, version, principal, reason, exclusive, created_at, expires_at,
           fingerprint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            id,
            path,
            version as i64,
            principal,
            reason,
            exclusive as i64,
            now,
            expires_at,
            holder_fingerprint(fingerprint)?
        ],
    )?;
    Ok(WriteOutcome::CheckedOut { version, exclusive })
}

/// The approvals stored for a secret, or for a prefix (`path` ending with
/// `/`; `[]` when it has none). Not found: no secret at `path`.
fn stored_approvals(c: &Connection, path: &str) -> Result<String, StoreError> {
    if path.ends_with('/') {
        Ok(c.query_row(
            "SELECT approvals FROM prefix_policies WHERE prefix = ?1",
            [path],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_else(|| "[]".into()))
    } else {
        c.query_row(
            "SELECT approvals FROM secrets WHERE path = ?1",
            [path],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(StoreError::NotFound)
    }
}

/// The meta key of the governance rule (JSON rules; absent before genesis).
pub const GOVERNANCE_RULE: &str = "governance_rule";

/// The request `id`, approved and unexpired, claimed by the certificate
/// that made it, and not collected (or applied) before.
fn claim_approved(
    c: &Connection,
    id: &str,
    requester: &str,
    fingerprint: &str,
    now: i64,
) -> Result<RequestRow, StoreError> {
    let req = read_request(c, id)?.ok_or(StoreError::NotFound)?;
    if !same_holder(
        &req.requester,
        &req.requester_fingerprint,
        requester,
        fingerprint,
    ) {
        return Err(StoreError::Forbidden(
            "only the certificate that made the request can collect it",
        ));
    }
    if req.collected_at.is_some() {
        return Err(StoreError::Conflict(Conflict::AlreadyCollected));
    }
    match req.status {
        RequestStatus::Approved => {}
        RequestStatus::Denied => return Err(StoreError::Conflict(Conflict::RequestDenied)),
        _ if now >= req.expires_at => return Err(StoreError::Conflict(Conflict::RequestExpired)),
        _ => return Err(StoreError::Conflict(Conflict::PendingApproval)),
    }
    if now >= req.expires_at {
        return Err(StoreError::Conflict(Conflict::RequestExpired));
    }
    Ok(req)
}

/// `SELECT` of every request column, in the order [`request_from_row`] reads.
macro_rules! select_requests {
    () => {
        "SELECT id, kind, path, version, requester, reason, created_at, expires_at, nonce,
                recipient_key, policy, ttl_seconds, status, collected_at, checkout_id,
                requester_fingerprint, change
         FROM requests "
    };
}
pub(crate) use select_requests;

pub(crate) fn read_request(c: &Connection, id: &str) -> Result<Option<RequestRow>, StoreError> {
    let mut st = c.prepare_cached(concat!(select_requests!(), "WHERE id = ?1"))?;
    let mut rows = st.query_map([id], request_from_row)?;
    match rows.next() {
        Some(r) => Ok(Some(r??)),
        None => Ok(None),
    }
}

type RowResult<T> = Result<T, StoreError>;

pub(crate) fn request_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RowResult<RequestRow>> {
    let nonce: Vec<u8> = r.get(8)?;
    let id: String = r.get(0)?;
    let Ok(nonce) = <[u8; 32]>::try_from(nonce.as_slice()) else {
        return Ok(Err(StoreError::Corrupt(format!(
            "request {id}: nonce is not 32 bytes"
        ))));
    };
    Ok(Ok(RequestRow {
        id,
        kind: r.get::<_, Text<RequestKind>>(1)?.0,
        path: r.get(2)?,
        version: r.get::<_, i64>(3)? as u64,
        requester: r.get(4)?,
        reason: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        nonce,
        recipient_key: r.get(9)?,
        policy: r.get(10)?,
        ttl_seconds: r.get::<_, i64>(11)? as u64,
        status: r.get::<_, Text<RequestStatus>>(12)?.0,
        collected_at: r.get(13)?,
        checkout_id: r.get(14)?,
        requester_fingerprint: r.get::<_, Option<String>>(15)?.unwrap_or_default(),
        change: r.get(16)?,
    }))
}

pub(crate) fn read_votes(c: &Connection, request_id: &str) -> Result<Vec<VoteRow>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT request_id, custodian, decision, signature, share, created_at
         FROM votes WHERE request_id = ?1 ORDER BY created_at, custodian",
    )?;
    let rows = st.query_map([request_id], |r| {
        Ok(VoteRow {
            request_id: r.get(0)?,
            custodian: r.get(1)?,
            decision: r.get::<_, Text<Decision>>(2)?.0,
            signature: r.get(3)?,
            share: r.get(4)?,
            created_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Every enrolled (not removed) custodian, by name.
pub(crate) fn read_custodians(c: &Connection) -> Result<Vec<CustodianRow>, StoreError> {
    let mut st = c.prepare_cached(
        "SELECT name, groups, serial, firmware, pin_policy, touch_policy, sig_key, kex_key,
                attestation, enrolled_at, enrolled_by FROM custodians
         WHERE removed_at IS NULL ORDER BY name",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(1)?,
            CustodianRow {
                name: r.get(0)?,
                groups: Vec::new(),
                serial: r.get::<_, i64>(2)? as u32,
                firmware: r.get(3)?,
                pin_policy: r.get(4)?,
                touch_policy: r.get(5)?,
                sig_key: r.get(6)?,
                kex_key: r.get(7)?,
                attestation: r.get(8)?,
                enrolled_at: r.get(9)?,
                enrolled_by: r.get(10)?,
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (groups, mut c) = row?;
        c.groups = serde_json::from_str(&groups)
            .map_err(|e| StoreError::Corrupt(format!("custodian {}: groups: {e}", c.name)))?;
        out.push(c);
    }
    Ok(out)
}

pub(crate) fn read_meta(c: &Connection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?,
    )
}

/// The newest fencing epoch written (0 before any take-over).
fn stored_epoch(c: &Connection) -> Result<u64, StoreError> {
    let v: Option<Vec<u8>> = c
        .query_row(
            "SELECT value FROM meta WHERE key = 'fence_epoch'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match v {
        None => Ok(0),
        Some(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("meta fence_epoch is not a number".into())),
    }
}

pub(crate) fn read_epoch(c: &Connection) -> Result<u64, StoreError> {
    stored_epoch(c)
}
