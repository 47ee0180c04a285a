//! Write operations and the group-commit writer thread.

use std::sync::{mpsc, Arc};
use std::thread;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use vault_core::audit::entry::Draft;
use vault_core::audit::merkle::{leaf_hash, Hash};
use vault_core::keyring::{KeyringVersion, SealedValue};

use crate::audit::AuditLog;
use crate::types::{CheckoutRow, PrincipalRow};
use crate::StoreError;

/// Encrypts the value once the new version number is known (it is part of
/// the associated data). Runs on the writer thread, inside the transaction.
pub type SealFn = Box<dyn FnOnce(u64) -> SealedValue + Send>;

/// One durable change.
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
    PutSecret {
        path: String,
        exclusive: Option<bool>,
        metadata: Option<Value>,
        created_by: String,
        now: i64,
        seal: SealFn,
    },
    /// Records a checkout of the current version, which must still be
    /// `expect_version` (the caller has already decrypted it).
    Checkout {
        id: String,
        path: String,
        expect_version: Option<u64>,
        principal: String,
        reason: String,
        now: i64,
        expires_at: i64,
    },
    RevokePrincipal {
        fingerprint: String,
    },
    /// Nothing but the audit entry (refused requests, unseal, seal).
    AuditOnly,
    /// A signed checkpoint of the audit log.
    AddCheckpoint {
        tree_size: u64,
        note: String,
        now: i64,
    },
    Checkin {
        id: String,
        principal: String,
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
}

/// Builds the audit entry of a write from its result (success or refusal).
pub type AuditFn = Box<dyn FnOnce(Result<&WriteOutcome, &StoreError>) -> Draft + Send>;

struct Job {
    op: WriteOp,
    audit: Option<AuditFn>,
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
            // Never join from the writer thread itself (an audit closure
            // could hold the last reference to the store).
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
        op: WriteOp,
        audit: Option<AuditFn>,
    ) -> Result<WriteOutcome, StoreError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx
            .as_ref()
            .ok_or(StoreError::WriterGone)?
            .send(Job { op, audit, reply })
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

/// Runs one job in savepoints. The audit entry of a successful change
/// commits atomically with it; the entry of a refused change is written in
/// its own savepoint after the change is rolled back. If the entry cannot
/// be written, the job fails with `AuditUnavailable` and changes nothing.
fn run_job(
    c: &Connection,
    job_op: WriteOp,
    audit: Option<AuditFn>,
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
        (Ok(v), Some(audit)) => match append_entry(c, cur, audit(Ok(&v))) {
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
            if let Some(audit) = audit {
                let draft = audit(Err(&e));
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
    for job in batch {
        let audited = job.audit.is_some();
        let r = run_job(conn, job.op, job.audit, &mut cur);
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
                return Err(StoreError::Conflict("already_initialized"));
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
            exclusive,
            metadata,
            created_by,
            now,
            seal,
        } => {
            let existing = c
                .query_row(
                    "SELECT current_version, exclusive, metadata FROM secrets WHERE path = ?1",
                    [&path],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)? != 0,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )
                .optional()?;
            let version = match &existing {
                Some((v, ..)) => (*v as u64)
                    .checked_add(1)
                    .ok_or(StoreError::Corrupt(format!("{path}: version overflow")))?,
                None => 1,
            };
            let exclusive = exclusive.unwrap_or(existing.as_ref().map(|e| e.1).unwrap_or(false));
            let metadata = match metadata {
                Some(m) => m.to_string(),
                None => existing
                    .as_ref()
                    .map(|e| e.2.clone())
                    .unwrap_or_else(|| "{}".into()),
            };
            if existing.is_some() {
                c.execute(
                    "UPDATE secrets SET current_version = ?2, exclusive = ?3, metadata = ?4, updated_at = ?5 WHERE path = ?1",
                    params![path, version as i64, exclusive as i64, metadata, now],
                )?;
            } else {
                c.execute(
                    "INSERT INTO secrets (path, exclusive, current_version, metadata, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![path, exclusive as i64, version as i64, metadata, now],
                )?;
            }
            let sealed = seal(version);
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
            Ok(WriteOutcome::Version(version))
        }
        WriteOp::Checkout {
            id,
            path,
            expect_version,
            principal,
            reason,
            now,
            expires_at,
        } => {
            let (version, exclusive) = c
                .query_row(
                    "SELECT current_version, exclusive FROM secrets WHERE path = ?1",
                    [&path],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? != 0)),
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if expect_version.is_some_and(|v| v != version) {
                return Err(StoreError::Conflict("version_changed"));
            }
            if exclusive {
                let open: i64 = c.query_row(
                    "SELECT count(*) FROM checkouts WHERE path = ?1 AND checked_in_at IS NULL AND expires_at > ?2",
                    params![path, now],
                    |r| r.get(0),
                )?;
                if open > 0 {
                    return Err(StoreError::Conflict("checked_out"));
                }
            }
            c.execute(
                "INSERT INTO checkouts (id, path, version, principal, reason, exclusive, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![id, path, version as i64, principal, reason, exclusive as i64, now, expires_at],
            )?;
            Ok(WriteOutcome::CheckedOut { version, exclusive })
        }
        WriteOp::Checkin { id, principal, now } => {
            let row = read_checkout(c, &id)?.ok_or(StoreError::NotFound)?;
            if row.principal != principal {
                return Err(StoreError::Forbidden(
                    "the checkout belongs to another principal",
                ));
            }
            if row.checked_in_at.is_some() {
                return Err(StoreError::Conflict("already_checked_in"));
            }
            c.execute(
                "UPDATE checkouts SET checked_in_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            Ok(WriteOutcome::CheckedIn(CheckoutRow {
                checked_in_at: Some(now),
                ..row
            }))
        }
        WriteOp::RevokePrincipal { fingerprint } => {
            let role: String = c
                .query_row(
                    "SELECT role FROM principals WHERE fingerprint = ?1",
                    [&fingerprint],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if role == "admin" {
                let others: i64 = c.query_row(
                    "SELECT count(*) FROM principals WHERE role = 'admin' AND revoked = 0 AND fingerprint <> ?1",
                    [&fingerprint],
                    |r| r.get(0),
                )?;
                if others == 0 {
                    // Revoking the last admin would lock everyone out of
                    // issuance, unseal and rotation for good.
                    return Err(StoreError::Conflict("last_admin"));
                }
            }
            c.execute(
                "UPDATE principals SET revoked = 1 WHERE fingerprint = ?1",
                [fingerprint],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::AuditOnly => Ok(WriteOutcome::Done),
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
        return Err(StoreError::Conflict("keyring_version_exists"));
    }
    Ok(())
}

fn add_principal(c: &Connection, p: &PrincipalRow) -> Result<(), StoreError> {
    // A name is one principal with one role; new certificates for a name
    // (renewals) must keep its role, since checkouts are recorded by name.
    let other_role: Option<String> = c
        .query_row(
            "SELECT role FROM principals WHERE name = ?1 AND revoked = 0 AND role <> ?2 LIMIT 1",
            params![p.name, p.role],
            |r| r.get(0),
        )
        .optional()?;
    if other_role.is_some() {
        return Err(StoreError::Conflict("name_in_use"));
    }
    c.execute(
        "INSERT INTO principals (fingerprint, name, role, serial, not_after, issued_at, revoked)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            p.fingerprint,
            p.name,
            p.role,
            p.serial,
            p.not_after,
            p.issued_at,
            p.revoked as i64
        ],
    )?;
    Ok(())
}

pub(crate) fn read_checkout(c: &Connection, id: &str) -> Result<Option<CheckoutRow>, StoreError> {
    Ok(c.query_row(
        "SELECT id, path, version, principal, reason, exclusive, created_at, expires_at, checked_in_at
         FROM checkouts WHERE id = ?1",
        [id],
        |r| {
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
            })
        },
    )
    .optional()?)
}
