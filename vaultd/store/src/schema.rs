//! Schema migrations. Each entry runs once, in order, inside a transaction;
//! `PRAGMA user_version` records how far a file has been migrated. A file
//! from a newer version of vaultd is refused rather than guessed at.

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT;
    CREATE TABLE keyring (
        version    INTEGER PRIMARY KEY,
        salt       BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE secrets (
        path            TEXT PRIMARY KEY,
        exclusive       INTEGER NOT NULL,
        current_version INTEGER NOT NULL,
        metadata        TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE secret_versions (
        path        TEXT NOT NULL REFERENCES secrets(path),
        version     INTEGER NOT NULL,
        key_version INTEGER NOT NULL,
        wrapped_dek BLOB NOT NULL,
        ciphertext  BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        PRIMARY KEY (path, version)
    ) STRICT;
    CREATE INDEX secret_versions_key_version ON secret_versions(key_version);
    CREATE TABLE checkouts (
        id            TEXT PRIMARY KEY,
        path          TEXT NOT NULL,
        version       INTEGER NOT NULL,
        principal     TEXT NOT NULL,
        reason        TEXT NOT NULL,
        exclusive     INTEGER NOT NULL,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        checked_in_at INTEGER
    ) STRICT;
    CREATE INDEX checkouts_open ON checkouts(path) WHERE checked_in_at IS NULL;
    CREATE TABLE principals (
        fingerprint TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        role        TEXT NOT NULL,
        serial      TEXT NOT NULL,
        not_after   INTEGER NOT NULL,
        issued_at   INTEGER NOT NULL,
        revoked     INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    "#,
    // 2: the audit log (entries are canonical bytes; leaf_hash = RFC 9162 leaf hash)
    r#"
    CREATE TABLE audit_log (
        idx       INTEGER PRIMARY KEY,
        entry     BLOB NOT NULL,
        leaf_hash BLOB NOT NULL
    ) STRICT;
    CREATE TABLE audit_checkpoints (
        tree_size  INTEGER PRIMARY KEY,
        note       TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;
    "#,
    // 3: custodians, approval requests and votes, the sealed (custodian) tier
    r#"
    CREATE TABLE custodians (
        name         TEXT PRIMARY KEY,
        groups       TEXT NOT NULL,
        serial       INTEGER NOT NULL,
        firmware     TEXT NOT NULL,
        pin_policy   TEXT NOT NULL,
        touch_policy TEXT NOT NULL,
        sig_key      BLOB NOT NULL UNIQUE,
        kex_key      BLOB NOT NULL UNIQUE,
        attestation  TEXT NOT NULL,
        enrolled_at  INTEGER NOT NULL,
        enrolled_by  TEXT NOT NULL
    ) STRICT;
    ALTER TABLE secrets ADD COLUMN tier TEXT NOT NULL DEFAULT 'standard';
    ALTER TABLE secrets ADD COLUMN approvals TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE secrets ADD COLUMN custody TEXT;
    CREATE TABLE sealed_shares (
        path      TEXT NOT NULL,
        version   INTEGER NOT NULL,
        custodian TEXT NOT NULL,
        envelope  BLOB NOT NULL,
        PRIMARY KEY (path, version, custodian)
    ) STRICT;
    CREATE TABLE requests (
        id            TEXT PRIMARY KEY,
        kind          TEXT NOT NULL,
        path          TEXT NOT NULL,
        version       INTEGER NOT NULL,
        requester     TEXT NOT NULL,
        reason        TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        nonce         BLOB NOT NULL,
        recipient_key BLOB,
        policy        TEXT NOT NULL,
        ttl_seconds   INTEGER NOT NULL,
        status        TEXT NOT NULL,
        collected_at  INTEGER,
        checkout_id   TEXT
    ) STRICT;
    CREATE INDEX requests_status ON requests(status, created_at);
    CREATE TABLE votes (
        request_id TEXT NOT NULL REFERENCES requests(id),
        custodian  TEXT NOT NULL,
        decision   TEXT NOT NULL,
        signature  BLOB NOT NULL,
        share      BLOB,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (request_id, custodian)
    ) STRICT;
    "#,
    // 4: leases end: a checkout is checked in or expired by the reaper,
    // once (`checkout.expire`).
    r#"
    ALTER TABLE checkouts ADD COLUMN expired_at INTEGER;
    CREATE INDEX checkouts_expiring ON checkouts(expires_at)
        WHERE checked_in_at IS NULL AND expired_at IS NULL;
    "#,
    // 5: leases are renewed up to a per-secret maximum (NULL: the
    // configured `limits.max_lease_seconds`), an admin can end one early,
    // with a reason (`checkout.revoke`), and checkouts and requests are
    // bound to the requesting certificate.
    r#"
    ALTER TABLE secrets ADD COLUMN max_lease_seconds INTEGER;
    ALTER TABLE checkouts ADD COLUMN renewals INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE checkouts ADD COLUMN revoked_by TEXT;
    ALTER TABLE checkouts ADD COLUMN revoke_reason TEXT;
    -- A checkout and a request belong to the certificate that made them,
    -- not to every certificate of that name (NULL: made before this).
    ALTER TABLE checkouts ADD COLUMN fingerprint TEXT;
    ALTER TABLE requests ADD COLUMN requester_fingerprint TEXT;
    "#,
    // 6: approval policies on path prefixes (`prefix` ends with `/`): they
    // gate every secret under the prefix, also those written later.
    r#"
    CREATE TABLE prefix_policies (
        prefix    TEXT PRIMARY KEY,
        approvals TEXT NOT NULL,
        set_at    INTEGER NOT NULL,
        set_by    TEXT NOT NULL
    ) STRICT;
    "#,
    // 7: governance requests carry the canonical control-plane change that
    // custodians sign (NULL for every other kind).
    r#"
    ALTER TABLE requests ADD COLUMN change TEXT;
    "#,
    // 8: custodians are removed, not deleted: a removed custodian's name and
    // keys are never enrolled again, and its votes stay readable.
    r#"
    ALTER TABLE custodians ADD COLUMN removed_at INTEGER;
    ALTER TABLE custodians ADD COLUMN removed_by TEXT;
    "#,
    // 9: a renewed certificate records the one it renews; the renewed one
    // is revoked when its successor is first used.
    r#"
    ALTER TABLE principals ADD COLUMN renewed_from TEXT;
    CREATE INDEX principals_renewed_from ON principals(renewed_from) WHERE renewed_from IS NOT NULL;
    "#,
    // 10: access grants. A pam principal checks out (or asks for) only the
    // paths a grant covers: `*` every path, `a/b/` every path under the
    // prefix, `a/b` that path. Default deny; a vault from before grants
    // keeps what its PAM servers could do (a `*` grant for each pam name
    // with an unrevoked certificate), for the admin to narrow.
    r#"
    CREATE TABLE grants (
        principal  TEXT NOT NULL,
        prefix     TEXT NOT NULL,
        granted_at INTEGER NOT NULL,
        granted_by TEXT NOT NULL,
        PRIMARY KEY (principal, prefix)
    ) STRICT;
    INSERT INTO grants (principal, prefix, granted_at, granted_by)
        SELECT DISTINCT name, '*', CAST(strftime('%s', 'now') AS INTEGER), 'schema migration 10'
        FROM principals WHERE role = 'pam' AND revoked = 0;
    "#,
    // 11: a version's value can be destroyed (its ciphertext, wrapped key
    // and custodian shares are erased; the row stays, so the version is
    // never reused and the audit log's version numbers keep their meaning),
    // and a secret deleted (every version destroyed; the row stays as a
    // tombstone with its approvals, so a later write continues the version
    // numbers under the same policy).
    r#"
    ALTER TABLE secret_versions ADD COLUMN destroyed_at INTEGER;
    ALTER TABLE secret_versions ADD COLUMN destroyed_by TEXT;
    ALTER TABLE secrets ADD COLUMN deleted_at INTEGER;
    ALTER TABLE secrets ADD COLUMN deleted_by TEXT;
    "#,
    // 12: rotation. A policy names what changes a secret's value on its
    // target (`policy`, canonical JSON), its triggers (`triggers`, e.g.
    // `checkin,expiry`), its schedule and the connector's own credential
    // (a secret that no principal checks out). A rotation in flight is a
    // row of `rotations`: its state, and once generated the pending value,
    // encrypted for the version it becomes.
    r#"
    CREATE TABLE rotation_policies (
        path             TEXT PRIMARY KEY,
        policy           TEXT NOT NULL,
        triggers         TEXT NOT NULL,
        interval_seconds INTEGER,
        credential       TEXT,
        set_at           INTEGER NOT NULL,
        set_by           TEXT NOT NULL,
        last_rotated_at  INTEGER
    ) STRICT;
    CREATE INDEX rotation_policies_credential ON rotation_policies(credential);
    CREATE TABLE rotations (
        path            TEXT PRIMARY KEY,
        state           TEXT NOT NULL,
        trigger         TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        next_at         INTEGER NOT NULL,
        last_error      TEXT,
        started_at      INTEGER NOT NULL,
        pending_version INTEGER,
        key_version     INTEGER,
        wrapped_dek     BLOB,
        ciphertext      BLOB
    ) STRICT;
    "#,
    // 13: one-time passwords, cron schedules and heartbeats. A checkout
    // of a one-time secret asks whether its current version was ever
    // handed out, in the checkout's own transaction: an index instead of a
    // scan of every checkout. `cron` is a policy's schedule in UTC
    // (canonical text). A heartbeat every `heartbeat_seconds` logs in with
    // the current value: `checked_at` is the last one, `drift_at` when the
    // target first refused the value (NULL: in sync, or not known).
    r#"
    CREATE INDEX checkouts_version ON checkouts(path, version);
    ALTER TABLE rotation_policies ADD COLUMN cron TEXT;
    ALTER TABLE rotation_policies ADD COLUMN heartbeat_seconds INTEGER;
    ALTER TABLE rotation_policies ADD COLUMN checked_at INTEGER;
    ALTER TABLE rotation_policies ADD COLUMN drift_at INTEGER;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}
