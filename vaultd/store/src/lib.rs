//! Ciphertext storage for vaultd.
//!
//! Everything secret arrives here already encrypted by `vault-core`; this
//! crate never sees a key or a clear value. SQLite runs in WAL mode with
//! `synchronous = FULL`, so a commit that returned is on disk.
//!
//! Writes go through one writer thread that **group-commits**: it takes every
//! write that queued up while the previous commit was syncing, runs each in
//! its own savepoint, commits once (one fsync for the batch) and only then
//! answers every caller. A caller is never told "done" before its write is
//! durable, and a failed commit fails every write in the batch.
//!
//! # Layout
//!
//! * `schema`: migrations and the schema version.
//! * [`types`]: rows as the daemon sees them.
//! * [`write`]: the write operations and the group-commit writer.
//! * this file: the [`Backend`] trait (what vaultd needs from storage, and
//!   its contract) and [`Store`], the SQLite backend (open, reads through a
//!   connection pool, writes through the group-commit writer, fencing).
//! * `conformance` (feature `conformance`): the suite every backend passes.

#![forbid(unsafe_code)]

pub mod audit;
#[cfg(feature = "conformance")]
pub mod conformance;
mod schema;
pub mod sql;
pub mod types;
pub mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use vault_core::keyring::{KeyringVersion, SealedValue};

/// The canonical form of a custodian set, which a governance change is
/// computed from and checked against when it is applied: each custodian's
/// name, groups, serial and the SHA-256 of its two keys, by name.
pub fn custodian_set(rows: &[CustodianRow]) -> String {
    serde_json::to_string(&members(rows)).expect("members serialise")
}

/// The governance form of custodian rows, by name.
pub fn members(rows: &[CustodianRow]) -> Vec<vault_core::custodian::governance::Member> {
    use vault_core::custodian::governance::{sha256_hex, Member};
    let mut m: Vec<Member> = rows
        .iter()
        .map(|c| Member {
            name: c.name.clone(),
            groups: c.groups.clone(),
            serial: c.serial,
            signature_key_sha256: sha256_hex(&c.sig_key),
            key_management_key_sha256: sha256_hex(&c.kex_key),
        })
        .collect();
    m.sort_by(|a, b| a.name.cmp(&b.name));
    m
}

pub use schema::SCHEMA_VERSION;
pub use types::*;
pub use vault_core::audit::entry::AuditDrafts;
pub use write::{WriteOp, WriteOutcome, GOVERNANCE_RULE, RECORDING_SKEW};

macro_rules! conflicts {
    ($($(#[$doc:meta])* $name:ident = $code:literal;)+) => {
        /// A write refused by a rule of the data. Each has a stable code:
        /// the audit entry's `error`, and the API's error code (the API
        /// alone decides the HTTP status).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Conflict {
            $($(#[$doc])* $name,)+
        }

        impl Conflict {
            pub const ALL: &'static [Conflict] = &[$(Conflict::$name),+];

            /// The stable code.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Conflict::$name => $code,)+
                }
            }
        }
    };
}

conflicts! {
    /// The checkout was checked in already.
    AlreadyCheckedIn = "already_checked_in";
    /// The request was collected already.
    AlreadyCollected = "already_collected";
    /// A custodian of that name is enrolled.
    AlreadyEnrolled = "already_enrolled";
    /// The data file holds a vault already.
    AlreadyInitialized = "already_initialized";
    /// An exclusive secret with an open checkout.
    CheckedOut = "checked_out";
    /// That YubiKey key is enrolled under another name.
    KeyAlreadyEnrolled = "key_already_enrolled";
    /// A keyring version with that number exists.
    KeyringVersionExists = "keyring_version_exists";
    /// Revoking the last admin.
    LastAdmin = "last_admin";
    /// Expiring a lease whose time has not come.
    LeaseActive = "lease_active";
    /// A lease longer than its secret's maximum, or a renewal of one that
    /// has reached it.
    LeaseMaxExceeded = "lease_max_exceeded";
    /// The lease ended at its TTL already.
    LeaseExpired = "lease_expired";
    /// The name belongs to a principal of another role.
    NameInUse = "name_in_use";
    /// The data file holds no vault.
    NotInitialized = "not_initialized";
    /// Collecting a request before its quorum.
    PendingApproval = "pending_approval";
    /// Collecting a denied request.
    RequestDenied = "request_denied";
    /// Collecting an expired request.
    RequestExpired = "request_expired";
    /// A write of the other tier to an existing secret.
    TierMismatch = "tier_mismatch";
    /// The version a write or checkout was computed for is not current.
    VersionChanged = "version_changed";
    /// The version's value was destroyed.
    VersionDestroyed = "version_destroyed";
    /// Destroying the current version (delete the secret instead).
    VersionCurrent = "version_current";
    /// The secret's value is being rotated on its target: no write, and
    /// (while the new value may have reached the target) no checkout.
    RotationInProgress = "rotation_in_progress";
    /// A connector's credential: used by the vault, never checked out.
    UseOnly = "use_only";
    /// A one-time secret whose current value was handed out already: the
    /// rotation that replaces it has to finish first.
    OneTimeUsed = "one_time_used";
    /// A rotation step on a rotation that is no longer in that state.
    RotationChanged = "rotation_changed";
    /// A request collected as the other kind.
    WrongRequestKind = "wrong_request_kind";
    /// The custodians changed since the governance change was proposed.
    CustodiansChanged = "custodians_changed";
    /// The governance rule changed since the change was proposed.
    GovernanceChanged = "governance_changed";
    /// A session recording said to start before its checkout.
    RecordingBeforeCheckout = "recording_before_checkout";
    /// Renewing a certificate that was revoked, expired or superseded in
    /// the meantime.
    RenewalClosed = "renewal_closed";
    /// Granting access that is granted already.
    GrantExists = "grant_exists";
    /// A genesis when the custodians' governance is established already.
    GovernanceEstablished = "governance_established";
    /// A governance change before genesis.
    GovernanceRequired = "governance_required";
    /// The approvals a change relaxes changed since it was proposed.
    PolicyChanged = "policy_changed";
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Storage errors. `Corrupt` means a stored row could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[source] rusqlite::Error),
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(Conflict),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// No access grant of the principal covers the path (default deny).
    #[error("no access grant covers this path")]
    NotGranted,
    /// What the write was computed from changed before it ran (another
    /// write got there first): nothing was written or audited; read again
    /// and retry.
    #[error("stale write: {0}")]
    Stale(&'static str),
    #[error("the storage writer has stopped")]
    WriterGone,
    /// The batch transaction could not begin or commit; nothing was written.
    #[error("storage transaction failed: {0}")]
    TransactionFailed(String),
    /// A newer writer has taken over ([`Backend::take_over`]); nothing was
    /// written or audited.
    #[error("storage is fenced: this writer's epoch {epoch} is older than {current}")]
    Fenced { epoch: u64, current: u64 },
    /// The audit entry could not be made durable; the change was not made.
    #[error("the audit log cannot be written: {0}")]
    AuditUnavailable(String),
}

impl From<rusqlite::Error> for StoreError {
    /// A stored enum column with a value this build does not know
    /// ([`sql::Text`]) is a corrupt row; every other error is the database's.
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::FromSqlConversionFailure(column, _, inner) = &e {
            if let Some(u) = inner.downcast_ref::<sql::UnknownValue>() {
                return StoreError::Corrupt(format!("column {column}: {u}"));
            }
        }
        StoreError::Sqlite(e)
    }
}

impl StoreError {
    /// Stable API code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Sqlite(_)
            | StoreError::WriterGone
            | StoreError::TransactionFailed(_)
            | StoreError::Fenced { .. } => "storage_unavailable",
            StoreError::AuditUnavailable(_) => "audit_unavailable",
            StoreError::SchemaTooNew { .. } => "schema_too_new",
            StoreError::Corrupt(_) => "integrity",
            StoreError::NotFound => "not_found",
            StoreError::Conflict(c) => c.as_str(),
            StoreError::Forbidden(_) => "forbidden",
            StoreError::NotGranted => "not_granted",
            StoreError::Stale(_) => "version_changed",
        }
    }

    /// How the audit log records this refusal: the appliance failed
    /// (`error`) or refused (`denied`). One rule for every write.
    pub fn audit_outcome(&self) -> vault_core::audit::entry::Outcome {
        use vault_core::audit::entry::Outcome;
        match self {
            StoreError::Sqlite(_)
            | StoreError::WriterGone
            | StoreError::TransactionFailed(_)
            | StoreError::Fenced { .. }
            | StoreError::AuditUnavailable(_)
            | StoreError::Corrupt(_) => Outcome::Error,
            _ => Outcome::Denied,
        }
    }
}

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most writes in one commit.
    pub max_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { max_batch: 512 }
    }
}

/// The store: a writer thread and a pool of read-only connections.
pub struct Store {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    writer: write::Writer,
    /// The fencing epoch this handle writes with.
    epoch: std::sync::atomic::AtomicU64,
    audit: Arc<audit::AuditLog>,
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A destroyed version's bytes are overwritten in the data file, not
    // left in a free page.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

/// What vaultd needs from storage: ciphertext rows, the control-plane rows,
/// the audit log. The SQLite [`Store`] implements it; a second backend (the
/// shared PostgreSQL store of an HA pair) implements the same trait and must
/// pass the same suite ([`conformance::exercise`]).
///
/// The contract, which the suite checks:
/// * every call blocks until done, and a write that returned `Ok` is durable
///   (a remote backend returns only after its commit);
/// * a write and its audit entry commit together or not at all; a refused
///   write gets its refusal entry; a [`StoreError::Stale`] write gets none;
/// * a write is refused as [`StoreError::Fenced`] (unwritten, unaudited)
///   when a newer writer has taken over ([`Backend::take_over`]): the
///   fencing epoch every write carries is this handle's;
/// * every control-plane row (principals, custodians, approval policies,
///   requests, votes) stores its authenticator (`auth`) as given and
///   returns it unchanged; checking it is the caller's business;
/// * reads return what was written; a row that cannot be decoded is
///   [`StoreError::Corrupt`], never a default.
pub trait Backend: Send + Sync {
    /// The fencing epoch this handle's writes carry.
    fn epoch(&self) -> u64;

    /// Makes this handle the writer: a new, higher epoch is stored and every
    /// handle with an older one is refused from then on.
    fn take_over(&self) -> Result<u64, StoreError>;

    /// Submits a write and waits until it is durable (or failed).
    fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError>;

    /// Submits a write with its audit entries: `audit.success` commits
    /// together with the change; a refused change gets `audit.refusal` with
    /// the store's outcome and code (a [`StoreError::Stale`] one gets none:
    /// its caller retries); if the entry cannot be made durable the result
    /// is `AuditUnavailable` and nothing changed.
    fn write_audited(&self, op: WriteOp, audit: AuditDrafts) -> Result<WriteOutcome, StoreError>;

    /// Appends one audit entry on its own.
    fn audit(&self, draft: vault_core::audit::entry::Draft) -> Result<(), StoreError>;

    /// The audit log's Merkle tree (committed entries only).
    fn audit_log(&self) -> &audit::AuditLog;

    /// Entries `[start, end)` as stored (canonical bytes).
    fn audit_entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// The newest signed checkpoint: (tree size, note).
    fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError>;

    /// Every checkpoint with `tree_size` in `[from, to]`, ascending.
    fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<(u64, String)>, StoreError>;

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    fn keyring_versions(&self) -> Result<Vec<KeyringVersion>, StoreError>;

    /// The current version of a secret (`None`: no secret at `path`).
    fn current_version(&self, path: &str) -> Result<Option<u64>, StoreError>;

    fn secret(&self, path: &str) -> Result<Option<SecretInfo>, StoreError>;

    fn secret_version(&self, path: &str, version: u64) -> Result<Option<SealedValue>, StoreError>;

    /// The current version of a secret, its sealed value and its policy, in
    /// one read.
    fn current(&self, path: &str) -> Result<Option<(u64, SealedValue, SecretPolicy)>, StoreError>;

    /// The ciphertext and custodian shares of a sealed-tier version.
    fn sealed_version(&self, path: &str, version: u64)
        -> Result<Option<SealedVersion>, StoreError>;

    fn custodians(&self) -> Result<Vec<CustodianRow>, StoreError>;

    fn request(&self, id: &str) -> Result<Option<RequestRow>, StoreError>;

    /// Requests, newest first, with this stored status or (`None`) all.
    fn requests(
        &self,
        status: Option<vault_core::custodian::request::RequestStatus>,
        limit: usize,
    ) -> Result<Vec<RequestRow>, StoreError>;

    fn votes(&self, request_id: &str) -> Result<Vec<VoteRow>, StoreError>;

    /// Secrets whose path starts with `prefix`, in path order, after `after`.
    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SecretSummary>, StoreError>;

    fn principal(&self, fingerprint: &str) -> Result<Option<PrincipalRow>, StoreError>;

    fn principals(&self) -> Result<Vec<PrincipalRow>, StoreError>;

    fn checkout(&self, id: &str) -> Result<Option<CheckoutRow>, StoreError>;

    /// Every prefix policy, in prefix order.
    fn prefix_policies(&self) -> Result<Vec<PrefixPolicy>, StoreError>;

    /// Every access grant, by principal then prefix.
    fn grants(&self) -> Result<Vec<GrantRow>, StoreError>;

    /// Whether a grant of `principal` covers `path` (the API's early check,
    /// before anything about the path is read; the write checks again in
    /// its transaction).
    fn granted(&self, principal: &str, path: &str) -> Result<bool, StoreError>;

    /// Every secret that needs custodians, by path: (path, its own
    /// approvals, its custody for the sealed tier).
    fn gated_secrets(&self) -> Result<Vec<(String, String, Option<String>)>, StoreError>;

    /// What an operator graphs, at `now`: open leases, pending requests, the
    /// newest checkpoint's time.
    fn gauges(&self, now: i64) -> Result<Gauges, StoreError>;

    /// The prefix policies over `path` (shortest prefix first), whether a
    /// secret exists there or not.
    fn prefix_policies_over(&self, path: &str) -> Result<Vec<PrefixPolicy>, StoreError>;

    /// Checkouts, newest first, as the filter says.
    fn checkouts(&self, filter: &CheckoutFilter) -> Result<Vec<CheckoutRow>, StoreError>;

    /// Up to `limit` open checkouts whose lease ended by `now` (neither
    /// checked in nor expired yet), soonest first.
    fn expiring_checkouts(&self, now: i64, limit: usize) -> Result<Vec<CheckoutRow>, StoreError>;

    /// Up to `limit` secret versions whose data key is not under `active`.
    fn stale_versions(&self, active: u32, limit: usize) -> Result<Vec<StaleVersion>, StoreError>;

    /// Number of secret versions per keyring version.
    fn key_version_counts(&self) -> Result<Vec<(u32, u64)>, StoreError>;

    /// A secret's rotation policy.
    fn rotation_policy(&self, path: &str) -> Result<Option<RotationPolicyRow>, StoreError>;

    /// A secret's rotation in flight (or failed).
    fn rotation(&self, path: &str) -> Result<Option<RotationRow>, StoreError>;

    /// Rotations to work on at `now` (not failed, `next_at` reached),
    /// oldest first.
    fn due_rotations(&self, now: i64, limit: usize) -> Result<Vec<RotationRow>, StoreError>;

    /// Secrets whose schedule calls for a rotation at `now` (none in
    /// flight).
    fn scheduled_rotations(&self, now: i64) -> Result<Vec<String>, StoreError>;
    /// The policies with a cron schedule and no rotation in flight: path,
    /// schedule (canonical text) and the time it counts from (the last
    /// rotation, or when the policy was set). Whether one is due is the
    /// daemon's to compute.
    fn cron_schedules(&self) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// Secrets whose heartbeat is due at `now` (none in flight).
    fn heartbeats_due(&self, now: i64) -> Result<Vec<String>, StoreError>;
}

impl Store {
    /// Opens (creating if needed) and migrates the database file.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "could not enable WAL (got {mode})"
            )));
        }
        // FULL: the WAL is fsynced at every commit, so a returned commit is durable.
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&mut conn)?;
        let tree = load_tree(&conn)?;
        let epoch = write::read_epoch(&conn)?;
        let audit = Arc::new(audit::AuditLog::new(tree));
        let writer = write::Writer::start(conn, opts.max_batch, audit.clone());
        Ok(Store {
            path: path.to_owned(),
            readers: Mutex::new(Vec::new()),
            writer,
            epoch: std::sync::atomic::AtomicU64::new(epoch),
            audit,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a pooled read-only connection.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&c)?;
                c
            }
        };
        let out = f(&conn);
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        out
    }
}

impl Backend for Store {
    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn take_over(&self) -> Result<u64, StoreError> {
        match self.writer.submit(self.epoch(), WriteOp::TakeOver, None)? {
            WriteOutcome::Epoch(e) => {
                self.epoch.store(e, std::sync::atomic::Ordering::SeqCst);
                Ok(e)
            }
            o => Err(StoreError::Corrupt(format!("take-over answered {o:?}"))),
        }
    }

    fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        self.writer.submit(self.epoch(), op, None)
    }

    fn write_audited(&self, op: WriteOp, audit: AuditDrafts) -> Result<WriteOutcome, StoreError> {
        self.writer.submit(self.epoch(), op, Some(audit))
    }

    fn audit(&self, draft: vault_core::audit::entry::Draft) -> Result<(), StoreError> {
        self.write_audited(WriteOp::AuditOnly, AuditDrafts::new(draft))
            .map(|_| ())
    }

    fn audit_log(&self) -> &audit::AuditLog {
        &self.audit
    }

    fn audit_entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT idx, entry FROM audit_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )?;
            let rows = st.query_map(params![start as i64, end as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT tree_size, note FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
            )
            .optional()?)
        })
    }

    fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<(u64, String)>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT tree_size, note FROM audit_checkpoints WHERE tree_size >= ?1 AND tree_size <= ?2 ORDER BY tree_size",
            )?;
            let rows = st.query_map(params![from as i64, to as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    fn keyring_versions(&self) -> Result<Vec<KeyringVersion>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT version, salt FROM keyring ORDER BY version")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (v, salt) = row?;
                let salt: [u8; 32] = salt.try_into().map_err(|_| {
                    StoreError::Corrupt(format!("keyring version {v}: salt is not 32 bytes"))
                })?;
                let version = u32::try_from(v).map_err(|_| {
                    StoreError::Corrupt(format!("keyring version {v} out of range"))
                })?;
                out.push(KeyringVersion { version, salt });
            }
            Ok(out)
        })
    }

    fn current_version(&self, path: &str) -> Result<Option<u64>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT current_version FROM secrets WHERE path = ?1",
                [path],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|v| v as u64))
        })
    }

    fn secret(&self, path: &str) -> Result<Option<SecretInfo>, StoreError> {
        self.read(|c| read_secret(c, path))
    }

    fn secret_version(&self, path: &str, version: u64) -> Result<Option<SealedValue>, StoreError> {
        self.read(|c| read_sealed(c, path, version))
    }

    fn current(&self, path: &str) -> Result<Option<(u64, SealedValue, SecretPolicy)>, StoreError> {
        self.read(|c| {
            let v = c
                .query_row(
                    "SELECT current_version, tier, approvals, custody FROM secrets
                     WHERE path = ?1 AND deleted_at IS NULL",
                    [path],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            SecretPolicy {
                                tier: r.get(1)?,
                                approvals: r.get(2)?,
                                custody: r.get(3)?,
                                prefixes: Vec::new(),
                            },
                        ))
                    },
                )
                .optional()?;
            let Some((v, mut policy)) = v else {
                return Ok(None);
            };
            policy.prefixes = write::prefix_policies_over(c, path)?;
            let v = v as u64;
            let sealed = read_sealed(c, path, v)?.ok_or_else(|| {
                StoreError::Corrupt(format!("{path}: current version {v} has no row"))
            })?;
            Ok(Some((v, sealed, policy)))
        })
    }

    fn sealed_version(
        &self,
        path: &str,
        version: u64,
    ) -> Result<Option<SealedVersion>, StoreError> {
        self.read(|c| {
            let Some(sv) = read_sealed(c, path, version)? else {
                return Ok(None);
            };
            let mut st = c.prepare_cached(
                "SELECT custodian, envelope FROM sealed_shares WHERE path = ?1 AND version = ?2 ORDER BY custodian",
            )?;
            let shares = st
                .query_map(params![path, version as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(SealedVersion {
                ciphertext: sv.ciphertext,
                shares,
            }))
        })
    }

    fn custodians(&self) -> Result<Vec<CustodianRow>, StoreError> {
        self.read(write::read_custodians)
    }

    fn request(&self, id: &str) -> Result<Option<RequestRow>, StoreError> {
        self.read(|c| write::read_request(c, id))
    }

    fn requests(
        &self,
        status: Option<vault_core::custodian::request::RequestStatus>,
        limit: usize,
    ) -> Result<Vec<RequestRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(concat!(
                write::select_requests!(),
                "WHERE (?1 IS NULL OR status = ?1) ORDER BY created_at DESC, id LIMIT ?2"
            ))?;
            let rows = st.query_map(
                params![status.map(sql::Text), limit as i64],
                write::request_from_row,
            )?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
    }

    fn votes(&self, request_id: &str) -> Result<Vec<VoteRow>, StoreError> {
        self.read(|c| write::read_votes(c, request_id))
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SecretSummary>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT path, current_version, exclusive, updated_at FROM secrets
                 WHERE substr(path, 1, length(?1)) = ?1 AND path > ?2 AND deleted_at IS NULL
                 ORDER BY path LIMIT ?3",
            )?;
            let rows = st.query_map(params![prefix, after.unwrap_or(""), limit as i64], |r| {
                Ok(SecretSummary {
                    path: r.get(0)?,
                    current_version: r.get::<_, i64>(1)? as u64,
                    exclusive: r.get::<_, i64>(2)? != 0,
                    updated_at: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn principal(&self, fingerprint: &str) -> Result<Option<PrincipalRow>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT fingerprint, name, role, serial, not_after, issued_at, revoked, renewed_from
                 FROM principals WHERE fingerprint = ?1",
                [fingerprint],
                principal_from_row,
            )
            .optional()?)
        })
    }

    fn principals(&self) -> Result<Vec<PrincipalRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT fingerprint, name, role, serial, not_after, issued_at, revoked, renewed_from
                 FROM principals ORDER BY issued_at, name",
            )?;
            let rows = st.query_map([], principal_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn checkout(&self, id: &str) -> Result<Option<CheckoutRow>, StoreError> {
        self.read(|c| write::read_checkout(c, id))
    }

    fn gauges(&self, now: i64) -> Result<Gauges, StoreError> {
        self.read(|c| {
            let open_checkouts: i64 = c.query_row(
                "SELECT count(*) FROM checkouts
                 WHERE checked_in_at IS NULL AND expired_at IS NULL AND expires_at > ?1",
                [now],
                |r| r.get(0),
            )?;
            let pending_requests: i64 = c.query_row(
                "SELECT count(*) FROM requests WHERE status = ?1 AND expires_at > ?2",
                params![
                    sql::Text(vault_core::custodian::request::RequestStatus::Pending),
                    now
                ],
                |r| r.get(0),
            )?;
            let checkpoint_at: Option<i64> =
                c.query_row("SELECT max(created_at) FROM audit_checkpoints", [], |r| {
                    r.get(0)
                })?;
            let rotations_failed: i64 = c.query_row(
                "SELECT count(*) FROM rotations WHERE state = 'failed'",
                [],
                |r| r.get(0),
            )?;
            let drifted: i64 = c.query_row(
                "SELECT count(*) FROM rotation_policies WHERE drift_at IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            Ok(Gauges {
                open_checkouts: open_checkouts as u64,
                pending_requests: pending_requests as u64,
                rotations_failed: rotations_failed as u64,
                drifted: drifted as u64,
                checkpoint_at,
            })
        })
    }

    fn gated_secrets(&self) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT path, approvals, custody FROM secrets
                 WHERE approvals != '[]' OR custody IS NOT NULL ORDER BY path",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn grants(&self) -> Result<Vec<GrantRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT principal, prefix, granted_at, granted_by FROM grants ORDER BY principal, prefix",
            )?;
            let rows = st.query_map([], |r| {
                Ok(GrantRow {
                    principal: r.get(0)?,
                    prefix: r.get(1)?,
                    granted_at: r.get(2)?,
                    granted_by: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn granted(&self, principal: &str, path: &str) -> Result<bool, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT prefix FROM grants WHERE principal = ?1")?;
            let prefixes = st.query_map([principal], |r| r.get::<_, String>(0))?;
            for p in prefixes {
                if grant_covers(&p?, path) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    fn prefix_policies(&self) -> Result<Vec<PrefixPolicy>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT prefix, approvals, set_at, set_by FROM prefix_policies ORDER BY prefix",
            )?;
            let rows = st.query_map([], write::prefix_policy_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn prefix_policies_over(&self, path: &str) -> Result<Vec<PrefixPolicy>, StoreError> {
        self.read(|c| write::prefix_policies_over(c, path))
    }

    fn checkouts(&self, f: &CheckoutFilter) -> Result<Vec<CheckoutRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(concat!(
                write::select_checkouts!(),
                "WHERE (?1 IS NULL OR substr(path, 1, length(?1)) = ?1)
                   AND (?2 IS NULL OR principal = ?2)
                   AND (?3 = 0 OR (checked_in_at IS NULL AND expired_at IS NULL))
                   AND (?4 IS NULL OR rowid < (SELECT rowid FROM checkouts WHERE id = ?4))
                 ORDER BY rowid DESC LIMIT ?5"
            ))?;
            // Rows are appended by the one writer: rowid order is the order
            // they were recorded in, ties of created_at included.
            let rows = st.query_map(
                params![
                    f.path_prefix,
                    f.principal,
                    f.open_only as i64,
                    f.before,
                    f.limit as i64
                ],
                write::checkout_from_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn expiring_checkouts(&self, now: i64, limit: usize) -> Result<Vec<CheckoutRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(concat!(
                write::select_checkouts!(),
                "WHERE checked_in_at IS NULL AND expired_at IS NULL AND expires_at <= ?1
                 ORDER BY expires_at, id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![now, limit as i64], write::checkout_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn stale_versions(&self, active: u32, limit: usize) -> Result<Vec<StaleVersion>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT path, version, key_version, wrapped_dek FROM secret_versions
                 WHERE key_version <> ?1 AND key_version <> 0 LIMIT ?2",
            )?;
            let rows = st.query_map(params![active, limit as i64], |r| {
                Ok(StaleVersion {
                    path: r.get(0)?,
                    version: r.get::<_, i64>(1)? as u64,
                    key_version: r.get::<_, i64>(2)? as u32,
                    wrapped_dek: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn rotation_policy(&self, path: &str) -> Result<Option<RotationPolicyRow>, StoreError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT path, policy, triggers, interval_seconds, credential, set_at, set_by, last_rotated_at,
                        cron, heartbeat_seconds, checked_at, drift_at
                 FROM rotation_policies WHERE path = ?1",
                [path],
                |r| {
                    Ok(RotationPolicyRow {
                        path: r.get(0)?,
                        policy: r.get(1)?,
                        triggers: r.get(2)?,
                        interval_seconds: r.get::<_, Option<i64>>(3)?.map(|i| i as u64),
                        credential: r.get(4)?,
                        set_at: r.get(5)?,
                        set_by: r.get(6)?,
                        last_rotated_at: r.get(7)?,
                        cron: r.get(8)?,
                        heartbeat_seconds: r.get::<_, Option<i64>>(9)?.map(|i| i as u64),
                        checked_at: r.get(10)?,
                        drift_at: r.get(11)?,
                    })
                },
            )
            .optional()?)
        })
    }

    fn rotation(&self, path: &str) -> Result<Option<RotationRow>, StoreError> {
        self.read(|c| write::read_rotation(c, path))
    }

    fn due_rotations(&self, now: i64, limit: usize) -> Result<Vec<RotationRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "{} WHERE state <> 'failed' AND next_at <= ?1 ORDER BY next_at LIMIT ?2",
                write::ROTATION_SELECT
            ))?;
            let rows = st.query_map(params![now, limit as i64], write::rotation_from_row)?;
            rows.map(|r| r?).collect()
        })
    }

    fn heartbeats_due(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT p.path FROM rotation_policies p
                 WHERE p.heartbeat_seconds IS NOT NULL
                   AND coalesce(p.checked_at, p.set_at) + p.heartbeat_seconds <= ?1
                   AND NOT EXISTS (SELECT 1 FROM rotations r WHERE r.path = p.path)
                 ORDER BY p.path",
            )?;
            let rows = st.query_map([now], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn cron_schedules(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT p.path, p.cron, coalesce(p.last_rotated_at, p.set_at) FROM rotation_policies p
                 WHERE p.cron IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM rotations r WHERE r.path = p.path)
                 ORDER BY p.path",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn scheduled_rotations(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT p.path FROM rotation_policies p
                 WHERE p.interval_seconds IS NOT NULL
                   AND coalesce(p.last_rotated_at, p.set_at) + p.interval_seconds <= ?1
                   AND NOT EXISTS (SELECT 1 FROM rotations r WHERE r.path = p.path)
                 ORDER BY p.path",
            )?;
            let rows = st.query_map([now], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn key_version_counts(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT key_version, count(*) FROM secret_versions WHERE key_version <> 0 GROUP BY key_version ORDER BY key_version",
            )?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

fn principal_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PrincipalRow> {
    Ok(PrincipalRow {
        fingerprint: r.get(0)?,
        name: r.get(1)?,
        role: r.get::<_, sql::Text<vault_core::policy::Role>>(2)?.0,
        serial: r.get(3)?,
        not_after: r.get(4)?,
        issued_at: r.get(5)?,
        revoked: r.get::<_, i64>(6)? != 0,
        renewed_from: r.get(7)?,
    })
}

pub(crate) fn read_secret(c: &Connection, path: &str) -> Result<Option<SecretInfo>, StoreError> {
    let head = c
        .query_row(
            "SELECT exclusive, current_version, metadata, created_at, updated_at, tier, approvals, custody,
                    max_lease_seconds, deleted_at, deleted_by
             FROM secrets WHERE path = ?1",
            [path],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? != 0,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    SecretPolicy {
                        tier: r.get(5)?,
                        approvals: r.get(6)?,
                        custody: r.get(7)?,
                        prefixes: Vec::new(),
                    },
                    r.get::<_, Option<i64>>(8)?.map(|m| m as u64),
                    stamp(r.get(9)?, r.get(10)?),
                ))
            },
        )
        .optional()?;
    let Some((
        exclusive,
        current_version,
        metadata,
        created_at,
        updated_at,
        mut policy,
        max_lease_seconds,
        deleted,
    )) = head
    else {
        return Ok(None);
    };
    policy.prefixes = write::prefix_policies_over(c, path)?;
    let metadata = serde_json::from_str(&metadata)
        .map_err(|e| StoreError::Corrupt(format!("metadata of {path}: {e}")))?;
    let mut st = c.prepare_cached(
        "SELECT version, created_at, created_by, key_version, destroyed_at, destroyed_by
         FROM secret_versions WHERE path = ?1 ORDER BY version",
    )?;
    let versions = st
        .query_map([path], |r| {
            Ok(VersionInfo {
                version: r.get::<_, i64>(0)? as u64,
                created_at: r.get(1)?,
                created_by: r.get(2)?,
                key_version: r.get::<_, i64>(3)? as u32,
                destroyed: stamp(r.get(4)?, r.get(5)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut st = c.prepare_cached(
        "SELECT id, principal, expires_at FROM checkouts
         WHERE path = ?1 AND checked_in_at IS NULL AND expired_at IS NULL ORDER BY created_at",
    )?;
    let open_checkouts = st
        .query_map([path], |r| {
            Ok(OpenCheckout {
                id: r.get(0)?,
                principal: r.get(1)?,
                expires_at: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(SecretInfo {
        path: path.to_owned(),
        exclusive,
        current_version,
        metadata,
        created_at,
        updated_at,
        versions,
        open_checkouts,
        policy,
        max_lease_seconds,
        deleted,
    }))
}

/// A (time, by) pair of nullable columns.
fn stamp(at: Option<i64>, by: Option<String>) -> Option<(i64, String)> {
    at.map(|at| (at, by.unwrap_or_default()))
}

pub(crate) fn read_sealed(
    c: &Connection,
    path: &str,
    version: u64,
) -> Result<Option<SealedValue>, StoreError> {
    let row = c
        .query_row(
            "SELECT key_version, wrapped_dek, ciphertext, destroyed_at FROM secret_versions
             WHERE path = ?1 AND version = ?2",
            params![path, version as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            },
        )
        .optional()?;
    match row {
        None => Ok(None),
        // Fail closed: a destroyed value is never handed to a decryptor.
        Some((.., Some(_))) => Err(StoreError::Conflict(Conflict::VersionDestroyed)),
        Some((kv, wrapped_dek, ciphertext, None)) => {
            let key_version = u32::try_from(kv).map_err(|_| {
                StoreError::Corrupt(format!("{path} v{version}: key version {kv} out of range"))
            })?;
            Ok(Some(SealedValue {
                key_version,
                wrapped_dek,
                ciphertext,
            }))
        }
    }
}

/// Rebuilds the Merkle tree from the stored leaf hashes, checking that the
/// indices are dense and every stored leaf hash matches its entry's bytes.
fn load_tree(c: &Connection) -> Result<vault_core::audit::merkle::Tree, StoreError> {
    use vault_core::audit::merkle::{leaf_hash, Tree};
    let mut tree = Tree::new();
    let mut st = c.prepare("SELECT idx, entry, leaf_hash FROM audit_log ORDER BY idx")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let idx: i64 = r.get(0)?;
        if idx as u64 != tree.size() {
            return Err(StoreError::Corrupt(format!(
                "audit log: index {idx} where {} was expected",
                tree.size()
            )));
        }
        let entry: Vec<u8> = r.get(1)?;
        let stored: Vec<u8> = r.get(2)?;
        let leaf = leaf_hash(&entry);
        if stored != leaf {
            return Err(StoreError::Corrupt(format!(
                "audit log: entry {idx} does not match its leaf hash"
            )));
        }
        tree.push(leaf);
    }
    Ok(tree)
}
